//! `POST /replicator/remote/orders`, `/orders/multiple` (CCS) and `/orders/status` (mirrorgate:
//! how the source learns the outcome of what it sent).
//!
//! Authorization: every order's `fromSite` must be a site of the topology (not DELETED), and,
//! when the caller authenticated as a peer (`PeerSite`, see `crate::api::trust`), that very
//! site. Otherwise the whole request is refused with 403 and nothing is stored. A peer asking
//! `/orders/status` learns only about the orders it sent (others are UNKNOWN).

use axum::body::Bytes;
use std::collections::HashSet;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Extension;
use axum::{Json, Router};
use http::StatusCode;

use crate::error::{Error, Result};
use crate::http::peer::PeerSite;
use crate::model::order::{Order, OrderStatus};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/replicator/remote/orders", post(receive_one))
        .route("/replicator/remote/orders/multiple", post(receive_many))
        .route("/replicator/remote/orders/status", post(statuses))
}

/// Most orders accepted in one request.
const MAX_ORDERS: usize = 10_000;

/// The authenticated peer, when the caller is checked (auth on or mTLS).
type Caller = Option<Extension<PeerSite>>;

fn caller_site(caller: &Caller) -> Option<&str> {
    caller
        .as_ref()
        .map(|Extension(PeerSite(site))| site.as_str())
}

async fn receive_one(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response> {
    let order: Order = serde_json::from_slice(&body)?;
    accept(&state, caller_site(&caller), vec![order]).await
}

async fn receive_many(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response> {
    let orders: Vec<Order> = serde_json::from_slice(&body)?;
    if orders.len() > MAX_ORDERS {
        return Err(Error::bad_request(format!(
            "at most {MAX_ORDERS} orders per request"
        )));
    }
    accept(&state, caller_site(&caller), orders).await
}

/// Validates and authorizes every order, stores them durably, and only then answers 201.
async fn accept(
    state: &AppState,
    caller: Option<&str>,
    mut orders: Vec<Order>,
) -> Result<Response> {
    for order in &mut orders {
        order.validate(&state.site_id)?;
    }
    authorize(state, caller, &orders).await?;
    state.meta.receive_orders(&orders).await?;
    for order in &orders {
        state
            .topology
            .invalidate(&order.bucket_name, order.object_name.as_deref());
    }
    state.replication.service.inbox_ready.notify_waiters();
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "received": orders.len() })),
    )
        .into_response())
}

/// 403 unless every order comes from a site of the topology, and from the caller when known.
async fn authorize(state: &AppState, caller: Option<&str>, orders: &[Order]) -> Result<()> {
    let mut known = HashSet::new();
    for order in orders {
        let from = order.from_site.as_str();
        if let Some(caller) = caller {
            if from != caller {
                return Err(Error::forbidden(format!(
                    "order {:?} has fromSite {from:?} but the caller is site {caller:?}: a \
                     site may only send its own orders",
                    order.op_id
                )));
            }
        }
        if !known.contains(from) {
            if !state.topology.is_peer_site(from).await? {
                return Err(Error::forbidden(format!(
                    "order {:?}: fromSite {from:?} is not a site of this site's topology",
                    order.op_id
                )));
            }
            known.insert(from);
        }
    }
    Ok(())
}

async fn statuses(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Vec<OrderStatus>>> {
    let ids: Vec<String> = serde_json::from_slice(&body)?;
    if ids.len() > MAX_ORDERS {
        return Err(Error::bad_request(format!(
            "at most {MAX_ORDERS} order ids per request"
        )));
    }
    Ok(Json(
        state
            .meta
            .order_statuses(&ids, caller_site(&caller))
            .await?,
    ))
}
