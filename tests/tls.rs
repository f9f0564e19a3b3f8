//! Read through the topology over TLS: sites listen on https with certificates of a CA made
//! at test time, trust that CA for their peers, and optionally require client certificates
//! (mutual TLS). A peer whose certificate the CA did not sign is never used.

mod common;
use common::*;

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use reqwest::Response;

const HASH: &str = "x-clonecloudstore-hash";
const TARGET_ID: &str = "x-clonecloudstore-target-id";
const BUCKET: &str = "secure";
/// Replication off: a copy exists only where the test writes it.
const SITE_EXTRA: &str = "[replication]\nenabled = false\n[topology]\npeer_timeout_ms = 3000\n";

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem_path: PathBuf,
}

/// PEM files of a certificate issued by a [`Ca`].
struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem_path = dir.join(format!("{name}.ca.pem"));
        std::fs::write(&pem_path, cert.pem()).unwrap();
        Ca {
            cert,
            key,
            pem_path,
        }
    }

    /// A certificate for 127.0.0.1 and localhost, good for a server and for a client.
    fn issue(&self, dir: &Path, name: &str) -> Issued {
        let sans = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let issued = Issued {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    fn root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.cert.pem().as_bytes()).unwrap()
    }
}

/// The `[tls]` section of a site: its certificate, the CA it trusts, and optionally the
/// client certificate it presents and whether it demands one.
fn tls_config(ca: &Ca, server: &Issued, client_cert: Option<&Issued>, client_auth: bool) -> String {
    let mut s = format!(
        "{SITE_EXTRA}[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\nclient_auth = {client_auth}\n",
        server.cert.display(),
        server.key.display(),
        ca.pem_path.display()
    );
    if let Some(c) = client_cert {
        s += &format!(
            "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            c.cert.display(),
            c.key.display()
        );
    }
    s
}

fn tls_site(id: &str, extra: String) -> Site {
    let site = Site::start(id, &extra);
    assert!(site.url.starts_with("https://"), "{id} listens on https");
    site
}

/// A test client trusting only `ca`, sending the test client id, optionally with a
/// client certificate.
fn https_client(ca: &Ca, identity: Option<&Issued>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-clonecloudstore-client-id", CLIENT.parse().unwrap());
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca.root())
        .default_headers(headers);
    if let Some(id) = identity {
        let mut pem = std::fs::read(&id.cert).unwrap();
        pem.extend(std::fs::read(&id.key).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

async fn register_peer(http: &reqwest::Client, site: &Site, peer: &Site) {
    let topology =
        serde_json::json!({"id": peer.id, "name": peer.id, "uri": peer.url, "status": "UP"});
    let r = http
        .post(site.url("/administration/topologies"))
        .json(&topology)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "register {} at {}", peer.id, site.id);
}

async fn put_bytes(http: &reqwest::Client, site: &Site, key: &str, body: Vec<u8>) {
    let r = http
        .post(site.url(&format!("/cloudclonestore/{BUCKET}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "create bucket at {}", site.id);
    let r = http
        .post(site.url(&format!("/cloudclonestore/{BUCKET}/{key}")))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "put {key} at {}", site.id);
}

async fn get_local(http: &reqwest::Client, site: &Site, key: &str) -> Response {
    let url = site.url(&format!("/replicator/local/buckets/{BUCKET}/{key}"));
    http.get(url).send().await.unwrap()
}

/// Sum of a Prometheus series of `site`, read over https.
async fn metric(http: &reqwest::Client, site: &Site, prefix: &str) -> f64 {
    let text = http
        .get(site.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn reads_through_over_tls_and_refuses_an_untrusted_peer() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, rogue_ca) = (Ca::new(pki.path(), "test"), Ca::new(pki.path(), "rogue"));
    let a = tls_site(
        "site-a",
        tls_config(&ca, &ca.issue(pki.path(), "a"), None, false),
    );
    let c = tls_site(
        "site-c",
        tls_config(&ca, &ca.issue(pki.path(), "c"), None, false),
    );
    let rogue_cert = rogue_ca.issue(pki.path(), "d");
    let d = tls_site("site-d", tls_config(&rogue_ca, &rogue_cert, None, false));
    let http = https_client(&ca, None);
    register_peer(&http, &a, &c).await;
    register_peer(&http, &c, &a).await;
    register_peer(&http, &c, &d).await;

    let body = data(32 << 20, 7);
    put_bytes(&http, &a, "big.bin", body.clone()).await;
    let r = get_local(&http, &c, "big.bin").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[TARGET_ID], "site-a");
    assert_eq!(r.headers()[HASH], ccs_hash(&body).as_str());
    assert_eq!(&r.bytes().await.unwrap()[..], &body[..]);

    // D holds an object, but its certificate is not from the CA C trusts.
    put_bytes(
        &https_client(&rogue_ca, None),
        &d,
        "rogue.bin",
        data(1000, 8),
    )
    .await;
    assert_eq!(get_local(&http, &c, "rogue.bin").await.status(), 404);
    let errors = metric(&http, &c, "mirrorgate_peer_errors_total{peer=\"site-d\"}").await;
    assert!(
        errors >= 1.0,
        "C counted the refused handshake with D as an error"
    );
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "test");
    let a = tls_site(
        "site-a",
        tls_config(&ca, &ca.issue(pki.path(), "a"), None, true),
    );
    let c_cert = ca.issue(pki.path(), "c");
    let with_cert = tls_site("site-c", tls_config(&ca, &c_cert, Some(&c_cert), false));
    let without = tls_site(
        "site-e",
        tls_config(&ca, &ca.issue(pki.path(), "e"), None, false),
    );
    let (http, as_client) = (https_client(&ca, None), ca.issue(pki.path(), "test-client"));
    let http_to_a = https_client(&ca, Some(&as_client));

    assert!(
        http.get(a.url("/healthz")).send().await.is_err(),
        "A refuses a client without a certificate"
    );
    register_peer(&http, &with_cert, &a).await;
    register_peer(&http, &without, &a).await;
    let body = data(100_000, 9);
    put_bytes(&http_to_a, &a, "obj.bin", body.clone()).await;

    let r = get_local(&http, &with_cert, "obj.bin").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[TARGET_ID], "site-a");
    assert_eq!(&r.bytes().await.unwrap()[..], &body[..]);
    assert_eq!(get_local(&http, &without, "obj.bin").await.status(), 404);
}
