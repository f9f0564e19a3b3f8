//! The catalogue as a client sees it from any site: this site's own rows, and for each peer
//! what the peer says of its own copies, asked live (each peer in parallel, with the topology's
//! per-peer timeout). A peer that is DOWN or does not answer in time is represented by what this
//! site learned from replication. Peers answer through `POST /replicator/remote/catalogue/...`,
//! the peer-to-peer surface that orders use too, and only ever about their own copies, so a
//! question never travels further than one hop.

use std::collections::BTreeSet;

use futures::future::join_all;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Catalogue;
use crate::error::{Error, Kind, Result};
use crate::meta::replicas::BadFilter;
use crate::meta::TopologyStatus;
use crate::model::replica::{BadReplica, BadState, Did, Replica};

/// A site a request may concern: this one or a peer of the topology.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteInfo {
    pub id: String,
    pub url: String,
    pub local: bool,
    pub up: bool,
}

impl SiteInfo {
    pub fn new(id: &str, url: &str, local: bool, up: bool) -> Self {
        Self {
            id: id.to_owned(),
            url: url.to_owned(),
            local,
            up,
        }
    }
}

/// This site first, then the peers (DELETED ones aside) by id.
pub async fn sites(state: &Catalogue) -> Result<Vec<SiteInfo>> {
    let mut out = vec![SiteInfo::new(&state.site_id, &state.public_url, true, true)];
    for t in state.meta.list_topologies(None).await? {
        if t.id != state.site_id && t.status != TopologyStatus::Deleted {
            out.push(SiteInfo::new(
                &t.id,
                &t.uri,
                false,
                t.status == TopologyStatus::Up,
            ));
        }
    }
    Ok(out)
}

/// What a site asks a peer about the peer's own copies.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RowsQuery {
    #[serde(default)]
    pub objects: Vec<(String, String)>,
    #[serde(default)]
    pub buckets: Vec<String>,
    /// Every copy the peer holds, a page at a time: at most `limit` rows after `after`.
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub after: Option<(String, String)>,
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Most rows a peer answers in one page of a dump.
pub const DUMP_PAGE: i64 = 5_000;

/// Which declarations a site asks a peer for (the peer's own).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BadQuery {
    pub state: Option<BadState>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: Option<i64>,
}

/// Asks one peer; any failure (down, slow, refusing) is an error the caller falls back from.
async fn ask<T: DeserializeOwned>(
    state: &Catalogue,
    peer: &SiteInfo,
    path: &str,
    body: &impl Serialize,
) -> Result<T> {
    let url = format!("{}{path}", peer.url.trim_end_matches('/'));
    let answer = async {
        let resp = state
            .topology
            .peer_request(reqwest::Method::POST, url)
            .json(body)
            .timeout(state.topology.peer_timeout())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        resp.json::<T>().await.map_err(|e| e.to_string())
    }
    .await;
    answer.map_err(|e| {
        Error::upstream(
            Kind::BadGateway,
            format!("catalogue of site {}: {e}", peer.id),
        )
    })
}

/// The selected peers' own rows, asked in parallel: (peer, answer).
async fn ask_peers<T: DeserializeOwned>(
    state: &Catalogue,
    selected: &[SiteInfo],
    path: &str,
    body: &(impl Serialize + Sync),
) -> Vec<(String, Result<Vec<T>>)> {
    let asked = selected
        .iter()
        .filter(|s| !s.local && s.up)
        .map(|peer| async move { (peer.id.clone(), ask(state, peer, path, body).await) });
    join_all(asked).await
}

/// Replaces the learned rows of each peer that answered by what it said.
fn merge(mut known: Vec<Replica>, answers: Vec<(String, Result<Vec<Replica>>)>) -> Vec<Replica> {
    for (peer, answer) in answers {
        match answer {
            Ok(rows) => {
                known.retain(|r| r.site != peer);
                known.extend(rows.into_iter().filter(|r| r.site == peer));
            }
            Err(e) => tracing::debug!("using learned rows: {e}"),
        }
    }
    known.sort_by(|a, b| (&a.bucket, &a.name, &a.site).cmp(&(&b.bucket, &b.name, &b.site)));
    known
}

/// Every row known for these DIDs: files, and every file of the datasets among them. Peers in
/// `selected` are asked; rows of other sites are what this site knows.
pub async fn replicas(
    state: &Catalogue,
    dids: &[Did],
    selected: &[SiteInfo],
) -> Result<Vec<Replica>> {
    let query = RowsQuery {
        objects: dids
            .iter()
            .map(|d| (d.scope.clone(), d.name.clone()))
            .collect(),
        buckets: dids
            .iter()
            .filter(|d| d.is_dataset())
            .map(|d| d.scope.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let known = state
        .meta
        .replicas_of(&query.objects, &query.buckets, None)
        .await?;
    let answers = ask_peers(
        state,
        selected,
        "/replicator/remote/catalogue/replicas",
        &query,
    )
    .await;
    Ok(merge(known, answers))
}

/// Every copy one site holds: what it says (page by page), or what this site learned.
pub async fn replicas_at(state: &Catalogue, site: &SiteInfo) -> Result<Vec<Replica>> {
    let known = state.meta.replicas_at(&site.id).await?;
    if site.local || !site.up {
        return Ok(known);
    }
    let answer = dump_of(state, site).await;
    Ok(merge(known, vec![(site.id.clone(), answer)]))
}

async fn dump_of(state: &Catalogue, site: &SiteInfo) -> Result<Vec<Replica>> {
    let mut rows: Vec<Replica> = Vec::new();
    loop {
        let query = RowsQuery {
            all: true,
            after: rows.last().map(|r| (r.bucket.clone(), r.name.clone())),
            limit: Some(DUMP_PAGE),
            ..Default::default()
        };
        let page: Vec<Replica> =
            ask(state, site, "/replicator/remote/catalogue/replicas", &query).await?;
        // A short page ends the dump (a longer one: a peer that does not page).
        let done = page.len() as i64 != DUMP_PAGE;
        rows.extend(page);
        if done {
            return Ok(rows);
        }
    }
}

/// Declarations made at the selected sites (each site keeps its own), newest first.
pub async fn bad_replicas(
    state: &Catalogue,
    query: &BadQuery,
    selected: &[SiteInfo],
) -> Result<Vec<BadReplica>> {
    let mut out = Vec::new();
    if selected.iter().any(|s| s.local) {
        let filter = BadFilter {
            state: query.state,
            site: Some(state.site_id.clone()),
            since_ms: query.since_ms,
            until_ms: query.until_ms,
            limit: query.limit,
        };
        out.extend(state.meta.bad_replicas(&filter).await?);
    }
    let answers = ask_peers::<BadReplica>(
        state,
        selected,
        "/replicator/remote/catalogue/bad_replicas",
        query,
    )
    .await;
    for (peer, answer) in answers {
        match answer {
            Ok(rows) => out.extend(rows.into_iter().filter(|r| r.site == peer)),
            Err(e) => tracing::info!("declarations of {peer} left out: {e}"),
        }
    }
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    if let Some(limit) = query.limit {
        out.truncate(limit.max(0) as usize);
    }
    Ok(out)
}
