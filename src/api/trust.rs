//! Who may call the peer and data-plane route groups (applied in `crate::router` with
//! `route_layer`, so each group's trust class is visible where the router is assembled).
//!
//! Peer routes (`/replicator/remote/**`), whenever control-plane auth is on:
//! - an mTLS client certificate (with `[tls] client_auth`) one of whose names (DNS SAN, CN) is
//!   a site id of the topology, or
//! - `Authorization: Bearer <JWT>` verified by the control-plane keys, carrying scope
//!   `mirrorgate::peer` and `sub` = a site id of the topology (not DELETED, not this site).
//!
//! No or an invalid token: 401; a valid token without the peer scope, or for no site of the
//! topology: 403 (CCS envelope). The site is handed to the route as [`PeerSite`]. With auth off
//! nothing is required; a certificate naming a site still yields `PeerSite`.
//!
//! Data-plane routes (`/cloudclonestore/**`, `/replicator/local/**`) with `[auth] data_plane`:
//! any valid token; its `client_id` (else `sub`) claim is the client ([`TokenClient`]), and an
//! `x-clonecloudstore-client-id` header that disagrees is 403. A peer token of a site of the
//! topology relays the client named by the header (a site reading through for its client).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::WWW_AUTHENTICATE;
use http::{Extensions, HeaderMap, HeaderValue};

use crate::error::{Error, Result};
use crate::http::auth::{bearer_token, Auth, Principal, SCOPE_PEER};
use crate::http::common::CLIENT_ID;
use crate::http::peer::{PeerCertNames, PeerSite, TokenClient};
use crate::state::AppState;

/// What the two guards need: the keys, whether each check is on, and the topology.
#[derive(Clone)]
pub struct Trust {
    auth: Arc<Auth>,
    state: AppState,
    /// Peer credentials required (control-plane auth on).
    peers_checked: bool,
    /// Client certificates are verified by the listener (`[tls] client_auth`).
    mtls: bool,
    /// Data-plane tokens required (`[auth] data_plane` with auth on).
    data_plane: bool,
}

impl Trust {
    pub fn new(auth: &Arc<Auth>, state: &AppState) -> Self {
        let config = &state.config;
        let peers_checked = auth.enabled();
        if config.auth.data_plane && !peers_checked {
            tracing::warn!(
                "[auth] data_plane = true has no effect while auth is off ([auth] enabled)"
            );
        }
        Trust {
            auth: auth.clone(),
            state: state.clone(),
            peers_checked,
            mtls: config.tls.client_auth,
            data_plane: config.auth.data_plane && peers_checked,
        }
    }

    /// The first name of the connection's client certificate that is a peer site.
    async fn certified_site(&self, extensions: &Extensions) -> Result<Option<String>> {
        if !self.mtls {
            return Ok(None);
        }
        let Some(PeerCertNames(names)) = extensions.get::<PeerCertNames>() else {
            return Ok(None);
        };
        for name in names {
            if self.state.topology.is_peer_site(name).await? {
                return Ok(Some(name.clone()));
            }
        }
        Ok(None)
    }

    /// The peer a request authenticates as, or the refusal.
    async fn authenticate_peer(&self, parts: (&HeaderMap, &Extensions)) -> Result<Option<String>> {
        let (headers, extensions) = parts;
        if let Some(site) = self.certified_site(extensions).await? {
            return Ok(Some(site));
        }
        if !self.peers_checked {
            return Ok(None);
        }
        let principal = self.verify(headers, "peer routes need")?;
        match self.peer_of(&principal).await? {
            Some(site) => Ok(Some(site)),
            None if !principal.has_any(&[SCOPE_PEER]) => Err(Error::forbidden(format!(
                "the token does not carry scope {SCOPE_PEER}: peer routes are for the sites \
                 of the topology"
            ))),
            None => Err(Error::forbidden(format!(
                "the token's subject {:?} is not a site of this site's topology",
                principal.subject.as_deref().unwrap_or("")
            ))),
        }
    }

    /// The site a peer token speaks for, if it carries the peer scope and names a site of
    /// the topology.
    async fn peer_of(&self, principal: &Principal) -> Result<Option<String>> {
        let Some(sub) = &principal.subject else {
            return Ok(None);
        };
        if principal.has_any(&[SCOPE_PEER]) && self.state.topology.is_peer_site(sub).await? {
            Ok(Some(sub.clone()))
        } else {
            Ok(None)
        }
    }

    /// The client a data-plane request speaks for: None for a peer relaying its client's
    /// header, else the token's client (a disagreeing header is 403).
    async fn authenticate_client(&self, headers: &HeaderMap) -> Result<Option<String>> {
        let principal = self.verify(headers, "with [auth] data_plane = true, data routes need")?;
        if self.peer_of(&principal).await?.is_some() {
            return Ok(None);
        }
        let client = principal.data_plane_client().ok_or_else(|| {
            Error::forbidden("the token names no client (neither a client_id nor a sub claim)")
        })?;
        if let Some(header) = headers.get(&CLIENT_ID) {
            let header = header.to_str().unwrap_or("").trim();
            if header != client {
                return Err(Error::forbidden(format!(
                    "x-clonecloudstore-client-id {header:?} is not the token's client {client:?}"
                )));
            }
        }
        Ok(Some(client.to_owned()))
    }

    /// The verified token of the request, or a 401 that says what was expected.
    fn verify(&self, headers: &HeaderMap, what: &str) -> Result<Principal> {
        bearer_token(headers)
            .and_then(|token| self.auth.verifier().verify(token))
            .map_err(|rejection| {
                Error::unauthorized(format!(
                    "{}: {what} Authorization: Bearer <token>{}",
                    rejection.describe(),
                    if self.mtls && what.starts_with("peer") {
                        " or a client certificate naming a site of the topology"
                    } else {
                        ""
                    }
                ))
            })
    }
}

/// A refusal in the CCS envelope; a 401 also says which scheme is expected.
fn refuse(error: Error) -> Response {
    let unauthorized = error.status() == http::StatusCode::UNAUTHORIZED;
    let mut response = error.into_response();
    if unauthorized {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The peer route group's guard (see the module documentation).
pub async fn peer_guard(State(trust): State<Trust>, mut req: Request, next: Next) -> Response {
    match trust
        .authenticate_peer((req.headers(), req.extensions()))
        .await
    {
        Ok(Some(site)) => {
            req.extensions_mut().insert(PeerSite(site));
            next.run(req).await
        }
        Ok(None) => next.run(req).await,
        Err(error) => refuse(error),
    }
}

/// The data-plane route group's guard (see the module documentation).
pub async fn client_guard(State(trust): State<Trust>, mut req: Request, next: Next) -> Response {
    if !trust.data_plane {
        return next.run(req).await;
    }
    match trust.authenticate_client(req.headers()).await {
        Ok(Some(client)) => {
            req.extensions_mut().insert(TokenClient(client));
            next.run(req).await
        }
        Ok(None) => next.run(req).await,
        Err(error) => refuse(error),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn minted_and_required_peer_scopes_are_the_same() {
        assert_eq!(
            crate::http::auth::SCOPE_PEER,
            crate::engines::topology::SCOPE_PEER
        );
        assert_eq!(
            crate::http::auth::SCOPE_ADMIN,
            crate::engines::topology::SCOPE_ADMIN
        );
    }
}
