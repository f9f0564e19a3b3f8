//! `POST /replicator/remote/orders`, `/orders/multiple` (CCS) and `/orders/status` (mirrorgate:
//! how the source learns the outcome of what it sent).

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http::StatusCode;

use crate::error::{Error, Result};
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

async fn receive_one(State(state): State<AppState>, body: Bytes) -> Result<Response> {
    let order: Order = serde_json::from_slice(&body)?;
    accept(&state, vec![order]).await
}

async fn receive_many(State(state): State<AppState>, body: Bytes) -> Result<Response> {
    let orders: Vec<Order> = serde_json::from_slice(&body)?;
    if orders.len() > MAX_ORDERS {
        return Err(Error::bad_request(format!(
            "at most {MAX_ORDERS} orders per request"
        )));
    }
    accept(&state, orders).await
}

/// Validates every order, stores them durably, and only then answers 201.
async fn accept(state: &AppState, mut orders: Vec<Order>) -> Result<Response> {
    for order in &mut orders {
        order.validate(&state.site_id)?;
    }
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

async fn statuses(State(state): State<AppState>, body: Bytes) -> Result<Json<Vec<OrderStatus>>> {
    let ids: Vec<String> = serde_json::from_slice(&body)?;
    if ids.len() > MAX_ORDERS {
        return Err(Error::bad_request(format!(
            "at most {MAX_ORDERS} order ids per request"
        )));
    }
    Ok(Json(state.meta.order_statuses(&ids).await?))
}
