//! Source side: delivers the outbox to each peer in batches, in order, and asks the peer for the
//! outcome of what it delivered. One sender runs per peer at a time; a peer that fails is backed
//! off as a whole so later orders never overtake earlier ones.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::Replication;
use super::{backoff_ms, ReplicationService, SenderState};
use crate::error::{Error, Kind, Result};
use crate::meta::replication::{now_ms, OutboxRow};
use crate::model::order::OrderStatus;

/// The answer of `POST /orders/multiple`: `{"received": n, "rejected": [...]}`.
#[derive(serde::Deserialize, Default)]
struct MultipleAnswer {
    #[serde(default)]
    rejected: Vec<RejectedOrder>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RejectedOrder {
    op_id: String,
    status: u16,
    #[serde(default)]
    error: String,
}

/// Orders per POST /orders/multiple.
const SEND_BATCH: i64 = 200;
/// Outcomes asked per POST /orders/status.
const STATUS_BATCH: i64 = 500;
/// How soon to ask about an order the peer is still working on.
const CHECK_AFTER_MS: i64 = 100;
const CHECK_AGAIN_MS: i64 = 250;
/// How often the dispatcher looks for work when nothing wakes it.
const TICK: Duration = Duration::from_millis(250);

/// Looks for peers with work and starts a sender for each (unless paused or backing off).
pub async fn dispatch(state: Replication) {
    loop {
        if let Err(e) = dispatch_once(&state).await {
            tracing::warn!("replication dispatcher: {e}");
        }
        tokio::select! {
            _ = state.service.outbox_ready.notified() => {},
            _ = tokio::time::sleep(TICK) => {},
        }
    }
}

async fn dispatch_once(state: &Replication) -> Result<()> {
    let paused = super::effective_pauses(state).await?;
    let down: Vec<String> = state
        .topology
        .replication_peers()
        .await?
        .iter()
        .filter(|p| p.status == crate::meta::TopologyStatus::Down)
        .map(|p| p.id.clone())
        .collect();
    let mut sites = state.meta.outbox_sites().await?;
    for peer in state.topology.replication_peers().await?.iter() {
        publish_backlog(state, &peer.id).await?;
    }
    sites.sort();
    for site in sites {
        // A DOWN peer keeps its orders queued, like a paused one, until it is UP again.
        if paused.get(&site).copied().unwrap_or(false) || down.contains(&site) {
            continue;
        }
        let backoff = backoff_ms(&state.config.replication, 1);
        if let Some(mut turn) = SenderTurn::start(&state.service, &site, backoff) {
            let (state, site) = (state.clone(), site.clone());
            tokio::spawn(async move {
                if let Err(e) = send_cycle(&state, &site).await {
                    turn.failed(e);
                }
            });
        }
    }
    Ok(())
}

/// A peer's sender while it runs. Dropped however the sender ends (done, failed, or
/// panicked), it clears the peer's "running" flag: a sender that panicked used to leave it
/// set, and the peer had no sender again until the process restarted.
struct SenderTurn {
    service: Arc<ReplicationService>,
    site: String,
    /// How long the peer waits after a failure before the next sender.
    backoff_ms: i64,
    failure: Option<String>,
}

impl SenderTurn {
    /// The peer's turn, unless a sender runs for it or it is backing off.
    fn start(service: &Arc<ReplicationService>, site: &str, backoff_ms: i64) -> Option<Self> {
        service.try_start(site).then(|| SenderTurn {
            service: service.clone(),
            site: site.to_owned(),
            backoff_ms,
            failure: None,
        })
    }

    fn failed(&mut self, e: Error) {
        self.failure = Some(e.message);
    }
}

impl Drop for SenderTurn {
    fn drop(&mut self) {
        let failure = match self.failure.take() {
            Some(why) => Some(why),
            None if std::thread::panicking() => Some("the sender panicked".to_owned()),
            None => None,
        };
        self.service
            .finish(&self.site, failure.map(|why| (why, self.backoff_ms)));
    }
}

impl ReplicationService {
    /// The senders' state, also after a panic while it was held (a guard clears it then).
    fn senders(&self) -> std::sync::MutexGuard<'_, HashMap<String, SenderState>> {
        self.senders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks a peer's sender as running unless one runs or the peer is backing off.
    fn try_start(&self, site: &str) -> bool {
        let mut senders = self.senders();
        let s = senders.entry(site.to_owned()).or_default();
        if s.running || s.retry_at_ms > now_ms() {
            return false;
        }
        s.running = true;
        true
    }

    fn finish(&self, site: &str, failure: Option<(String, i64)>) {
        let mut senders = self.senders();
        let s = senders.entry(site.to_owned()).or_default();
        s.running = false;
        if let Some((why, delay_ms)) = failure {
            s.retry_at_ms = now_ms() + delay_ms;
            tracing::info!(peer = site, "replication to peer interrupted: {why}");
        }
    }

    fn back_off(&self, site: &str, delay_ms: i64) {
        let mut senders = self.senders();
        senders.entry(site.to_owned()).or_default().retry_at_ms = now_ms() + delay_ms;
    }
}

/// Sends queued orders and collects outcomes until the peer has nothing due.
/// One node of a site sends a peer's orders at a time (in order): the one holding the peer's
/// outbox lease, renewed per batch; when it dies another node continues after the lease lapses.
async fn send_cycle(state: &Replication, site: &str) -> Result<()> {
    let lease = format!("outbox:{site}");
    loop {
        if !state.meta.lead(&lease).await {
            return Ok(());
        }
        let sent = send_queued(state, site).await?;
        let checked = check_sent(state, site).await?;
        if !sent && !checked {
            return state.meta.release_lease(&lease).await;
        }
    }
}

fn peer_url(uri: &str, path: &str) -> String {
    format!("{}{path}", uri.trim_end_matches('/'))
}

/// Delivers the next batch of queued orders. Returns whether there was anything to send.
async fn send_queued(state: &Replication, site: &str) -> Result<bool> {
    let rows = state
        .meta
        .queued_orders(&state.site_id, site, SEND_BATCH)
        .await?;
    if rows.is_empty() {
        return Ok(false);
    }
    let orders: Vec<_> = rows.iter().map(|r| r.order.clone()).collect();
    let outcome = match state.topology.peer(site).await {
        Ok(peer) => post(
            state,
            &peer.uri,
            "/replicator/remote/orders/multiple",
            &orders,
        )
        .await
        .map(Some),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(resp) => {
            // Orders the peer refused one by one (`rejected`; absent from older peers).
            let answer: MultipleAnswer = match resp {
                Some(resp) => resp.json().await.unwrap_or_default(),
                None => MultipleAnswer::default(),
            };
            let refused: std::collections::HashMap<&str, &RejectedOrder> = answer
                .rejected
                .iter()
                .map(|r| (r.op_id.as_str(), r))
                .collect();
            let mut sent = Vec::with_capacity(rows.len());
            for row in rows {
                match refused.get(row.order.op_id.as_str()) {
                    None => sent.push(row),
                    // CCS 409: the bucket exists there already, what the order asks holds.
                    Some(r) if r.status == StatusCode::CONFLICT.as_u16() => {
                        tracing::info!(peer = site, op_id = %row.order.op_id, "peer has the bucket already: {}", r.error);
                        state.meta.order_completed(&row).await?;
                    }
                    Some(r) => {
                        state
                            .meta
                            .order_failed(
                                &row,
                                row.attempts + 1,
                                &format!("peer refused the order ({}): {}", r.status, r.error),
                            )
                            .await?;
                        count_failures(site, 1);
                    }
                }
            }
            state.meta.mark_sent(&sent, CHECK_AFTER_MS).await?;
            Ok(true)
        }
        Err(e) if e.kind == Kind::BadRequest => {
            // The peer refuses these orders as invalid: retrying cannot help.
            for row in &rows {
                state
                    .meta
                    .order_failed(row, row.attempts + 1, &e.message)
                    .await?;
            }
            count_failures(site, rows.len());
            Ok(true)
        }
        Err(e) => {
            let give_up = super::give_up(&state.config.replication, &e);
            let exhausted = state
                .meta
                .send_failed(&rows, &e.message, |row, attempts| {
                    give_up(row.created, attempts)
                })
                .await?;
            count_failures(site, exhausted.len());
            let attempts = rows.iter().map(|r| r.attempts + 1).max().unwrap_or(1);
            state
                .service
                .back_off(site, backoff_ms(&state.config.replication, attempts));
            tracing::info!(peer = site, attempts, "sending orders failed: {e}");
            Ok(false)
        }
    }
}

/// Asks the peer about delivered orders. Returns whether there was anything to ask.
async fn check_sent(state: &Replication, site: &str) -> Result<bool> {
    let rows = state
        .meta
        .sent_orders_due(&state.site_id, site, STATUS_BATCH)
        .await?;
    if rows.is_empty() {
        return Ok(false);
    }
    let ids: Vec<String> = rows.iter().map(|r| r.order.op_id.clone()).collect();
    let peer = state.topology.peer(site).await?;
    let statuses: Vec<OrderStatus> =
        match post(state, &peer.uri, "/replicator/remote/orders/status", &ids).await {
            Ok(resp) => resp.json().await.map_err(|e| {
                Error::upstream(Kind::BadGateway, format!("status from {site}: {e}"))
            })?,
            Err(e) => {
                // The peer holds these orders durably; ask again once it answers.
                let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
                let delay = backoff_ms(&state.config.replication, 1);
                state.meta.postpone_check(&seqs, delay).await?;
                state.service.back_off(site, delay);
                tracing::info!(peer = site, "asking order outcomes failed: {e}");
                return Ok(false);
            }
        };
    let mut still_running = Vec::new();
    let mut done = Vec::new();
    for (row, status) in rows.iter().zip(statuses) {
        if status.status == "DONE" {
            done.push(row.clone());
            continue;
        }
        apply_outcome(state, site, row, status, &mut still_running).await?;
    }
    completed(state, site, &done).await?;
    state
        .meta
        .postpone_check(&still_running, CHECK_AGAIN_MS)
        .await?;
    Ok(still_running.len() < rows.len())
}

async fn apply_outcome(
    state: &Replication,
    site: &str,
    row: &OutboxRow,
    status: OrderStatus,
    running: &mut Vec<i64>,
) -> Result<()> {
    match status.status.as_str() {
        "DONE" => completed(state, site, std::slice::from_ref(row)).await?,
        "FAILED" => {
            let error = status.error.unwrap_or_else(|| "failed at the peer".into());
            state
                .meta
                .order_failed(
                    row,
                    status.attempts.max(row.attempts),
                    &format!("at {site}: {error}"),
                )
                .await?;
            count_failures(site, 1);
        }
        "UNKNOWN" => state.meta.requeue(row.seq).await?,
        _ => running.push(row.seq),
    }
    Ok(())
}

/// Orders the peer applied: completed in one write, which also records the peer's copies in
/// the catalogue, so a COMPLETED status always means the catalogue knows the copy.
async fn completed(state: &Replication, site: &str, rows: &[OutboxRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    state.meta.orders_completed(rows).await?;
    let bytes: u64 = rows.iter().map(|r| r.order.size.unwrap_or(0)).sum();
    metrics::counter!("mirrorgate_replication_completions_total", "peer" => site.to_owned())
        .increment(rows.len() as u64);
    metrics::counter!("mirrorgate_replication_bytes_total", "peer" => site.to_owned())
        .increment(bytes);
    Ok(())
}

fn count_failures(site: &str, n: usize) {
    if n > 0 {
        metrics::counter!("mirrorgate_replication_failures_total", "peer" => site.to_owned())
            .increment(n as u64);
    }
}

async fn post<T: serde::Serialize>(
    state: &Replication,
    uri: &str,
    path: &str,
    body: &T,
) -> Result<reqwest::Response> {
    let resp = state
        .topology
        .peer_request(reqwest::Method::POST, peer_url(uri, path))
        .json(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| Error::upstream(Kind::BadGateway, format!("peer unreachable: {e}")))?;
    match resp.status() {
        s if s.is_success() => Ok(resp),
        StatusCode::BAD_REQUEST => {
            let text = resp.text().await.unwrap_or_default();
            Err(Error::upstream(
                Kind::BadRequest,
                format!("peer refused the orders: {text}"),
            ))
        }
        // Credentials a peer refuses: an operator may fix them, retrying alone cannot.
        s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => Err(Error::upstream(
            Kind::Forbidden,
            format!("peer answered {s}"),
        )),
        s => Err(Error::upstream(
            Kind::BadGateway,
            format!("peer answered {s}"),
        )),
    }
}

/// Publishes the per-peer backlog gauges.
async fn publish_backlog(state: &Replication, site: &str) -> Result<()> {
    let (totals, oldest) = state.meta.pending_totals(Some(site)).await?;
    let peer = site.to_owned();
    metrics::gauge!("mirrorgate_replication_pending_orders", "peer" => peer.clone())
        .set(totals.count as f64);
    metrics::gauge!("mirrorgate_replication_pending_bytes", "peer" => peer.clone())
        .set(totals.bytes as f64);
    let age = oldest
        .map(|o| (now_ms() - o).max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    metrics::gauge!("mirrorgate_replication_oldest_pending_seconds", "peer" => peer).set(age);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_that_panics_leaves_its_peer_a_sender() {
        let service = Arc::new(ReplicationService::default());
        let turn = SenderTurn::start(&service, "peer", 0).expect("the first turn");
        assert!(
            SenderTurn::start(&service, "peer", 0).is_none(),
            "one sender a peer at a time"
        );
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _turn = turn;
            panic!("a panic in the send path");
        }));
        assert!(panicked.is_err());
        assert!(
            SenderTurn::start(&service, "peer", 0).is_some(),
            "the peer gets a sender again"
        );
    }

    #[test]
    fn a_failed_sender_backs_its_peer_off() {
        let service = Arc::new(ReplicationService::default());
        let mut turn = SenderTurn::start(&service, "peer", 60_000).unwrap();
        turn.failed(Error::upstream(Kind::BadGateway, "refused"));
        drop(turn);
        assert!(
            SenderTurn::start(&service, "peer", 0).is_none(),
            "backing off"
        );
        assert!(SenderTurn::start(&service, "other", 0).is_some());
    }
}
