//! Property tests of the parsers that face the network: bucket, object and metadata-key names,
//! the CCS upload and listing-filter headers, and replication orders as JSON. For any input:
//! no panic, and every rejection is an `Error` whose status is a 4xx. Where a rule is simple
//! enough, acceptance is checked against it too. (The topology administration body is tested
//! inside the crate, next to its parser: `api::admin_props`.)

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use mirrorgate::core::wire::{parse_filter, parse_metadata, parse_upload};
use mirrorgate::error::Error;
use mirrorgate::model::hash;
use mirrorgate::model::names::{check_bucket, check_metadata_key, check_object};
use mirrorgate::model::order::{Action, Order};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn assert_client_error(e: &Error) {
    assert!(
        e.status().is_client_error(),
        "rejection {:?} maps to {}, not a 4xx",
        e.message,
        e.status()
    );
}

fn check<T>(r: &Result<T, Error>) {
    if let Err(e) = r {
        assert_client_error(e);
    }
}

/// Strings mixing the characters names are made of with everything else (non-ASCII, control,
/// separators), of lengths around the limits.
fn name_like(max: usize) -> impl Strategy<Value = String> {
    let chars = prop_oneof![
        6 => proptest::char::ranges(vec!['a'..='z', '0'..='9'].into()),
        2 => proptest::sample::select(vec!['-', '_', '.', '/', 'A', 'Z']),
        1 => any::<char>(),
        1 => proptest::sample::select(vec![' ', '\0', '\n', '%', '\\', 'é', '\u{200b}', '\u{ffff}']),
    ];
    proptest::collection::vec(chars, 0..max).prop_map(|v| v.into_iter().collect())
}

fn bucket_rule(s: &str) -> bool {
    (3..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
}

fn object_rule(s: &str) -> bool {
    (1..=1024).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-'))
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn bucket_names_follow_the_rule(name in prop_oneof![name_like(80), any::<String>()]) {
        let r = check_bucket(&name);
        check(&r);
        prop_assert_eq!(r.is_ok(), bucket_rule(&name), "{:?}", name);
    }

    #[test]
    fn valid_bucket_names_are_accepted(name in "[0-9a-z-]{3,63}") {
        prop_assert!(check_bucket(&name).is_ok());
    }

    #[test]
    fn object_names_follow_the_rule(name in prop_oneof![name_like(1100), any::<String>()]) {
        let r = check_object(&name);
        check(&r);
        prop_assert_eq!(r.is_ok(), object_rule(&name), "{:?}", name);
    }

    #[test]
    fn valid_object_names_are_accepted(name in "[0-9a-zA-Z_./-]{1,1024}") {
        prop_assert!(check_object(&name).is_ok());
    }

    #[test]
    fn metadata_keys_never_panic(key in prop_oneof![name_like(40), any::<String>()]) {
        let r = check_metadata_key(&key);
        check(&r);
        if r.is_ok() {
            prop_assert!(!key.is_empty() && !key.as_bytes()[0].is_ascii_digit());
        }
    }

    #[test]
    fn metadata_header_never_panics(text in prop_oneof![
        any::<String>(),
        metadata_json(),
    ]) {
        let r = parse_metadata(&text);
        check(&r);
        if let Ok(map) = r {
            for key in map.keys() {
                prop_assert!(check_metadata_key(key).is_ok());
            }
        }
    }
}

/// JSON objects of string values (keys valid or not), with some non-string values thrown in.
fn metadata_json() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        4 => any::<String>().prop_map(serde_json::Value::String),
        1 => any::<i64>().prop_map(|n| serde_json::json!(n)),
        1 => Just(serde_json::Value::Null),
        1 => Just(serde_json::json!(["a"])),
    ];
    proptest::collection::btree_map(name_like(12), value, 0..6)
        .prop_map(|m| serde_json::to_string(&m).unwrap())
}

/// A header value: any bytes a header value may hold, or text shaped like what the header
/// expects.
fn header_value(shaped: BoxedStrategy<String>) -> impl Strategy<Value = Option<HeaderValue>> {
    let raw = proptest::collection::vec(any::<u8>(), 0..80)
        .prop_map(|b| HeaderValue::from_bytes(&b).ok());
    let text = shaped.prop_map(|s| HeaderValue::from_str(&s).ok());
    prop_oneof![1 => Just(None), 2 => raw, 3 => text]
}

fn number_text() -> BoxedStrategy<String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_owned()),
        Just(" 42 ".to_owned()),
        "[0-9+-.e ]{0,24}",
    ]
    .boxed()
}

fn time_text() -> BoxedStrategy<String> {
    prop_oneof![
        Just("2024-02-29T12:00:00Z".to_owned()),
        Just("2024-02-30T25:61:61Z".to_owned()),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?",
        "[0-9TZ:+.-]{0,30}",
    ]
    .boxed()
}

fn hash_text() -> BoxedStrategy<String> {
    prop_oneof![
        any::<[u8; 32]>().prop_map(|d| hash::encode(&d)),
        any::<[u8; 32]>().prop_map(|d| hash::encode(&d).to_ascii_uppercase()),
        "[0-9a-zA-Z]{50,54}",
        "[0-9a-v]{52}",
    ]
    .boxed()
}

fn headers_from(pairs: Vec<(&'static str, Option<HeaderValue>)>) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        if let Some(v) = value {
            h.append(HeaderName::from_static(name), v);
        }
    }
    h
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn upload_headers_never_panic(
        size in header_value(number_text()),
        hash_value in header_value(hash_text()),
        metadata in header_value(metadata_json().boxed()),
        expires in header_value(time_text()),
        encoding in header_value(prop_oneof![
            Just("zstd".to_owned()), Just("ZSTD".to_owned()), Just("identity".to_owned()),
            Just("gzip".to_owned()), ".{0,10}",
        ].boxed()),
    ) {
        let h = headers_from(vec![
            ("x-clonecloudstore-size", size),
            ("x-clonecloudstore-hash", hash_value),
            ("x-clonecloudstore-metadata", metadata),
            ("x-clonecloudstore-expires", expires),
            ("content-encoding", encoding),
        ]);
        let r = parse_upload(&h);
        check(&r);
        if let Ok(u) = r {
            if let Some(hv) = &u.hash {
                prop_assert_eq!(hv.len(), hash::ENCODED_LEN);
                prop_assert_eq!(hash::normalize(hv), Some(hv.clone()));
            }
        }
    }

    #[test]
    fn filter_headers_never_panic(
        statuses in header_value(prop_oneof![
            Just("READY,UPLOAD".to_owned()),
            Just("[\"READY\",\"DELETED\"]".to_owned()),
            "\\[?[A-Z_,\" ]{0,30}\\]?",
        ].boxed()),
        prefix in header_value(name_like(40).boxed()),
        before in header_value(time_text()),
        after in header_value(time_text()),
        expires_before in header_value(time_text()),
        expires_after in header_value(time_text()),
        size_lt in header_value(number_text()),
        size_gt in header_value(number_text()),
        metadata_eq in header_value(metadata_json().boxed()),
    ) {
        let h = headers_from(vec![
            ("x-clonecloudstore-statuses", statuses),
            ("x-clonecloudstore-nameprefix", prefix),
            ("x-clonecloudstore-creationbefore", before),
            ("x-clonecloudstore-creationafter", after),
            ("x-clonecloudstore-expiresbefore", expires_before),
            ("x-clonecloudstore-expiresafter", expires_after),
            ("x-clonecloudstore-sizelt", size_lt),
            ("x-clonecloudstore-sizegt", size_gt),
            ("x-clonecloudstore-metadataeq", metadata_eq),
        ]);
        check(&parse_filter(&h));
    }
}

const SELF_SITE: &str = "site-b";

/// Parses and validates an order body as the orders route does; every rejection is an Error.
fn receive_order(body: &[u8]) -> Result<Order, Error> {
    let mut order: Order = serde_json::from_slice(body)?;
    order.validate(SELF_SITE)?;
    Ok(order)
}

fn site_text() -> BoxedStrategy<String> {
    prop_oneof![
        Just("site-a".to_owned()),
        Just(SELF_SITE.to_owned()),
        Just(String::new()),
        Just("  ".to_owned()),
        any::<String>(),
    ]
    .boxed()
}

/// Order-shaped JSON whose fields are each valid, invalid, missing or of the wrong type.
fn order_json() -> impl Strategy<Value = serde_json::Value> {
    let text = |s: BoxedStrategy<String>| {
        prop_oneof![
            6 => s.prop_map(serde_json::Value::String),
            1 => Just(serde_json::Value::Null),
            1 => any::<i64>().prop_map(|n| serde_json::json!(n)),
        ]
    };
    let op_id = text(
        prop_oneof![
            Just("op-1".to_owned()),
            Just(String::new()),
            any::<String>()
        ]
        .boxed(),
    );
    let from = text(site_text());
    let to = text(site_text());
    let client =
        text(prop_oneof![Just("c".to_owned()), Just(" ".to_owned()), any::<String>()].boxed());
    let bucket = text(prop_oneof!["[0-9a-z-]{3,12}", name_like(70)].boxed());
    let object = text(prop_oneof!["[0-9a-zA-Z_./-]{1,30}", name_like(40)].boxed());
    let size = prop_oneof![
        any::<u64>().prop_map(|n| serde_json::json!(n)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(1.5)),
        Just(serde_json::json!("12")),
        Just(serde_json::Value::Null),
    ];
    let hash_value = text(hash_text());
    let action = text(
        prop_oneof![
            Just("CREATE".to_owned()),
            Just("UPDATE".to_owned()),
            Just("DELETE".to_owned()),
            Just("UNKNOWN".to_owned()),
            Just("create".to_owned()),
            "[A-Z]{0,8}",
        ]
        .boxed(),
    );
    let present = proptest::collection::vec(proptest::bool::weighted(0.9), 9);
    (
        op_id, from, to, client, bucket, object, size, hash_value, action, present,
    )
        .prop_map(
            |(op_id, from, to, client, bucket, object, size, hash_value, action, present)| {
                let fields = [
                    ("opId", op_id),
                    ("fromSite", from),
                    ("toSite", to),
                    ("clientId", client),
                    ("bucketName", bucket),
                    ("objectName", object),
                    ("size", size),
                    ("hash", hash_value),
                    ("action", action),
                ];
                let mut map = serde_json::Map::new();
                // Each field is there nine times in ten.
                for ((k, v), keep) in fields.into_iter().zip(present) {
                    if keep {
                        map.insert(k.to_owned(), v);
                    }
                }
                serde_json::Value::Object(map)
            },
        )
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn order_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        check(&receive_order(&body));
    }

    #[test]
    fn order_json_never_panics(order in order_json(), extra in proptest::option::of(any::<String>())) {
        let mut value = order;
        if let (Some(extra), serde_json::Value::Object(map)) = (extra, &mut value) {
            map.insert(extra, serde_json::json!(true));
        }
        let body = serde_json::to_vec(&value).unwrap();
        let r = receive_order(&body);
        check(&r);
        if let Ok(o) = r {
            prop_assert_eq!(o.to_site.as_str(), SELF_SITE);
            prop_assert!(o.from_site != SELF_SITE && !o.from_site.trim().is_empty());
            prop_assert!(check_bucket(&o.bucket_name).is_ok());
            if let Some(name) = &o.object_name {
                prop_assert!(check_object(name).is_ok());
                if matches!(o.action, Action::Create | Action::Update) {
                    prop_assert!(o.size.is_some());
                    let h = o.hash.as_deref().unwrap();
                    prop_assert_eq!(hash::normalize(h), Some(h.to_owned()));
                }
            }
            prop_assert!(o.action != Action::Unknown);
        }
    }

    #[test]
    fn order_batches_never_panic(orders in proptest::collection::vec(order_json(), 0..5)) {
        let body = serde_json::to_vec(&orders).unwrap();
        match serde_json::from_slice::<Vec<Order>>(&body) {
            Err(e) => assert_client_error(&Error::from(e)),
            Ok(list) => {
                for mut o in list {
                    check(&o.validate(SELF_SITE));
                }
            }
        }
    }
}

#[test]
fn a_valid_order_passes() {
    let body = serde_json::json!({
        "opId": "op", "fromSite": "site-a", "toSite": SELF_SITE, "clientId": "c",
        "bucketName": "bkt", "objectName": "a/b", "size": 3,
        "hash": hash::of(b"abc").to_ascii_uppercase(), "action": "CREATE",
    });
    let o = receive_order(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(o.hash.unwrap(), hash::of(b"abc"));
    let empty: BTreeMap<String, String> = parse_metadata("{}").unwrap();
    assert!(empty.is_empty());
}
