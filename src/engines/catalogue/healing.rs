//! Self-healing. A BAD declaration of one of this site's copies (from the API, or automatic on
//! a hash mismatch seen while reading or scrubbing) sets it to D and queues its repair as a
//! BAD row. The healer pulls the object from a site holding a good copy (A or T, same hash)
//! through the replication path, verifies it, and only then writes it over the bad bytes:
//! the copy is A again and the declaration RECOVERED. With no good copy anywhere the
//! declaration is LOST (the copy stays D); while some site that may hold one does not answer,
//! the repair is retried with backoff.

use std::time::Duration;

use super::scrub::{verify_stored, Verdict};
use super::view;
use super::Catalogue;
use crate::core::objects;
use crate::engines::replication::backoff_ms;
use crate::error::Result;
use crate::meta::replicas::{Declared, Repair};
use crate::meta::replication::now_ms;
use crate::meta::{Object, Status};
use crate::model::replica::{Did, ReplicaState};

/// Where an automatic declaration comes from.
#[derive(Debug, Clone, Copy)]
pub enum Detected {
    Read,
    Scrub,
    Suspicious,
}

impl Detected {
    fn label(self) -> &'static str {
        match self {
            Detected::Read => "read",
            Detected::Scrub => "scrub",
            Detected::Suspicious => "suspicious",
        }
    }
}

/// Declares this site's copy BAD and wakes the healer.
pub async fn declare_bad(
    state: &Catalogue,
    bucket: &str,
    name: &str,
    reason: &str,
    force: bool,
    source: &'static str,
) -> Result<Declared> {
    let declared = state
        .meta
        .declare_bad(bucket, name, &state.site_id, Some(reason), force)
        .await?;
    if declared == Declared::Declared {
        metrics::counter!("mirrorgate_replicas_declared_bad_total", "source" => source)
            .increment(1);
        tracing::warn!(
            bucket,
            object = name,
            "copy declared BAD ({source}): {reason}"
        );
        state.service.repairs_ready.notify_one();
    }
    Ok(declared)
}

/// A mismatch this site saw in its own copy.
pub async fn declare_detected(
    state: &Catalogue,
    bucket: &str,
    name: &str,
    source: Detected,
    why: &str,
) {
    let reason = format!("{}: {why}", source.label());
    if let Err(e) = declare_bad(state, bucket, name, &reason, false, source.label()).await {
        tracing::error!(bucket, object = name, "declaring a bad copy: {e}");
    }
}

/// For the synchronous mismatch callback of a verified read of the version `hash`. A version
/// replaced while it was read (an UPDATE from a peer) is not a bad copy: the new bytes take
/// the old ones' place a moment before the row names them, so a reader that loaded the row
/// just before sees a mismatch. The copy is declared only if the mismatch is confirmed by a
/// second read, [`CONFIRM_AFTER`] later, of the version still current.
pub fn declare_detected_later(state: &Catalogue, bucket: &str, name: &str, hash: &str, why: &str) {
    let (state, bucket, name, hash, why) = (
        state.clone(),
        bucket.to_owned(),
        name.to_owned(),
        hash.to_owned(),
        why.to_owned(),
    );
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let mut pause = CONFIRM_AFTER;
            for _ in 0..CONFIRM_TRIES {
                tokio::time::sleep(pause).await;
                pause *= 2;
                let current = match state.meta.get_object(&bucket, &name).await {
                    Ok(Some(o))
                        if o.status == Status::Ready && o.hash.as_deref() == Some(&hash) =>
                    {
                        o
                    }
                    Ok(_) => return, // replaced or deleted meanwhile: not a bad copy
                    Err(e) => {
                        tracing::warn!(bucket, object = name, "confirming a mismatch: {e}");
                        continue;
                    }
                };
                match verify_stored(&state, &current, None).await {
                    Ok(Verdict::Good { .. }) => {
                        tracing::info!(
                            bucket,
                            object = name,
                            "a mismatch seen on a read was not confirmed: {why}"
                        );
                        return;
                    }
                    Ok(Verdict::Bad(_)) => {
                        declare_detected(&state, &bucket, &name, Detected::Read, &why).await;
                        return;
                    }
                    // The copy could not be read now: it is asked again, later.
                    Err(e) => tracing::warn!(bucket, object = name, "confirming a mismatch: {e}"),
                }
            }
        });
    }
}

/// How long after a mismatch seen on a read the copy is read again (see
/// [`declare_detected_later`]): long enough for a replace under way to name its new bytes.
const CONFIRM_AFTER: Duration = Duration::from_secs(1);
/// Reads of such a copy tried (after 1, 2, 4, ... s) while the storage fails to answer; the
/// scrubber finds a mismatch left unconfirmed by then.
const CONFIRM_TRIES: u32 = 6;

/// Records a suspicion of this site's copy; once `[rucio] suspicious_threshold` suspicions
/// count, the copy is re-read and declared BAD if it fails. Returns false for an unknown copy.
pub async fn suspect(
    state: &Catalogue,
    bucket: &str,
    name: &str,
    reason: Option<&str>,
) -> Result<bool> {
    let Some(count) = state
        .meta
        .declare_suspicious(bucket, name, &state.site_id, reason)
        .await?
    else {
        return Ok(false);
    };
    if count >= state.config.rucio.suspicious_threshold as i64 {
        let (state, bucket, name) = (state.clone(), bucket.to_owned(), name.to_owned());
        tokio::spawn(async move { reverify(&state, &bucket, &name).await });
    }
    Ok(true)
}

/// A peer that pulled this site's copy of version `hash` (streamed unhashed, the peer
/// verifying) found that it does not match: the suspicion is recorded and the copy re-read
/// now, not waiting for the threshold (the peer saw a mismatch); a copy that fails is declared
/// BAD, which queues its repair. False when this site does not hold that version.
pub async fn reported_by_peer(
    state: &Catalogue,
    bucket: &str,
    name: &str,
    hash: &str,
    reason: &str,
) -> Result<bool> {
    let held = state.meta.get_object(bucket, name).await?;
    if !matches!(&held, Some(o) if o.status == Status::Ready && o.hash.as_deref() == Some(hash)) {
        return Ok(false);
    }
    metrics::counter!("mirrorgate_corruption_reports_received_total").increment(1);
    let reason = format!("a peer could not verify it: {reason}");
    state
        .meta
        .declare_suspicious(bucket, name, &state.site_id, Some(&reason))
        .await?;
    let (state, bucket, name) = (state.clone(), bucket.to_owned(), name.to_owned());
    tokio::spawn(async move { reverify(&state, &bucket, &name).await });
    Ok(true)
}

async fn reverify(state: &Catalogue, bucket: &str, name: &str) {
    let obj = match state.meta.get_object(bucket, name).await {
        Ok(Some(o)) if o.status == Status::Ready => o,
        _ => return,
    };
    match verify_stored(state, &obj, None).await {
        Ok(Verdict::Good { adler32 }) => {
            tracing::info!(bucket, object = name, "suspicious copy re-read: it is good");
            if let Err(e) = state
                .meta
                .replica_verified(bucket, name, &state.site_id, &adler32)
                .await
            {
                tracing::warn!("recording a verification: {e}");
            }
        }
        Ok(Verdict::Bad(why)) => {
            metrics::counter!("mirrorgate_hash_mismatches_total", "source" => "reverify")
                .increment(1);
            declare_detected(state, bucket, name, Detected::Suspicious, &why).await
        }
        Err(e) => tracing::warn!(bucket, object = name, "re-reading a suspicious copy: {e}"),
    }
}

/// Declares a BAD copy good again (`PUT /replicas/` state A): only when its bytes verify.
/// Err carries why it was refused.
pub async fn declare_good(
    state: &Catalogue,
    bucket: &str,
    name: &str,
) -> Result<std::result::Result<(), String>> {
    let obj = match state.meta.get_object(bucket, name).await? {
        Some(o) if o.status == Status::Ready => o,
        _ => return Ok(Err("the object is not stored here".into())),
    };
    match verify_stored(state, &obj, None).await? {
        Verdict::Good { adler32 } => {
            let site = &state.site_id;
            state
                .meta
                .change_replica_state(bucket, name, site, ReplicaState::Available, None)
                .await?;
            state
                .meta
                .replica_verified(bucket, name, site, &adler32)
                .await?;
            Ok(Ok(()))
        }
        Verdict::Bad(why) => Ok(Err(format!("its bytes still do not verify: {why}"))),
    }
}

/// The healer: works through the due repairs of this site's copies, forever.
pub async fn healer(state: Catalogue) {
    let tick = Duration::from_millis(state.config.rucio.background_interval_ms.max(50));
    loop {
        if !state.meta.lead("healer").await {
            tokio::time::sleep(tick).await;
            continue;
        }
        match state.meta.due_repairs(&state.site_id, 16).await {
            Ok(due) if !due.is_empty() => {
                let mut recorded = true;
                for r in &due {
                    recorded &= repair(&state, r).await;
                }
                if recorded {
                    continue;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("healer: {e}"),
        }
        tokio::select! {
            _ = state.service.repairs_ready.notified() => {},
            _ = tokio::time::sleep(tick) => {},
        }
    }
}

/// One repair attempt and its outcome; false when the outcome could not be recorded.
async fn repair(state: &Catalogue, r: &Repair) -> bool {
    let site = state.site_id.clone();
    let outcome = attempt_repair(state, r).await;
    let recorded = match outcome {
        Ok(Outcome::Recovered { from, adler32 }) => {
            metrics::counter!("mirrorgate_repairs_total", "result" => "recovered").increment(1);
            tracing::info!(bucket = %r.bucket, object = %r.name, from = %from, "bad copy repaired");
            state
                .meta
                .repair_succeeded(&r.bucket, &r.name, &site, &adler32)
                .await
        }
        Ok(Outcome::Gone) => state
            .meta
            .close_repairs(
                &r.bucket,
                &r.name,
                &site,
                crate::model::replica::BadState::Deleted,
            )
            .await
            .map(|_| ()),
        Ok(Outcome::Lost) => {
            metrics::counter!("mirrorgate_repairs_total", "result" => "lost").increment(1);
            tracing::error!(bucket = %r.bucket, object = %r.name, "bad copy LOST: no good copy at any site");
            give_up(state, r).await
        }
        Err(why) => {
            metrics::counter!("mirrorgate_repairs_total", "result" => "retry").increment(1);
            let next = now_ms() + backoff_ms(&state.config.replication, r.attempts + 1);
            tracing::info!(bucket = %r.bucket, object = %r.name, attempts = r.attempts + 1, "repair attempt failed: {why}");
            state.meta.repair_postponed(r.id, next, &why).await
        }
    };
    if let Err(e) = &recorded {
        tracing::error!("recording the outcome of a repair: {e}");
    }
    recorded.is_ok()
}

async fn give_up(state: &Catalogue, r: &Repair) -> Result<()> {
    let site = &state.site_id;
    state
        .meta
        .close_repairs(
            &r.bucket,
            &r.name,
            site,
            crate::model::replica::BadState::Lost,
        )
        .await?;
    state
        .meta
        .set_replica_state(
            &r.bucket,
            &r.name,
            site,
            ReplicaState::Bad,
            Some("LOST: no good copy at any site"),
        )
        .await
}

enum Outcome {
    Recovered {
        from: String,
        adler32: String,
    },
    /// The object was deleted meanwhile.
    Gone,
    /// No site holds a good copy.
    Lost,
}

/// One attempt: Err when some site that may hold a good copy could not give it now.
async fn attempt_repair(state: &Catalogue, r: &Repair) -> std::result::Result<Outcome, String> {
    let obj = match state.meta.get_object(&r.bucket, &r.name).await {
        Ok(Some(o)) if o.status == Status::Ready => o,
        Ok(_) => return Ok(Outcome::Gone),
        Err(e) => return Err(e.message),
    };
    let candidates = good_copies(state, &obj).await.map_err(|e| e.message)?;
    if candidates.is_empty() {
        return Ok(Outcome::Lost);
    }
    let mut errors = Vec::new();
    for site in candidates {
        match restore_from(state, &obj, &site).await {
            Ok(adler32) => {
                return Ok(Outcome::Recovered {
                    from: site,
                    adler32,
                })
            }
            Err(e) => errors.push(format!("{site}: {e}")),
        }
    }
    Err(errors.join("; "))
}

/// Sites holding a copy of the same bytes in a good state (AVAILABLE first).
async fn good_copies(state: &Catalogue, obj: &Object) -> Result<Vec<String>> {
    let sites = view::sites(state).await?;
    let did = Did::new(&obj.bucket, &obj.name);
    let mut rows: Vec<_> = view::replicas(state, &[did], &sites)
        .await?
        .into_iter()
        .filter(|r| r.bucket == obj.bucket && r.name == obj.name && r.site != state.site_id)
        .filter(|r| r.state.is_good())
        .filter(|r| r.sha256.is_none() || r.sha256 == obj.hash)
        .filter(|r| sites.iter().any(|s| s.id == r.site))
        .collect();
    rows.sort_by_key(|r| (r.state != ReplicaState::Available, r.site.clone()));
    Ok(rows.into_iter().map(|r| r.site).collect())
}

/// Pulls the object from `site` (verified against its recorded size and hash) over the bad
/// bytes. Returns the adler32 of the restored bytes.
async fn restore_from(
    state: &Catalogue,
    obj: &Object,
    site: &str,
) -> std::result::Result<String, String> {
    let owner = match state.meta.get_bucket(&obj.bucket).await {
        Ok(Some(b)) => b.client_id,
        Ok(None) => return Err("the bucket is gone".into()),
        Err(e) => return Err(e.message),
    };
    let op_id = uuid::Uuid::new_v4().to_string();
    let (_, body) = crate::engines::replication::applier::open_remote(
        &state.replication,
        site,
        &obj.bucket,
        &obj.name,
        &owner,
        &op_id,
        obj.hash.as_deref(),
    )
    .await
    .map_err(|f| f.message().to_owned())?;
    let adler32 = match objects::restore(&state.site, obj, body).await {
        Ok(adler32) => adler32,
        Err(e) => {
            if e.message.contains("mismatch") {
                let hash = obj.hash.as_deref().unwrap_or_default();
                crate::engines::replication::applier::report_corrupt(
                    &state.replication,
                    site,
                    &obj.bucket,
                    &obj.name,
                    hash,
                    &e.message,
                );
            }
            return Err(e.message);
        }
    };
    drop_if_deleted_meanwhile(state, obj).await;
    Ok(adler32)
}

/// A client may have deleted the object while it was being repaired: its bytes must not come
/// back under a deleted name.
async fn drop_if_deleted_meanwhile(state: &Catalogue, obj: &Object) {
    let deleted = match state.meta.get_object(&obj.bucket, &obj.name).await {
        Ok(None) => true,
        Ok(Some(o)) => o.status == Status::Deleted,
        Err(_) => false,
    };
    if deleted {
        if let Err(e) = state.storage.delete(&obj.bucket, &obj.name).await {
            tracing::warn!(bucket = %obj.bucket, object = %obj.name, "removing repaired bytes of a deleted object: {e}");
        }
    }
}
