//! rustls configuration: the https listener (optionally requiring client certificates) and the
//! client used to reach peers (trusting the configured CA, presenting a client certificate).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::config::TlsConfig;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut &pem[..]).collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: no certificate found",
        path.display()
    );
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    rustls_pemfile::private_key(&mut &pem[..])?
        .ok_or_else(|| anyhow::anyhow!("{}: no private key found", path.display()))
}

fn roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    for cert in read_certs(path)? {
        store.add(cert)?;
    }
    Ok(store)
}

/// The acceptor of an https listener, or None for plain http.
pub fn acceptor(tls: &TlsConfig) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) else {
        return Ok(None);
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = if tls.client_auth {
        let ca = tls
            .ca_file
            .as_ref()
            .context("tls.client_auth needs tls.ca_file")?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                .build()?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(read_certs(cert)?, read_key(key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// The pooled keep-alive client used for every call to a peer. `stall`: a read (response
/// head or body) that makes no progress for this long fails, so a peer that accepts and then
/// stalls cannot hang a client's read or a replication worker.
pub fn peer_client(
    tls: &TlsConfig,
    timeout_connect: Duration,
    stall: Duration,
) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(timeout_connect)
        .read_timeout(stall)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true);
    if let Some(ca) = &tls.ca_file {
        builder = builder.tls_built_in_root_certs(false);
        for cert in read_certs(ca)? {
            builder = builder.add_root_certificate(reqwest::Certificate::from_der(&cert)?);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert_file, &tls.client_key_file) {
        let mut pem = std::fs::read(cert)?;
        pem.extend_from_slice(&std::fs::read(key)?);
        builder = builder.identity(reqwest::Identity::from_pem(&pem)?);
    }
    Ok(builder.build()?)
}
