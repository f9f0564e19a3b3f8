//! Control-plane authentication, scopes and per-client rate limits.
//!
//! The data plane (`/cloudclonestore`, `/replicator`, `/healthz`, `/metrics`) keeps the CCS
//! client-id model and needs no token. Every control-plane path needs `Authorization: Bearer
//! <JWT>` (Rucio also takes the token in `X-Rucio-Auth-Token`), whether a route exists for it or
//! not: the check runs on the path before the handler, so an unknown control-plane path answers
//! 401/403 like a known one (and 404 only once authorized).
//!
//! | family | paths | read (GET, HEAD, OPTIONS) | everything else |
//! |---|---|---|---|
//! | DR | `/api/dr/v2/...` | `dr_service::admin`, `dr::support_operator`, `protection::readonly` | `:start_failover_test`, `:stop_failover`: `dr_service::admin`, `dr::support_operator`; other (incl. `:start_failover_prod`): `dr_service::admin` |
//! | administration | `/administration/...` | `mirrorgate::read`, `mirrorgate::admin`, `dr_service::admin` | `mirrorgate::admin`, `dr_service::admin` |
//! | Backbeat | `/_/...` | same | same |
//! | Rucio | `/replicas...`, `/dids...`, `/rses...`, `/auth/validate` (any valid token) | same (also the query POSTs `list`, `dids`, `datasets_bulk`) | same |
//! | Alfresco | `/api/...`, `/alfresco/...` | same | same |
//!
//! Order per request: verify the token, take one token from the caller's bucket (keyed by the
//! token's `sub`, else the peer address), then answer 401, 403 or pass. Each family answers in
//! its own envelope (see `envelope`). `POST /api/2/idp/token` issues tokens (see `token`), and so
//! does Rucio's `GET /auth/userpass` (see `rucio`).

mod envelope;
mod keys;
mod rucio;
mod token;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{FromFnLayer, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use futures::future::BoxFuture;
use http::header::AUTHORIZATION;
use http::{HeaderMap, Method};

pub use keys::{Principal, Rejection, Verifier};
pub use token::TOKEN_PATH;

use crate::config::Config;
use crate::http::common::family_of;
use crate::http::ratelimit::{retry_after_secs, RateLimits};
use envelope::Denial;

/// Read access to the mirrorgate families.
pub const SCOPE_READ: &str = "mirrorgate::read";
/// Full access to the mirrorgate families (implies read).
pub const SCOPE_ADMIN: &str = "mirrorgate::admin";
/// A site calling another site's `/replicator/remote/**` routes (`sub` = its site id).
pub const SCOPE_PEER: &str = "mirrorgate::peer";
/// The Acronis DR administrator; accepted as administrator of every family.
pub const SCOPE_DR_ADMIN: &str = "dr_service::admin";
pub const SCOPE_DR_OPERATOR: &str = "dr::support_operator";
pub const SCOPE_DR_READONLY: &str = "protection::readonly";

const READ: &[&str] = &[SCOPE_READ, SCOPE_ADMIN, SCOPE_DR_ADMIN];
const ADMIN: &[&str] = &[SCOPE_ADMIN, SCOPE_DR_ADMIN];
const DR_READ: &[&str] = &[SCOPE_DR_ADMIN, SCOPE_DR_OPERATOR, SCOPE_DR_READONLY];
const DR_OPERATE: &[&str] = &[SCOPE_DR_ADMIN, SCOPE_DR_OPERATOR];
const DR_ADMIN: &[&str] = &[SCOPE_DR_ADMIN];

/// Rucio's own token header.
const RUCIO_TOKEN: &str = "x-rucio-auth-token";

/// The control-plane API families, each with its own error envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Administration,
    Backbeat,
    Rucio,
    Alfresco,
    Dr,
}

impl Family {
    /// The family a path belongs to; None for the data plane, the token endpoint and unknown
    /// top-level paths.
    pub fn of(path: &str) -> Option<Family> {
        match family_of(path).0 {
            "administration" => Some(Family::Administration),
            // Backbeat's health check is public, as `/healthz` (load balancers probe it).
            "backbeat" if path == "/_/healthcheck" => None,
            "backbeat" => Some(Family::Backbeat),
            "rucio" if path == rucio::USERPASS_PATH => None,
            "rucio" => Some(Family::Rucio),
            "control" if path == TOKEN_PATH => None,
            "control" if path == "/api/dr/v2" || path.starts_with("/api/dr/") => Some(Family::Dr),
            "control" => Some(Family::Alfresco),
            _ => None,
        }
    }
}

/// The scopes of which a token needs one for `method` on `path`.
pub fn required_scopes(family: Family, method: &Method, path: &str) -> &'static [&'static str] {
    let reads = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    match family {
        Family::Dr if reads => DR_READ,
        Family::Dr => dr_action_scopes(path),
        Family::Rucio if reads || rucio_query(method, path) => READ,
        _ if reads => READ,
        _ => ADMIN,
    }
}

/// `POST /servers/{uuid}:<action>` as the seed scopes it; any other DR change needs the admin.
fn dr_action_scopes(path: &str) -> &'static [&'static str] {
    let path = path.replace("%3A", ":").replace("%3a", ":");
    if path.ends_with(":start_failover_test") || path.ends_with(":stop_failover") {
        DR_OPERATE
    } else {
        DR_ADMIN
    }
}

/// Rucio lookups that are POSTs only because their arguments do not fit a URL.
fn rucio_query(method: &Method, path: &str) -> bool {
    *method == Method::POST
        && matches!(
            path.trim_end_matches('/'),
            "/replicas/list" | "/replicas/dids" | "/replicas/datasets_bulk" | "/dids/bulkmeta"
        )
}

/// Everything the auth layer and the token endpoint share.
pub struct Auth {
    enabled: bool,
    verifier: Verifier,
    issuer: token::Issuer,
    limits: RateLimits,
}

impl Auth {
    /// Built once at start-up; logs whether auth is on and why. Key files were already checked
    /// when the config was loaded; should one have become unreadable since, no token verifies.
    pub fn from_config(config: &Config) -> Arc<Auth> {
        let enabled = config.auth_enabled();
        log_decision(config, enabled);
        let verifier = match Verifier::from_config(&config.auth) {
            Ok(v) => v,
            Err(e) if enabled => {
                tracing::error!("{e:#}: every control-plane token will be refused");
                Verifier::refusing_all()
            }
            Err(_) => Verifier::refusing_all(),
        };
        if enabled && config.auth.weak_secret() {
            // Only reachable on a loopback listener: elsewhere the config is refused.
            tracing::warn!(
                "[auth] jwt_secret is short or the example value: use 32 random bytes or more"
            );
        }
        if enabled {
            tracing::info!(
                keys = verifier.key_count(),
                clients = config.auth.clients.len(),
                rate_per_second = config.auth.rate_limit_per_second,
                burst = config.auth.rate_limit_burst,
                "control-plane tokens: keys loaded"
            );
        }
        Arc::new(Auth {
            enabled,
            verifier,
            issuer: token::Issuer::from_config(&config.auth),
            limits: RateLimits::new(
                config.auth.rate_limit_per_second,
                config.auth.rate_limit_burst,
            ),
        })
    }

    /// Whether control-plane auth is on (`Config::auth_enabled`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The trusted keys, for the peer and data-plane checks.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Decides a control-plane request: the principal to hand to the route, or the denial.
    fn decide(&self, family: Family, req: &Request) -> Result<Principal, Denial> {
        let verdict = presented_token(req.headers(), family).and_then(|t| self.verifier.verify(t));
        let limit_key = match &verdict {
            Ok(Principal {
                subject: Some(sub), ..
            }) => format!("sub:{sub}"),
            _ => peer_ip(req).map_or_else(|| "peer:unknown".to_owned(), |ip| format!("ip:{ip}")),
        };
        if let Err(wait) = self.limits.check(&limit_key) {
            let retry_after = retry_after_secs(wait);
            return Err(Denial::TooManyRequests { retry_after });
        }
        let principal = verdict.map_err(Denial::Unauthorized)?;
        let required = required_scopes(family, req.method(), req.uri().path());
        // Rucio's `/auth/validate` describes any valid token, whatever it may do.
        if principal.has_any(required) || req.uri().path() == rucio::VALIDATE_PATH {
            Ok(principal)
        } else {
            Err(Denial::Forbidden { required })
        }
    }
}

fn log_decision(config: &Config, enabled: bool) {
    let listen = &config.site.listen;
    match (config.auth.enabled, enabled) {
        (Some(true), _) => tracing::info!("control-plane auth on ([auth] enabled = true)"),
        (Some(false), _) => tracing::warn!(
            "control-plane auth OFF ([auth] enabled = false): control-plane routes need no token"
        ),
        (None, true) => {
            tracing::info!("control-plane auth on (listener {listen} is not a loopback address)")
        }
        (None, false) => tracing::info!(
            "control-plane auth off: listener {listen} is a loopback address (development); \
             set [auth] enabled = true to require tokens"
        ),
    }
}

/// The `Authorization: Bearer` token of the request.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, Rejection> {
    let value = headers.get(AUTHORIZATION).ok_or(Rejection::Missing)?;
    let value = value.to_str().map_err(|_| Rejection::NotBearer)?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
        _ => Err(Rejection::NotBearer),
    }
}

/// The bearer token of the request (for Rucio also `X-Rucio-Auth-Token`).
fn presented_token(headers: &HeaderMap, family: Family) -> Result<&str, Rejection> {
    if headers.contains_key(AUTHORIZATION) {
        return bearer_token(headers);
    }
    if family == Family::Rucio {
        if let Some(token) = headers.get(RUCIO_TOKEN).and_then(|v| v.to_str().ok()) {
            return Ok(token.trim());
        }
    }
    Err(Rejection::Missing)
}

/// The peer address, when the server recorded it (`ConnectInfo`).
fn peer_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

/// The middleware: checks control-plane requests, lets everything else through untouched.
async fn guard(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let family = match Family::of(req.uri().path()) {
        Some(family) if auth.enabled => family,
        _ => return next.run(req).await,
    };
    match auth.decide(family, &req) {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(denial) => {
            tracing::info!(?family, ?denial, "control-plane request refused");
            envelope::render(family, &denial)
        }
    }
}

type GuardFn = fn(State<Arc<Auth>>, Request, Next) -> BoxFuture<'static, Response>;

/// The layer type, nameable so that `app.rs` can apply it with one line.
pub type AuthLayer = FromFnLayer<GuardFn, Arc<Auth>, (State<Arc<Auth>>, Request)>;

fn boxed_guard(state: State<Arc<Auth>>, req: Request, next: Next) -> BoxFuture<'static, Response> {
    Box::pin(guard(state, req, next))
}

/// The auth middleware, for every route (apply it inside the common-protocol layer so refusals
/// carry the common headers too).
pub fn layer(auth: &Arc<Auth>) -> AuthLayer {
    axum::middleware::from_fn_with_state(auth.clone(), boxed_guard as GuardFn)
}

/// `POST /api/2/idp/token`, and Rucio's `GET /auth/userpass` and `GET /auth/validate`.
pub fn routes<S: Clone + Send + Sync + 'static>(auth: &Arc<Auth>) -> Router<S> {
    Router::new()
        .route(TOKEN_PATH, post(token::issue_token))
        .route(rucio::USERPASS_PATH, get(rucio::userpass))
        .route(rucio::VALIDATE_PATH, get(rucio::validate))
        .with_state(auth.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_by_path() {
        assert_eq!(
            Family::of("/administration/topologies"),
            Some(Family::Administration)
        );
        assert_eq!(
            Family::of("/_/backbeat/api/crr/status"),
            Some(Family::Backbeat)
        );
        assert_eq!(Family::of("/_/healthcheck"), None);
        assert_eq!(
            Family::of("/_/backbeat/api/monitoring/metrics"),
            Some(Family::Backbeat)
        );
        assert_eq!(Family::of("/replicas/list"), Some(Family::Rucio));
        assert_eq!(Family::of("/dids/b/o/meta"), Some(Family::Rucio));
        assert_eq!(Family::of("/rses/"), Some(Family::Rucio));
        assert_eq!(Family::of("/auth/validate"), Some(Family::Rucio));
        assert_eq!(Family::of("/auth/userpass"), None);
        assert_eq!(Family::of("/api/dr/v2/servers"), Some(Family::Dr));
        assert_eq!(
            Family::of("/api/replication-definitions"),
            Some(Family::Alfresco)
        );
        assert_eq!(
            Family::of("/alfresco/service/api/running-actions"),
            Some(Family::Alfresco)
        );
        assert_eq!(Family::of(TOKEN_PATH), None);
        assert_eq!(Family::of("/cloudclonestore/b/o"), None);
        assert_eq!(Family::of("/replicator/remote/orders"), None);
        assert_eq!(Family::of("/healthz"), None);
        assert_eq!(Family::of("/metrics"), None);
    }

    #[test]
    fn dr_scopes_follow_the_seed() {
        let post = Method::POST;
        let s = "/api/dr/v2/servers/1f10";
        assert_eq!(
            required_scopes(Family::Dr, &Method::GET, "/api/dr/v2/sites"),
            DR_READ
        );
        let prod = format!("{s}:start_failover_prod");
        assert_eq!(required_scopes(Family::Dr, &post, &prod), DR_ADMIN);
        let test = format!("{s}:start_failover_test");
        assert_eq!(required_scopes(Family::Dr, &post, &test), DR_OPERATE);
        let stop = format!("{s}%3Astop_failover");
        assert_eq!(required_scopes(Family::Dr, &post, &stop), DR_OPERATE);
    }

    #[test]
    fn other_families_read_and_admin() {
        let path = "/administration/topologies";
        assert_eq!(
            required_scopes(Family::Administration, &Method::GET, path),
            READ
        );
        assert_eq!(
            required_scopes(Family::Administration, &Method::DELETE, path),
            ADMIN
        );
        assert_eq!(
            required_scopes(Family::Rucio, &Method::POST, "/replicas/list"),
            READ
        );
        assert_eq!(
            required_scopes(Family::Rucio, &Method::POST, "/replicas/bad"),
            ADMIN
        );
        for declares in ["/replicas/bad/dids", "/replicas/quarantine"] {
            assert_eq!(Family::of(declares), Some(Family::Rucio));
            assert_eq!(
                required_scopes(Family::Rucio, &Method::POST, declares),
                ADMIN
            );
        }
        assert_eq!(
            required_scopes(Family::Rucio, &Method::GET, "/replicas/s/n/datasets_vp"),
            READ
        );
    }

    #[test]
    fn token_from_bearer_or_rucio_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(&h, Family::Rucio), Err(Rejection::Missing));
        h.insert(RUCIO_TOKEN, "abc".parse().unwrap());
        assert_eq!(presented_token(&h, Family::Rucio), Ok("abc"));
        assert_eq!(presented_token(&h, Family::Dr), Err(Rejection::Missing));
        h.insert(AUTHORIZATION, "bearer xyz".parse().unwrap());
        assert_eq!(presented_token(&h, Family::Dr), Ok("xyz"));
        h.insert(AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(presented_token(&h, Family::Dr), Err(Rejection::NotBearer));
    }
}
