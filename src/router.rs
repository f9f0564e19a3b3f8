//! The router: every API family in one place, each route group with its trust class.
//!
//! | class    | who                          | how it is checked                          |
//! |----------|------------------------------|--------------------------------------------|
//! | public   | anyone                       | nothing (`/healthz`, `/metrics`, token,    |
//! |          |                              | the static `/console` page)                |
//! | client   | storage nodes (data plane)   | `x-clonecloudstore-client-id` (CCS model); |
//! |          |                              | with `[auth] data_plane`: a bearer token   |
//! |          |                              | naming the client (`api::trust`)           |
//! | peer     | another site                 | auth on: a `mirrorgate::peer` token (sub = |
//! |          |                              | site id) or an mTLS certificate naming the |
//! |          |                              | site (`api::trust`)                        |
//! | operator | scoped bearer tokens         | `crate::http::auth` per family scope       |

use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::Router;

use crate::api;
use crate::http;
use crate::state::AppState;

pub fn router(state: &AppState) -> Router {
    let auth = http::auth::Auth::from_config(&state.config);
    let trust = api::trust::Trust::new(&auth, state);
    let public = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(http::metrics::render))
        .merge(api::console::routes())
        .merge(http::auth::routes(&auth));
    let client = Router::new()
        .merge(api::ccs::accessor::routes())
        .merge(api::ccs::replicator::local_routes())
        .route_layer(from_fn_with_state(trust.clone(), api::trust::client_guard));
    // peer: reads of this site's copies (objects, block hashes), corruption reports, orders,
    // catalogue.
    let peer = Router::new()
        .merge(api::ccs::replicator::remote_routes())
        .merge(api::ccs::orders::routes())
        .merge(api::ccs::catalogue::routes())
        .route_layer(from_fn_with_state(trust, api::trust::peer_guard));
    let operator = Router::new()
        .merge(api::admin::routes())
        .merge(api::backbeat::routes())
        .merge(api::rucio::routes())
        .merge(api::alfresco::routes())
        .merge(api::dr::routes())
        .merge(api::status::routes());
    Router::new()
        .merge(public)
        .merge(client)
        .merge(peer)
        .merge(operator)
        .fallback(http::common::no_route)
        .layer(http::auth::layer(&auth))
        .layer(axum::middleware::from_fn(http::common::common_protocol))
        .with_state(state.clone())
}
