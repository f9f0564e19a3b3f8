//! Calling peers with this site's credential. Every request to another site is built here:
//! [`TopologyService::peer_request`] attaches `Authorization: Bearer <JWT>`, a token this site
//! mints itself (HS256 with `[auth] jwt_secret`, `sub` = its site id, scope `mirrorgate::peer`,
//! five minutes, re-minted a minute before it expires). Without a secret (auth off, or only
//! foreign keys configured) nothing is attached: peers then rely on mTLS client certificates.

use std::collections::HashMap;
use std::sync::Mutex;

use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
use reqwest::{IntoUrl, Method, RequestBuilder};
use serde::Serialize;

use super::TopologyService;
use crate::config::Config;
use crate::error::Result;
use crate::meta::TopologyStatus;

/// What a peer token grants: the `/replicator/remote/**` routes, as the site named by `sub`.
pub const SCOPE_PEER: &str = "mirrorgate::peer";
/// The administration scope, minted only for the DR engine's topology update at peers.
pub const SCOPE_ADMIN: &str = "mirrorgate::admin";

/// Lifetime of a minted token.
const LIFETIME_SECS: u64 = 300;
/// A cached token is replaced when less than this is left of it.
const RENEW_BEFORE_SECS: u64 = 60;

#[derive(Serialize)]
struct PeerClaims<'a> {
    sub: &'a str,
    scope: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// This site's signing key and the tokens minted with it, one per scope.
pub struct Credentials {
    site_id: String,
    key: Option<EncodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    minted: Mutex<HashMap<&'static str, (String, u64)>>,
}

impl Credentials {
    /// Mints only when auth is on and `[auth] jwt_secret` is set.
    pub fn from_config(config: &Config) -> Self {
        let key = match &config.auth.jwt_secret {
            Some(secret) if config.auth_enabled() => {
                Some(EncodingKey::from_secret(secret.as_bytes()))
            }
            _ => None,
        };
        if config.auth_enabled() && key.is_none() {
            tracing::info!(
                "no [auth] jwt_secret: this site cannot mint peer tokens; peers must accept its \
                 mTLS client certificate ([tls] client_cert_file naming this site's id)"
            );
        }
        Self {
            site_id: config.site.id.clone(),
            key,
            issuer: config.auth.issuer.clone(),
            audience: config.auth.audience.clone(),
            minted: Mutex::new(HashMap::new()),
        }
    }

    /// Nothing to present (auth off).
    pub fn none() -> Self {
        Self {
            site_id: String::new(),
            key: None,
            issuer: None,
            audience: None,
            minted: Mutex::new(HashMap::new()),
        }
    }

    /// A token of this site with `scope`, cached until a minute before it expires.
    pub fn token(&self, scope: &'static str) -> Option<String> {
        let key = self.key.as_ref()?;
        let now = get_current_timestamp();
        let mut minted = self.minted.lock().expect("token cache lock");
        if let Some((token, exp)) = minted.get(scope) {
            if *exp > now + RENEW_BEFORE_SECS {
                return Some(token.clone());
            }
        }
        let claims = PeerClaims {
            sub: &self.site_id,
            scope,
            iat: now,
            exp: now + LIFETIME_SECS,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        match encode(&Header::default(), &claims, key) {
            Ok(token) => {
                minted.insert(scope, (token.clone(), claims.exp));
                Some(token)
            }
            Err(e) => {
                tracing::error!("cannot sign a {scope} token: {e}");
                None
            }
        }
    }
}

/// [`TopologyService::client`]: the pooled client, every request of which carries the peer
/// credential.
pub struct PeerClient<'a>(&'a TopologyService);

impl PeerClient<'_> {
    pub fn request(&self, method: Method, url: impl IntoUrl) -> RequestBuilder {
        self.0.peer_request(method, url)
    }
    pub fn get(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::GET, url)
    }
    pub fn head(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::HEAD, url)
    }
    pub fn post(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::POST, url)
    }
    pub fn put(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::PUT, url)
    }
    pub fn delete(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::DELETE, url)
    }
}

impl TopologyService {
    /// Installs this site's credentials (done once, when the state is built).
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// A request to a peer carrying this site's `mirrorgate::peer` token (when it can mint one).
    /// Every call to another site's `/replicator/remote/**` goes through here.
    pub fn peer_request(&self, method: Method, url: impl IntoUrl) -> RequestBuilder {
        self.request_with_scope(method, url, SCOPE_PEER)
    }

    /// A request to a peer carrying a token of this site with `scope` (least privilege: the
    /// administration scope only for the one call that needs it).
    pub fn request_with_scope(
        &self,
        method: Method,
        url: impl IntoUrl,
        scope: &'static str,
    ) -> RequestBuilder {
        let request = self.client.request(method, url);
        match self.credentials.token(scope) {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// A request to a peer on behalf of the caller, who brings their own credential (Rucio
    /// forwards the operator's token): this site's token is not attached.
    pub fn forward_request(&self, method: Method, url: impl IntoUrl) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// The pooled peer client; every request built with it carries the peer token, as with
    /// [`TopologyService::peer_request`].
    pub fn client(&self) -> PeerClient<'_> {
        PeerClient(self)
    }

    /// Whether `id` is a site of the topology other than this one and not DELETED: who may
    /// authenticate as a peer and send orders. Read from the cached peer list, then from the
    /// metadata store (a site another node of this site just added).
    pub async fn is_peer_site(&self, id: &str) -> Result<bool> {
        if id == self.self_id {
            return Ok(false);
        }
        let peers = self.all_peers().await?;
        if let Some(t) = peers.iter().find(|t| t.id == id) {
            return Ok(t.status != TopologyStatus::Deleted);
        }
        Ok(self
            .meta
            .get_topology(id)
            .await?
            .is_some_and(|t| t.status != TopologyStatus::Deleted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    #[test]
    fn tokens_are_minted_once_per_scope_and_only_with_auth_on() {
        let c = Credentials::from_config(&config(
            "[site]\nid = \"site-b\"\n[auth]\nenabled = true\njwt_secret = \"s\"\n",
        ));
        let peer = c.token(SCOPE_PEER).unwrap();
        assert_eq!(c.token(SCOPE_PEER).unwrap(), peer, "cached");
        let admin = c.token(SCOPE_ADMIN).unwrap();
        assert_ne!(admin, peer);
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.validate_exp = true;
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &peer,
            &jsonwebtoken::DecodingKey::from_secret(b"s"),
            &v,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "site-b");
        assert_eq!(data.claims["scope"], SCOPE_PEER);
        let (iat, exp) = (
            data.claims["iat"].as_u64().unwrap(),
            data.claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, LIFETIME_SECS);

        let off = Credentials::from_config(&config("[auth]\njwt_secret = \"s\"\n"));
        assert!(
            off.token(SCOPE_PEER).is_none(),
            "loopback default: auth off"
        );
        assert!(Credentials::none().token(SCOPE_PEER).is_none());
    }
}
