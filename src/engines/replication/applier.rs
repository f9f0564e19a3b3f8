//! Receiving side: workers apply the inbox. An object order pulls the bytes from the source
//! (or, if the source cannot serve a good copy, from another site that has one) and stores them
//! through the same path as a client upload, so size and SHA-256 are verified before the
//! replica becomes READY. Transient failures are retried with backoff; permanent ones and
//! exhausted attempts end FAILED, which the source learns when it asks.

use std::time::Duration;

use futures::TryStreamExt;
use http::HeaderMap;
use tracing::Instrument;

use super::backoff_ms;
use super::ranged;
use super::Replication;
use crate::core::objects::{self, Expected};
use crate::core::wire::{parse_metadata, CREATION, EXPIRES, HASH, ID, METADATA, SITE, SIZE};
use crate::core::wire::{CLIENT_ID, OP_ID, VERIFY, VERIFY_BY_RECEIVER};
use crate::engines::topology::{Caller, Target};
use crate::error::{Error, Kind, Result};
use crate::meta::replication::{now_ms, InboxRow};
use crate::meta::{Bucket, Object, Status, Topology, VersionToDelete};
use crate::model::object::parse_time;
use crate::model::order::WriteOrigin;
use crate::model::order::{Action, Order};
use crate::storage::ByteStream;

/// A claim lasts this long and is renewed every quarter of it while the order is worked on,
/// so the order of a worker that died (a panic, a stuck process) is claimable again soon.
const LEASE_MS: i64 = 10_000;
const IDLE: Duration = Duration::from_millis(250);

/// Why an order (or a pull) could not be applied.
pub(crate) enum Failure {
    /// Worth retrying later (peer down, network, busy).
    Transient(String),
    /// Retrying cannot help (forbidden, no good copy anywhere).
    Permanent(String),
}

impl Failure {
    pub(crate) fn message(&self) -> &str {
        match self {
            Failure::Transient(m) | Failure::Permanent(m) => m,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        if e.is_transient() || e.origin == crate::error::Origin::Upstream {
            Failure::Transient(e.message)
        } else {
            Failure::Permanent(e.message)
        }
    }
}

/// Orders one worker applies at once: each pull runs on its own pooled keep-alive
/// connection, and their metadata writes share group commits (see `meta::group`).
pub const ORDERS_PER_WORKER: usize = 4;

/// One worker: claims due orders (several in one write) and applies up to
/// [`ORDERS_PER_WORKER`] of them at once, forever.
pub async fn work(state: Replication, worker: usize) {
    let mut running = tokio::task::JoinSet::new();
    loop {
        let room = ORDERS_PER_WORKER.saturating_sub(running.len());
        if room > 0 {
            match state
                .meta
                .claim_inbox_batch(&state.site_id, LEASE_MS, room as i64)
                .await
            {
                Ok(rows) if !rows.is_empty() => {
                    for row in rows {
                        let state = state.clone();
                        running.spawn(async move { apply_claimed(&state, row).await });
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(worker, "claiming orders: {e}");
                    tokio::time::sleep(IDLE).await;
                    continue;
                }
            }
        }
        tokio::select! {
            Some(_) = running.join_next(), if !running.is_empty() => {},
            _ = state.service.inbox_ready.notified() => {},
            _ = tokio::time::sleep(IDLE) => {},
        }
    }
}

async fn apply_claimed(state: &Replication, row: InboxRow) {
    let span = tracing::info_span!("order", op_id = %row.order.op_id, from = %row.order.from_site);
    // `instrument`, not `span.enter()`: an entered span held across an await corrupts the
    // subscriber's per-thread span stack once the task moves threads, and a later span clone
    // panics ("tried to clone a span that already closed") in whatever task hits it; a
    // peer's sender killed that way never restarted (the campaign's seeds 11, 120, 123).
    apply_and_record(state, row).instrument(span).await
}

async fn apply_and_record(state: &Replication, row: InboxRow) {
    let op_id = row.order.op_id.clone();
    let outcome = with_lease(state, row.seq, apply(state, &row)).await;
    let recorded = match outcome {
        Ok(()) => state.meta.inbox_done(row.seq).await,
        Err(Failure::Permanent(why)) => {
            tracing::warn!("order failed for good: {why}");
            state.meta.inbox_attempt_failed(row.seq, &why, None).await
        }
        Err(Failure::Transient(why)) => {
            // Retried until delivered; only an order past `max_order_age_secs` ends here.
            let attempts = row.attempts + 1;
            let cfg = &state.config.replication;
            let next =
                (!super::too_old(cfg, row.created)).then(|| now_ms() + backoff_ms(cfg, attempts));
            tracing::info!(
                attempts,
                retry = next.is_some(),
                "order attempt failed: {why}"
            );
            state.meta.inbox_attempt_failed(row.seq, &why, next).await
        }
    };
    if let Err(e) = recorded {
        tracing::error!("recording the outcome of order {op_id}: {e}");
    }
}

/// Runs `work` while extending the order's claim, so a long transfer keeps it.
async fn with_lease<F: std::future::Future<Output = std::result::Result<(), Failure>>>(
    state: &Replication,
    seq: i64,
    work: F,
) -> std::result::Result<(), Failure> {
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(Duration::from_millis(LEASE_MS as u64 / 4));
    ticker.tick().await;
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticker.tick() => {
                if let Err(e) = state.meta.extend_claim(seq, LEASE_MS).await {
                    tracing::warn!("extending an order's claim: {e}");
                }
            }
        }
    }
}

async fn apply(state: &Replication, row: &InboxRow) -> std::result::Result<(), Failure> {
    let o = &row.order;
    state
        .topology
        .invalidate(&o.bucket_name, o.object_name.as_deref());
    match (&o.object_name, o.action) {
        (None, Action::Delete) => delete_bucket(state, o).await,
        (None, _) => ensure_bucket(state, o).await.map_err(Failure::from),
        (Some(name), Action::Delete) => delete_object(state, o, name).await,
        (Some(name), _) => {
            let outcome = replicate_object(state, row, name).await;
            if !matches!(outcome, Err(Failure::Transient(_))) {
                // The order ended: nothing staged for its version is needed any more.
                let hash = o.hash.as_deref().unwrap_or_default();
                ranged::Staging::of(state, &o.bucket_name, name, hash)
                    .discard()
                    .await;
            }
            // A pull that stored no copy (failed, superseded) leaves no COPYING row behind.
            crate::core::replicas::copy_ended(&state.site, &o.bucket_name, name).await;
            outcome
        }
    }
}

/// Applies a DELETE order. A version held here other than the one it names is compared with
/// it by creation (an older one goes, a newer one stays: the order is superseded); an order
/// without a creation (an older peer) deletes only its own version, else it is refused.
async fn delete_object(
    state: &Replication,
    o: &Order,
    name: &str,
) -> std::result::Result<(), Failure> {
    let origin = WriteOrigin::Replica {
        from_site: o.from_site.clone(),
    };
    let version = o.hash.as_deref().map(|hash| VersionToDelete {
        hash,
        created: o.version_time,
    });
    let deleted =
        objects::delete_version(&state.site, &o.bucket_name, name, version, &origin).await;
    match deleted {
        // DELETING or UPLOAD here: that operation's outcome decides; ask again later.
        Err(e) if e.kind == Kind::Conflict => return Err(Failure::Transient(e.message)),
        Err(e) if e.kind == Kind::PreconditionFailed => {
            metrics::counter!("mirrorgate_orders_refused_total", "reason" => "version")
                .increment(1);
            return Err(Failure::Permanent(format!("refused: {}", e.message)));
        }
        Err(e) if e.kind == Kind::Gone && version.is_some_and(|v| v.created.is_some()) => {
            metrics::counter!("mirrorgate_orders_superseded_total").increment(1);
            tracing::info!(
                "{}/{name}: delete superseded here: {}",
                o.bucket_name,
                e.message
            );
        }
        other => other.or_else(ignore_missing)?,
    }
    // Whatever was held here (nothing yet, another version), the version is deleted: its
    // CREATE, if it comes later from a third site, must not bring it back.
    if let (Some(hash), Some(created)) = (o.hash.as_deref(), o.version_time) {
        state
            .meta
            .remember_deleted(&o.bucket_name, name, hash, created)
            .await?;
    }
    Ok(())
}

fn ignore_missing(e: Error) -> Result<()> {
    if matches!(e.kind, Kind::NotFound | Kind::Gone) {
        Ok(())
    } else {
        Err(e)
    }
}

/// Creates the bucket for a peer's order (owner: the order's client) unless it exists.
async fn ensure_bucket(state: &Replication, o: &Order) -> Result<()> {
    if let Some(b) = state.meta.get_bucket(&o.bucket_name).await? {
        if b.status == Status::Ready {
            return Ok(());
        }
    }
    let bucket = Bucket {
        id: o.bucket_name.clone(),
        name: o.bucket_name.clone(),
        client_id: o.client_id.clone(),
        site: o.from_site.clone(),
        creation: chrono::Utc::now(),
        expires: None,
        status: Status::Ready,
    };
    state.storage.create_bucket(&bucket.name).await?;
    match state.meta.create_bucket(&bucket, &[]).await {
        Err(e) if e.kind == Kind::Conflict => Ok(()),
        other => other,
    }
}

async fn delete_bucket(state: &Replication, o: &Order) -> std::result::Result<(), Failure> {
    let Some(b) = state.meta.get_bucket(&o.bucket_name).await? else {
        return Ok(());
    };
    if b.status == Status::Deleted {
        return Ok(());
    }
    if state.meta.bucket_has_objects(&o.bucket_name).await? {
        // Its objects' DELETE orders may still be on their way.
        return Err(Failure::Transient(format!(
            "bucket {} is not empty yet",
            o.bucket_name
        )));
    }
    state.meta.delete_bucket(&o.bucket_name, &[]).await?;
    state.storage.delete_bucket(&o.bucket_name).await?;
    Ok(())
}

async fn replicate_object(
    state: &Replication,
    row: &InboxRow,
    name: &str,
) -> std::result::Result<(), Failure> {
    let o = &row.order;
    let want = o.hash.clone().unwrap_or_default();
    if deleted_here(state, o, name).await? {
        return Ok(());
    }
    ensure_bucket(state, o).await?;
    let local = state.meta.get_object(&o.bucket_name, name).await?;
    let mut current = None;
    if let Some(local) = local {
        match local.status {
            Status::Ready if local.hash.as_deref() == Some(want.as_str()) => return Ok(()),
            // Two versions meet: decided by the conflict rule before any byte moves, from the
            // order's creation time. A losing version is not pulled at all (its source may
            // no longer serve it, and no other site would: that used to fail the order).
            Status::Ready if held_version_wins(&local, o, name) => return Ok(()),
            // An UPDATE replaces the copy held here, once the new bytes verified.
            Status::Ready => current = Some(local),
            Status::Upload => {
                return Err(Failure::Transient(format!(
                    "{}/{name} is being written here",
                    o.bucket_name
                )))
            }
            _ => {}
        }
    }
    crate::core::replicas::copying(&state.site, o, name).await;
    let mut last = match pull_from(state, o, name, &o.from_site, current.as_ref()).await {
        Ok(()) => return Ok(()),
        Err(f) => f,
    };
    if source_moved_on(&last) {
        // The source deleted or replaced this version after queueing the order: that later
        // operation's own orders decide the name here. Nothing failed.
        metrics::counter!("mirrorgate_orders_superseded_total").increment(1);
        tracing::info!(
            "{}/{name}: superseded at the source: {}",
            o.bucket_name,
            last.message()
        );
        return Ok(());
    }
    if matches!(last, Failure::Transient(_)) && !source_gone(&last) {
        return Err(last);
    }
    // The source cannot serve a good copy: superseded by a later order, or another site has it.
    if state
        .meta
        .has_later_order(row.seq, &o.bucket_name, Some(name))
        .await?
    {
        return Ok(());
    }
    let target = Target {
        bucket: o.bucket_name.clone(),
        object: Some(name.to_owned()),
    };
    let caller = Caller {
        client_id: &o.client_id,
        op_id: &o.op_id,
    };
    for peer in state
        .topology
        .up_peers()
        .await?
        .iter()
        .filter(|p| p.id != o.from_site)
    {
        if state
            .topology
            .locate(&target, &caller, Some(&peer.id))
            .await
            .ok()
            .flatten()
            .is_some()
        {
            match pull_from(state, o, name, &peer.id, current.as_ref()).await {
                Ok(()) => return Ok(()),
                Err(f) => last = f,
            }
        }
    }
    Err(match last {
        Failure::Permanent(why) | Failure::Transient(why) => {
            Failure::Permanent(format!("no site holds a good copy: {why}"))
        }
    })
}

/// Whether the order's version was deleted here, or is older than a version deleted here (a
/// DELETE from one site overtook the CREATE from another): then it is superseded.
async fn deleted_here(state: &Replication, o: &Order, name: &str) -> Result<bool> {
    let (Some(hash), Some(created)) = (o.hash.as_deref(), o.version_time) else {
        return Ok(false);
    };
    if !state
        .meta
        .deleted_here(&o.bucket_name, name, hash, created)
        .await?
    {
        return Ok(false);
    }
    metrics::counter!("mirrorgate_orders_superseded_total").increment(1);
    tracing::info!(
        "{}/{name}: version {hash} is deleted here already: superseded",
        o.bucket_name
    );
    Ok(true)
}

/// Whether the source answered that it holds no version, or another one, of the name.
fn source_moved_on(f: &Failure) -> bool {
    matches!(f, Failure::Permanent(why) if why.starts_with(MOVED_ON))
}

/// Prefix of the failures that say the source no longer holds the order's version.
const MOVED_ON: &str = "moved on: ";

/// Whether a failure says the source does not (or no longer) hold a good copy.
fn source_gone(f: &Failure) -> bool {
    matches!(f, Failure::Transient(why) if why.contains("integrity"))
}

/// Streams the object from `site` into local storage, verified against the order; over
/// `current` (the version held here) only once the new bytes verified.
async fn pull_from(
    state: &Replication,
    o: &Order,
    name: &str,
    site: &str,
    current: Option<&Object>,
) -> std::result::Result<(), Failure> {
    let bucket = &o.bucket_name;
    // A large object comes by verified ranges into a resumable staging file.
    let (headers, body, staging) = match ranged::pull(state, o, name, site).await? {
        Some((headers, staging, verified)) => {
            let body = match current {
                // A new copy takes the staged file itself (see `objects::store_staged`).
                None => Incoming::Staged(verified),
                Some(_) => Incoming::Stream(staging.stream().await?),
            };
            (headers, body, Some(staging))
        }
        None => {
            let (headers, body) = open_remote(
                state,
                site,
                bucket,
                name,
                &o.client_id,
                &o.op_id,
                o.hash.as_deref(),
            )
            .await?;
            (headers, Incoming::Stream(body), None)
        }
    };
    let obj = replica_object(o, name, &headers);
    if let Some(current) = current {
        if !conflict_winner_is_incoming(current, &obj) {
            if let Some(staging) = &staging {
                staging.discard().await;
            }
            return Ok(());
        }
    }
    let expected = Expected {
        size: o.size,
        hash: o.hash.clone(),
    };
    let origin = WriteOrigin::Replica {
        from_site: o.from_site.clone(),
    };
    let stored = match (current, body, &staging) {
        (None, Incoming::Staged(verified), Some(_)) => {
            objects::store_staged(&state.site, obj, verified, expected, &origin).await
        }
        (Some(current), Incoming::Stream(body), _) => {
            objects::replace(&state.site, current, obj, body, expected, &origin).await
        }
        (None, Incoming::Stream(body), _) => {
            objects::store(&state.site, obj, body, expected, &origin).await
        }
        _ => Err(Error::internal("a staged pull without its staging")),
    };
    // Stored, or the staged bytes did not verify as a whole: either way they are done.
    let staged_done = stored.is_ok()
        || stored
            .as_ref()
            .is_err_and(|e| e.message.contains("mismatch"));
    if let (Some(staging), true) = (&staging, staged_done) {
        staging.discard().await;
    }
    match stored {
        Ok(_) => {
            crate::core::replicas::pulled_from(&state.site, bucket, name, site).await;
            Ok(())
        }
        Err(e)
            if e.message.contains("mismatch") || e.message.contains("larger than the declared") =>
        {
            metrics::counter!("mirrorgate_hash_mismatches_total", "source" => "replication")
                .increment(1);
            report_corrupt(
                state,
                site,
                bucket,
                name,
                o.hash.as_deref().unwrap_or_default(),
                &e.message,
            );
            Err(Failure::Transient(format!(
                "integrity: bytes of {bucket}/{name} from {site} do not match the order: {}",
                e.message
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// The bytes of a pull: a stream, or the verified staging file of a ranged pull.
enum Incoming {
    Stream(ByteStream),
    Staged(objects::VerifiedStaging),
}

/// Opens `bucket/name` at `site` through its remote route (the site's own store), refusing a
/// copy that announces another hash than `hash`. Used by replication and by repairs.
pub(crate) async fn open_remote(
    state: &Replication,
    site: &str,
    bucket: &str,
    name: &str,
    client_id: &str,
    op_id: &str,
    hash: Option<&str>,
) -> std::result::Result<(HeaderMap, ByteStream), Failure> {
    let peer: Topology = state.topology.peer(site).await?;
    let url = format!(
        "{}/replicator/remote/buckets/{bucket}/{name}",
        peer.uri.trim_end_matches('/'),
    );
    let resp = state
        .topology
        .client()
        .get(&url)
        .header(CLIENT_ID, client_id)
        .header(OP_ID, op_id)
        .header(http::header::ACCEPT, "application/octet-stream")
        // This end verifies: the source streams its bytes without hashing them again.
        .header(VERIFY, VERIFY_BY_RECEIVER)
        .send()
        .await
        .map_err(|e| Failure::Transient(format!("site {site} unreachable: {e}")))?;
    // "integrity" makes it a source that cannot serve a good copy (see source_gone): a copy
    // it knows is corrupt (any status), or one already declared bad (404).
    let said = resp
        .headers()
        .get(crate::core::wire::ERROR)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let corrupt = said.starts_with(objects::INTEGRITY_FAILURE);
    match resp.status().as_u16() {
        200 => {}
        403 => {
            return Err(Failure::Permanent(format!(
                "site {site} refuses client {client_id}"
            )))
        }
        s if corrupt => {
            return Err(Failure::Transient(format!(
                "integrity: site {site} answered {s}: {said}"
            )))
        }
        404 | 410 => {
            return Err(Failure::Permanent(format!(
                "{MOVED_ON}site {site} does not hold {bucket}/{name}"
            )))
        }
        s => return Err(Failure::Transient(format!("site {site} answered {s}"))),
    }
    let announced = resp
        .headers()
        .get(HASH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if Some(announced.as_str()) != hash {
        return Err(Failure::Permanent(format!(
            "{MOVED_ON}site {site} holds another version of {bucket}/{name}"
        )));
    }
    let headers = resp.headers().clone();
    let site_owned = site.to_owned();
    let body: ByteStream = Box::pin(resp.bytes_stream().map_err(move |e| {
        Error::upstream(
            Kind::BadGateway,
            format!("stream from site {site_owned} broke: {e}"),
        )
    }));
    Ok((headers, body))
}

/// Tells `site` that the bytes of its copy of version `hash` of `bucket/name`, as received
/// here, did not verify (it streamed them unhashed, see `wire::VERIFY`): it re-reads its copy
/// and declares it BAD if it fails, which queues its repair. Best effort, in the background.
pub fn report_corrupt(
    state: &Replication,
    site: &str,
    bucket: &str,
    name: &str,
    hash: &str,
    why: &str,
) {
    let (state, site) = (state.clone(), site.to_owned());
    let report = serde_json::json!({
        "bucket": bucket, "name": name, "hash": hash, "reason": why,
    });
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let sent = async {
            let peer = state.topology.peer(&site).await?;
            let url = format!("{}/replicator/remote/reports", peer.uri.trim_end_matches('/'));
            let resp = state
                .topology
                .client()
                .post(&url)
                .json(&report)
                .send()
                .await
                .map_err(|e| Error::upstream(Kind::BadGateway, e.to_string()))?;
            Ok::<_, Error>(resp.status())
        };
        match sent.await {
            Ok(status) => {
                metrics::counter!("mirrorgate_corruption_reports_sent_total").increment(1);
                tracing::warn!(peer = %site, %status, "reported a corrupt copy to its holder: {report}");
            }
            Err(e) => tracing::warn!(peer = %site, "could not report a corrupt copy: {e}"),
        }
    });
}

/// The rule for two versions of one name (written at two sites that could not see each
/// other, or met out of order): the later creation wins, then the greater site id. Every site
/// applies it to what it holds, so all end with the same winner. The loser is reported (a
/// warning naming both versions and `mirrorgate_replication_conflicts_total{kept}`), not
/// silently dropped. Whether `incoming` replaces `current`.
fn conflict_winner_is_incoming(current: &Object, incoming: &Object) -> bool {
    let incoming_wins = (incoming.creation, &incoming.site) > (current.creation, &current.site);
    let (kept, lost) = if incoming_wins {
        (incoming, current)
    } else {
        (current, incoming)
    };
    metrics::counter!("mirrorgate_replication_conflicts_total",
        "kept" => if incoming_wins { "incoming" } else { "local" })
    .increment(1);
    tracing::warn!(
        "{}/{}: two versions meet; keeping {:?} (created {} at {}), the version {:?} (created {} at {}) loses",
        current.bucket,
        current.name,
        kept.hash,
        kept.creation,
        kept.site,
        lost.hash,
        lost.creation,
        lost.site
    );
    incoming_wins
}

/// Whether the version held here wins over the order's by the conflict rule, judged from the
/// order alone: its version's creation time. A tie is left to the pull, whose headers name
/// the version's site (the second key of the rule). When the held one wins, the meeting is
/// reported as after a pull.
fn held_version_wins(current: &Object, o: &Order, name: &str) -> bool {
    let Some(created) = o.version_time else {
        return false;
    };
    if created >= current.creation.timestamp_millis() {
        return false;
    }
    let incoming = Object {
        hash: o.hash.clone(),
        creation: crate::model::object::from_millis(created),
        ..replica_object(o, name, &HeaderMap::new())
    };
    !conflict_winner_is_incoming(current, &incoming)
}

/// The replica's metadata: what the source announced (id, site, creation, metadata, expiry).
fn replica_object(o: &Order, name: &str, h: &HeaderMap) -> Object {
    let text = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Object {
        id: text(ID).unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        site: text(SITE).unwrap_or_else(|| o.from_site.clone()),
        bucket: o.bucket_name.clone(),
        name: name.to_owned(),
        hash: o.hash.clone(),
        status: Status::Upload,
        creation: text(CREATION)
            .and_then(|t| parse_time(&t))
            .unwrap_or_else(chrono::Utc::now),
        expires: text(EXPIRES).and_then(|t| parse_time(&t)),
        size: text(SIZE).and_then(|s| s.parse().ok()).unwrap_or(0),
        metadata: text(METADATA)
            .and_then(|m| parse_metadata(&m).ok())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(created_ms: i64, site: &str) -> Object {
        Object {
            id: "held".into(),
            site: site.into(),
            bucket: "b".into(),
            name: "k".into(),
            hash: Some("held-hash".into()),
            status: Status::Ready,
            creation: crate::model::object::from_millis(created_ms),
            expires: None,
            size: 1,
            metadata: Default::default(),
        }
    }

    fn create(from: &str, version_time: Option<i64>) -> Order {
        Order {
            op_id: "op".into(),
            from_site: from.into(),
            to_site: "site-b".into(),
            client_id: "c".into(),
            bucket_name: "b".into(),
            object_name: Some("k".into()),
            size: Some(1),
            hash: Some("incoming-hash".into()),
            action: Action::Create,
            version_time,
        }
    }

    /// Seed 2066: an order of an older version than the one held is decided without a pull;
    /// a newer one, a tie (the rule's second key is the version's site, from the pull's
    /// headers) and an order without a creation (an older peer) go on to the pull.
    #[test]
    fn a_losing_version_is_decided_from_the_order_alone() {
        let current = held(2_000, "site-c");
        assert!(held_version_wins(
            &current,
            &create("site-a", Some(1_000)),
            "k"
        ));
        assert!(!held_version_wins(
            &current,
            &create("site-a", Some(3_000)),
            "k"
        ));
        assert!(!held_version_wins(
            &current,
            &create("site-a", Some(2_000)),
            "k"
        ));
        assert!(!held_version_wins(&current, &create("site-a", None), "k"));
    }
}
