//! `POST /replicator/remote/orders`, `/orders/multiple` (CCS) and `/orders/status` (mirrorgate:
//! how the source learns the outcome of what it sent).
//!
//! Authorization: every order's `fromSite` must be a site of the topology (not DELETED), and,
//! when the caller authenticated as a peer (`PeerSite`, see `crate::api::trust`), that very
//! site. Otherwise the whole request is refused with 403 and nothing is stored. A peer asking
//! `/orders/status` learns only about the orders it sent (others are UNKNOWN).
//!
//! Refusals of one order (CCS): an invalid order is a 400, a bucket `CREATE` of a bucket that
//! exists here a 409. `/orders` answers them as the request's status; `/orders/multiple` stores
//! the valid orders and answers 201 `{"received": n, "rejected": [{"index", "opId", "status",
//! "error"}]}` (in request order).

use axum::body::Bytes;
use std::collections::{HashMap, HashSet};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Extension;
use axum::{Json, Router};
use http::StatusCode;
use serde::Serialize;

use crate::error::{Error, Kind, Result};
use crate::http::peer::PeerSite;
use crate::model::object::Status;
use crate::model::order::{Action, Order, OrderStatus};
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

/// One order `/orders/multiple` did not store, and why.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rejected {
    /// Position of the order in the request (0-based): names an item without a usable `opId`.
    index: usize,
    op_id: String,
    status: u16,
    error: String,
}

impl Rejected {
    fn new(index: usize, op_id: String, e: &Error) -> Self {
        Self {
            index,
            op_id,
            status: e.status().as_u16(),
            error: e.message.clone(),
        }
    }
}

async fn receive_one(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response> {
    let mut order: Order = serde_json::from_slice(&body)?;
    order.validate(&state.site_id)?;
    authorize(&state, caller_site(&caller), std::slice::from_ref(&order)).await?;
    let mut buckets = HashMap::new();
    not_conflicting(&state, &order, &mut buckets).await?;
    store(&state, &[order]).await?;
    Ok(received(1, None))
}

async fn receive_many(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response> {
    let items: Vec<serde_json::Value> = serde_json::from_slice(&body)?;
    if items.len() > MAX_ORDERS {
        return Err(Error::bad_request(format!(
            "at most {MAX_ORDERS} orders per request"
        )));
    }
    let mut rejected = Vec::new();
    let mut valid = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let op_id = item
            .get("opId")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned();
        let parsed = serde_json::from_value::<Order>(item)
            .map_err(|e| Error::bad_request(format!("invalid order {op_id:?}: {e}")))
            .and_then(|mut o| o.validate(&state.site_id).map(|()| o));
        match parsed {
            Ok(order) => valid.push((index, order)),
            Err(e) => rejected.push(Rejected::new(index, op_id, &e)),
        }
    }
    let orders: Vec<Order> = valid.iter().map(|(_, o)| o.clone()).collect();
    authorize(&state, caller_site(&caller), &orders).await?;
    let mut accepted = Vec::with_capacity(valid.len());
    let mut buckets = HashMap::new();
    for (index, order) in valid {
        match not_conflicting(&state, &order, &mut buckets).await {
            Ok(()) => accepted.push(order),
            Err(e) if e.kind == Kind::Conflict => {
                rejected.push(Rejected::new(index, order.op_id.clone(), &e))
            }
            Err(e) => return Err(e),
        }
    }
    rejected.sort_by_key(|r| r.index);
    store(&state, &accepted).await?;
    Ok(received(accepted.len(), Some(rejected)))
}

fn received(n: usize, rejected: Option<Vec<Rejected>>) -> Response {
    let body = match rejected {
        Some(rejected) => serde_json::json!({ "received": n, "rejected": rejected }),
        None => serde_json::json!({ "received": n }),
    };
    (StatusCode::CREATED, Json(body)).into_response()
}

/// 409 for a bucket `CREATE` of a bucket that exists here (CCS "Bucket already exist").
/// Not for an order already received (a re-sent `opId` is accepted again, not applied twice),
/// nor while a bucket order received earlier waits to be applied (the bucket's row does not
/// say yet what the bucket will be). `buckets` follows the bucket orders of the same request,
/// in order (a DELETE then a CREATE of the same bucket is no conflict).
async fn not_conflicting(
    state: &AppState,
    order: &Order,
    buckets: &mut HashMap<String, bool>,
) -> Result<()> {
    if order.object_name.is_some() {
        return Ok(());
    }
    let name = &order.bucket_name;
    let exists = match buckets.get(name) {
        Some(exists) => *exists,
        None => {
            let live = state
                .meta
                .get_bucket(name)
                .await?
                .is_some_and(|b| b.status == Status::Ready);
            live && !state.meta.bucket_order_pending(name).await?
        }
    };
    match order.action {
        Action::Create if exists => {
            let known = state
                .meta
                .order_statuses(std::slice::from_ref(&order.op_id), Some(&order.from_site))
                .await?
                .first()
                .is_some_and(|s| s.status != "UNKNOWN");
            if !known {
                return Err(Error::conflict(format!(
                    "order {:?}: bucket {name} already exists",
                    order.op_id
                )));
            }
        }
        Action::Create => {
            buckets.insert(name.clone(), true);
        }
        Action::Delete => {
            buckets.insert(name.clone(), false);
        }
        _ => {}
    }
    Ok(())
}

/// Stores the orders durably (then they are applied by the inbox workers).
async fn store(state: &AppState, orders: &[Order]) -> Result<()> {
    if orders.is_empty() {
        return Ok(());
    }
    state.meta.receive_orders(orders).await?;
    for order in orders {
        state
            .topology
            .invalidate(&order.bucket_name, order.object_name.as_deref());
    }
    state.replication.service.inbox_ready.notify_waiters();
    Ok(())
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
