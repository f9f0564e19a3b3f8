//! Cache coherence between the nodes of one site (PostgreSQL only). Triggers on the cached
//! tables (`migrations/postgres/0009_nodes.sql`) NOTIFY each change on [`CHANNEL`] in the
//! transaction that makes it, so a notification is sent exactly when the change commits,
//! whichever node or statement made it. Every node LISTENs and hands each payload to
//! [`MetaCache::invalidate`], the cache's one invalidation entry point. A node whose listening
//! connection drops may have missed notifications: it drops its whole cache when it reconnects.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::PgListener;

use super::cache::{Change, MetaCache};

/// The notification channel of cache changes.
pub const CHANNEL: &str = "mirrorgate_cache";

/// Starts listening (the first LISTEN is awaited, so no change committed after the store is
/// open is missed) and keeps doing so in the background while the cache lives.
pub async fn listen(url: &str, cache: &Arc<MetaCache>) -> anyhow::Result<()> {
    let listener = subscribe(url).await?;
    let (url, cache) = (url.to_owned(), Arc::downgrade(cache));
    tokio::spawn(async move { relay(listener, &url, cache).await });
    Ok(())
}

async fn subscribe(url: &str) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn relay(mut listener: PgListener, url: &str, cache: Weak<MetaCache>) {
    loop {
        let next = listener.try_recv().await;
        let Some(live) = cache.upgrade() else { return };
        match next {
            Ok(Some(n)) => live.invalidate(&Change::from_payload(n.payload())),
            // Lost and already reconnected (and listening again): what was sent meanwhile is
            // unknown.
            Ok(None) => {
                tracing::warn!("metadata notifications: reconnected, cache dropped");
                live.invalidate(&Change::All);
            }
            Err(e) => {
                tracing::warn!(error = %e, "metadata notifications lost: reconnecting");
                drop(live);
                match reconnect(url, &cache).await {
                    Some(l) => listener = l,
                    None => return,
                }
            }
        }
    }
}

/// Subscribes again (retrying every second while the cache lives), then drops the cache.
async fn reconnect(url: &str, cache: &Weak<MetaCache>) -> Option<PgListener> {
    loop {
        cache.upgrade()?.invalidate(&Change::All);
        if let Ok(listener) = subscribe(url).await {
            cache.upgrade()?.invalidate(&Change::All);
            return Some(listener);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
