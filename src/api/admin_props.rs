//! Property tests of the topology administration body (`POST|PUT /administration/topologies`):
//! parsed as the handlers parse it (`serde_json::from_slice::<Topology>` then
//! [`check_topology`]). For any input: no panic, and every rejection is an `Error` whose
//! status is a 4xx; what is accepted has an id and an http(s) uri.

use proptest::prelude::*;

use super::admin::check_topology;
use crate::error::Result;
use crate::meta::Topology;

fn parse_topology(body: &[u8]) -> Result<Topology> {
    let t: Topology = serde_json::from_slice(body)?;
    check_topology(&t, "this-site")?;
    Ok(t)
}

fn assert_outcome(r: &Result<Topology>) {
    match r {
        Err(e) => assert!(
            e.status().is_client_error(),
            "rejection {:?} maps to {}",
            e.message,
            e.status()
        ),
        Ok(t) => {
            assert!(!t.id.trim().is_empty());
            let url: reqwest::Url = t.uri.parse().expect("an accepted uri parses");
            assert!(matches!(url.scheme(), "http" | "https"));
        }
    }
}

/// A JSON value of any shape, a few levels deep.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_map(|n| serde_json::json!(n)),
        any::<String>().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn text_or_other(text: BoxedStrategy<String>) -> BoxedStrategy<Option<serde_json::Value>> {
    prop_oneof![
        6 => text.prop_map(|s| Some(serde_json::Value::String(s))),
        1 => Just(None),
        1 => any_json().prop_map(Some),
    ]
    .boxed()
}

/// Topology-shaped objects: each field valid, invalid, missing or of another type.
fn topology_json() -> impl Strategy<Value = serde_json::Value> {
    let id = text_or_other(
        prop_oneof![
            "[a-z0-9-]{1,12}",
            Just(String::new()),
            Just(" ".to_owned()),
            any::<String>()
        ]
        .boxed(),
    );
    let name = text_or_other(any::<String>().boxed());
    let uri = text_or_other(
        prop_oneof![
            "https?://[a-z0-9.-]{1,20}(:[0-9]{1,6})?(/[a-z/]{0,10})?",
            "(ftp|file|unix|HTTP)://[a-z0-9.]{0,12}",
            "[a-z:/.%\\[\\]@ 0-9]{0,30}",
            any::<String>(),
        ]
        .boxed(),
    );
    let uri_key = prop_oneof![Just("uri"), Just("url")];
    let status = text_or_other(
        prop_oneof![
            Just("UP".to_owned()),
            Just("DOWN".to_owned()),
            Just("DELETED".to_owned()),
            Just("UNKNOWN".to_owned()),
            Just("up".to_owned()),
            "[A-Z]{0,8}",
        ]
        .boxed(),
    );
    let extra = proptest::option::weighted(0.2, (".{0,8}", any_json()));
    (id, name, uri, uri_key, status, extra).prop_map(|(id, name, uri, uri_key, status, extra)| {
        let mut map = serde_json::Map::new();
        for (k, v) in [
            ("id", id),
            ("name", name),
            (uri_key, uri),
            ("status", status),
        ] {
            if let Some(v) = v {
                map.insert(k.to_owned(), v);
            }
        }
        if let Some((k, v)) = extra {
            map.insert(k, v);
        }
        serde_json::Value::Object(map)
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn topology_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        assert_outcome(&parse_topology(&body));
    }

    #[test]
    fn topology_json_never_panics(value in prop_oneof![4 => topology_json(), 1 => any_json()]) {
        let body = serde_json::to_vec(&value).unwrap();
        assert_outcome(&parse_topology(&body));
    }
}

#[test]
fn a_valid_topology_passes() {
    let t = parse_topology(br#"{"id":"site-b","url":"http://127.0.0.1:8081"}"#).unwrap();
    assert_eq!(t.uri, "http://127.0.0.1:8081");
    assert!(parse_topology(br#"{"id":"site-b","uri":"ftp://x"}"#).is_err());
}
