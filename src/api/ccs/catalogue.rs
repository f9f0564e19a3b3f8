//! `POST /replicator/remote/catalogue/*`: a peer asks this site about its own copies (the
//! live half of the catalogue view, see `crate::engines::catalogue::view`).

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};

use crate::engines::catalogue::view::{BadQuery, RowsQuery, DUMP_PAGE};
use crate::error::Result;
use crate::meta::replicas::BadFilter;
use crate::model::replica::{BadReplica, Replica};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/replicator/remote/catalogue/replicas", post(own_replicas))
        .route("/replicator/remote/catalogue/bad_replicas", post(own_bad))
}

async fn own_replicas(
    State(state): State<AppState>,
    Json(q): Json<RowsQuery>,
) -> Result<Json<Vec<Replica>>> {
    let rows = if q.all {
        let limit = q.limit.unwrap_or(DUMP_PAGE).clamp(1, DUMP_PAGE);
        state
            .meta
            .replicas_page(&state.site_id, q.after.as_ref(), limit)
            .await?
    } else {
        state
            .meta
            .replicas_of(&q.objects, &q.buckets, Some(&state.site_id))
            .await?
    };
    Ok(Json(rows))
}

async fn own_bad(
    State(state): State<AppState>,
    Json(q): Json<BadQuery>,
) -> Result<Json<Vec<BadReplica>>> {
    let filter = BadFilter {
        state: q.state,
        site: Some(state.site_id.clone()),
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        limit: q.limit,
    };
    Ok(Json(state.meta.bad_replicas(&filter).await?))
}
