//! The router: every API family in one place, each route group with its trust class.
//!
//! | class    | who                          | how it is checked                          |
//! |----------|------------------------------|--------------------------------------------|
//! | public   | anyone                       | nothing (`/healthz`, `/metrics`, token)    |
//! | client   | storage nodes (data plane)   | `x-clonecloudstore-client-id` (CCS model)  |
//! | peer     | another site                 | peer routes (`/replicator/remote/**`)      |
//! | operator | scoped bearer tokens         | `crate::http::auth` per family scope       |

use axum::routing::get;
use axum::Router;

use crate::api;
use crate::http;
use crate::state::AppState;

pub fn router(state: &AppState) -> Router {
    let auth = http::auth::Auth::from_config(&state.config);
    let public = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(http::metrics::render))
        .merge(http::auth::routes(&auth));
    let client = Router::new()
        .merge(api::ccs::accessor::routes())
        .merge(api::ccs::replicator::local_routes());
    let peer = Router::new()
        .merge(api::ccs::replicator::remote_routes())
        .merge(api::ccs::orders::routes())
        .merge(api::ccs::catalogue::routes());
    let operator = Router::new()
        .merge(api::admin::routes())
        .merge(api::backbeat::routes())
        .merge(api::rucio::routes())
        .merge(api::alfresco::routes())
        .merge(api::dr::routes());
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
