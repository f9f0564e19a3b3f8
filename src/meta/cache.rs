//! In-process cache of the rows the read path needs: buckets, grants (rights), objects (with
//! the site a replica was copied from and whether this site's copy is declared BAD) and an
//! object's replication status. Filled on read,
//! negative answers included (no such bucket, no grant, no such object).
//!
//! # Correctness
//!
//! Every write of these rows goes through a [`MetaStore`](super::MetaStore) method, and that
//! method reports what it changed as a [`Change`] to [`MetaCache::invalidate`] once its
//! transaction is over (committed or not). `invalidate` is the cache's ONE invalidation
//! interface: nothing else removes or rewrites entries (eviction only drops them). A second
//! process sharing the database later (PostgreSQL) needs only a listener that turns each
//! `LISTEN/NOTIFY` payload into a [`Change`] (see [`Change::to_payload`] /
//! [`Change::from_payload`]) and calls `invalidate`, plus `invalidate(Change::All)` when the
//! notification connection is lost.
//!
//! A read that misses races with writes: it may read the old row, then a write commits and
//! invalidates, then the read would store the old row. To rule that out, every key belongs to
//! one of [`SLOTS`] epoch counters (by bucket name). A reader takes a [`Ticket`] (the epoch)
//! before its query; `invalidate` bumps the epoch and then removes the entries; the reader
//! stores its answer only if the epoch is unchanged, checked under the map shard's lock. So
//! the answer is either removed by the invalidation or never stored: once a write method has
//! returned, no read in this process answers from a row older than that write.
//!
//! Writers outside this process (`mirrorgate import` against a serving site, a hand-edited
//! database) send no [`Change`]; `ttl` bounds how long the cache can miss them.
//!
//! Memory: at most `max_entries` entries; when full, about a quarter of them (arbitrary ones)
//! are dropped at once.
//!
//! # Hot small bodies
//!
//! Next to the rows, the bytes of small objects read recently (at most `max_body_bytes` in all,
//! each at most `max_body_len`), so that a hot small GET touches neither a file nor the
//! blocking pool nor SHA-256. A body is stored only after it was read from storage and
//! verified against its recorded size and hash, under the same tickets and invalidations as
//! the rows ([`Change::Object`] drops it, [`Change::Bucket`] and [`Change::All`] drop the
//! bucket's or all). It is looked up by object AND expected hash and size, so even a body that
//! outlived its row could only ever be served for identical bytes.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use metrics::{Counter, Gauge};

use crate::model::object::{Bucket, Object};

/// Number of epoch counters (keys are spread over them by bucket name).
pub const SLOTS: usize = 64;

/// What a write changed, as the cache needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// One object: its row and its replication status.
    Object { bucket: String, name: String },
    /// One client's grant on a bucket.
    Rights { client: String, bucket: String },
    /// Every grant on a bucket.
    BucketRights { bucket: String },
    /// A bucket's row and everything cached under it (grants, objects, replication status).
    Bucket { bucket: String },
    /// Anything at all (e.g. a notification channel that lost messages).
    All,
    /// The topology (the peers): no cached row, but whoever lists peers reads them again.
    Topology,
}

impl Change {
    pub fn object(bucket: &str, name: &str) -> Self {
        Change::Object {
            bucket: bucket.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn bucket(bucket: &str) -> Self {
        Change::Bucket {
            bucket: bucket.to_owned(),
        }
    }

    /// A text form for a database notification: a JSON array of a letter (`O`, `R`, `G`, `B`
    /// or `*`) and the names, as the PostgreSQL triggers build it with `json_build_array`
    /// (a notification cannot carry a NUL, and names may contain any other character).
    pub fn to_payload(&self) -> String {
        let parts: Vec<&str> = match self {
            Change::Object { bucket, name } => vec!["O", bucket, name],
            Change::Rights { client, bucket } => vec!["R", client, bucket],
            Change::BucketRights { bucket } => vec!["G", bucket],
            Change::Bucket { bucket } => vec!["B", bucket],
            Change::All => vec!["*"],
            Change::Topology => vec!["T"],
        };
        serde_json::to_string(&parts).unwrap_or_else(|_| "[\"*\"]".into())
    }

    /// Reads [`Change::to_payload`]'s form; anything unreadable is [`Change::All`] (safe).
    pub fn from_payload(text: &str) -> Self {
        let parts: Vec<String> = serde_json::from_str(text).unwrap_or_default();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        match parts.as_slice() {
            ["O", bucket, name] => Change::object(bucket, name),
            ["R", client, bucket] => Change::Rights {
                client: (*client).to_owned(),
                bucket: (*bucket).to_owned(),
            },
            ["G", bucket] => Change::BucketRights {
                bucket: (*bucket).to_owned(),
            },
            ["B", bucket] => Change::bucket(bucket),
            ["T"] => Change::Topology,
            _ => Change::All,
        }
    }

    fn bucket_name(&self) -> Option<&str> {
        match self {
            Change::Object { bucket, .. }
            | Change::Rights { bucket, .. }
            | Change::BucketRights { bucket }
            | Change::Bucket { bucket } => Some(bucket),
            Change::All | Change::Topology => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Bucket,
    Rights,
    Object,
    Replication,
}

/// `bucket` always names the bucket (it picks the epoch slot); `sub` is the client (rights),
/// the object name (object, replication) or empty (bucket).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: Kind,
    bucket: String,
    sub: String,
}

/// An object row as cached: the object, the site it was replicated from, and whether this
/// site's copy is declared BAD (or LOST) in the replica catalogue: such a copy is never
/// advertised nor served. Every change of this site's replica state reports a
/// [`Change::Object`], so the flag is as fresh as the row.
#[derive(Debug, Clone)]
pub struct CachedObject {
    pub object: Object,
    pub replica_of: Option<String>,
    pub bad_here: bool,
}

#[derive(Clone)]
enum Value {
    Bucket(Option<Arc<Bucket>>),
    Rights(i64),
    Object(Option<Arc<CachedObject>>),
    Replication(Arc<BTreeMap<String, String>>),
}

struct Entry {
    value: Value,
    at: Instant,
}

/// Taken before a query whose answer is to be cached (see the module's doc).
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    slot: usize,
    epoch: u64,
}

/// Settings of the cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheOptions {
    /// Entry cap; 0 disables the cache.
    pub max_entries: usize,
    /// How long an entry is trusted; `None`: until invalidated or evicted.
    pub ttl: Option<Duration>,
    /// Most bytes of hot small bodies held in all; 0 keeps no bodies.
    pub max_body_bytes: usize,
    /// Largest body kept.
    pub max_body_len: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            ttl: Some(Duration::from_secs(10)),
            max_body_bytes: 16 << 20,
            max_body_len: 64 << 10,
        }
    }
}

/// A verified body: its SHA-256 (CCS text form) and bytes.
struct Body {
    sha256: String,
    bytes: Bytes,
    at: Instant,
}

pub struct MetaCache {
    map: DashMap<Key, Entry>,
    /// Hot small bodies by (bucket, object name); `body_bytes` is their total length.
    bodies: DashMap<(String, String), Body>,
    body_bytes: AtomicUsize,
    epochs: Box<[AtomicU64]>,
    /// Bumped by each [`Change::Topology`] (and [`Change::All`]): a peer list read under an
    /// older value is stale.
    topology_epoch: AtomicU64,
    options: CacheOptions,
    hits: Counter,
    misses: Counter,
    entries: Gauge,
}

impl MetaCache {
    pub fn new(options: CacheOptions) -> Self {
        Self {
            map: DashMap::new(),
            bodies: DashMap::new(),
            body_bytes: AtomicUsize::new(0),
            epochs: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            topology_epoch: AtomicU64::new(0),
            options,
            hits: metrics::counter!("mirrorgate_meta_cache_hits_total"),
            misses: metrics::counter!("mirrorgate_meta_cache_misses_total"),
            entries: metrics::gauge!("mirrorgate_meta_cache_entries"),
        }
    }

    /// Changes when the topology changed (here or, by notification, through another node).
    pub fn topology_epoch(&self) -> u64 {
        self.topology_epoch.load(Ordering::SeqCst)
    }

    pub fn enabled(&self) -> bool {
        self.options.max_entries > 0
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The one way to tell the cache that the store changed. Call it after the change is
    /// committed (calling it more often is always safe).
    pub fn invalidate(&self, change: &Change) {
        if matches!(change, Change::Topology | Change::All) {
            self.topology_epoch.fetch_add(1, Ordering::SeqCst);
            if *change == Change::Topology {
                return;
            }
        }
        match change.bucket_name() {
            Some(bucket) => {
                self.epochs[slot(bucket)].fetch_add(1, Ordering::SeqCst);
            }
            None => {
                for e in self.epochs.iter() {
                    e.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        self.forget_bodies(change);
        if self.map.is_empty() {
            return;
        }
        match change {
            Change::Object { bucket, name } => {
                for kind in [Kind::Object, Kind::Replication] {
                    self.map.remove(&Key {
                        kind,
                        bucket: bucket.clone(),
                        sub: name.clone(),
                    });
                }
            }
            Change::Rights { client, bucket } => {
                self.map.remove(&Key {
                    kind: Kind::Rights,
                    bucket: bucket.clone(),
                    sub: client.clone(),
                });
            }
            Change::BucketRights { bucket } => self
                .map
                .retain(|k, _| !(k.kind == Kind::Rights && k.bucket == *bucket)),
            Change::Bucket { bucket } => self.map.retain(|k, _| k.bucket != *bucket),
            Change::All => self.map.clear(),
            Change::Topology => {}
        }
        self.entries.set(self.map.len() as f64);
    }

    /// Before a query whose answer about `bucket` may be stored.
    pub fn ticket(&self, bucket: &str) -> Ticket {
        let slot = slot(bucket);
        Ticket {
            slot,
            epoch: self.epochs[slot].load(Ordering::SeqCst),
        }
    }

    pub fn bucket(&self, name: &str) -> Option<Option<Bucket>> {
        match self.get(Kind::Bucket, name, "")? {
            Value::Bucket(b) => Some(b.map(|b| (*b).clone())),
            _ => None,
        }
    }

    pub fn rights(&self, client: &str, bucket: &str) -> Option<i64> {
        match self.get(Kind::Rights, bucket, client)? {
            Value::Rights(r) => Some(r),
            _ => None,
        }
    }

    pub fn object(&self, bucket: &str, name: &str) -> Option<Option<Arc<CachedObject>>> {
        match self.get(Kind::Object, bucket, name)? {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn replication(&self, bucket: &str, name: &str) -> Option<Arc<BTreeMap<String, String>>> {
        match self.get(Kind::Replication, bucket, name)? {
            Value::Replication(r) => Some(r),
            _ => None,
        }
    }

    pub fn put_bucket(&self, t: Ticket, name: &str, bucket: Option<Bucket>) {
        self.put(
            t,
            Kind::Bucket,
            name,
            "",
            Value::Bucket(bucket.map(Arc::new)),
        );
    }

    pub fn put_rights(&self, t: Ticket, client: &str, bucket: &str, rights: i64) {
        self.put(t, Kind::Rights, bucket, client, Value::Rights(rights));
    }

    pub fn put_object(&self, t: Ticket, bucket: &str, name: &str, obj: Option<CachedObject>) {
        self.put(
            t,
            Kind::Object,
            bucket,
            name,
            Value::Object(obj.map(Arc::new)),
        );
    }

    pub fn put_replication(
        &self,
        t: Ticket,
        bucket: &str,
        name: &str,
        sites: BTreeMap<String, String>,
    ) {
        self.put(
            t,
            Kind::Replication,
            bucket,
            name,
            Value::Replication(Arc::new(sites)),
        );
    }

    fn get(&self, kind: Kind, bucket: &str, sub: &str) -> Option<Value> {
        if !self.enabled() {
            return None;
        }
        let key = Key {
            kind,
            bucket: bucket.to_owned(),
            sub: sub.to_owned(),
        };
        let found = self.map.get(&key).and_then(|e| {
            let fresh = self.options.ttl.is_none_or(|ttl| e.at.elapsed() < ttl);
            fresh.then(|| e.value.clone())
        });
        match &found {
            Some(_) => self.hits.increment(1),
            None => self.misses.increment(1),
        }
        found
    }

    /// Stores an answer read after `t` was taken, unless an invalidation of its slot came in
    /// between (checked while holding the shard's lock, see the module's doc).
    fn put(&self, t: Ticket, kind: Kind, bucket: &str, sub: &str, value: Value) {
        if !self.enabled() || self.epochs[t.slot].load(Ordering::SeqCst) != t.epoch {
            return;
        }
        if self.map.len() >= self.options.max_entries {
            self.evict();
        }
        let key = Key {
            kind,
            bucket: bucket.to_owned(),
            sub: sub.to_owned(),
        };
        match self.map.entry(key) {
            dashmap::mapref::entry::Entry::Occupied(mut o) => {
                if self.epochs[t.slot].load(Ordering::SeqCst) == t.epoch {
                    o.insert(Entry {
                        value,
                        at: Instant::now(),
                    });
                }
            }
            dashmap::mapref::entry::Entry::Vacant(v) => {
                if self.epochs[t.slot].load(Ordering::SeqCst) == t.epoch {
                    v.insert(Entry {
                        value,
                        at: Instant::now(),
                    });
                }
            }
        }
        self.entries.set(self.map.len() as f64);
    }

    /// The verified bytes of `bucket/name` if they are held and have this hash and size.
    pub fn body(&self, bucket: &str, name: &str, sha256: &str, size: u64) -> Option<Bytes> {
        if self.options.max_body_bytes == 0 {
            return None;
        }
        let found = self.bodies.get(&(bucket.to_owned(), name.to_owned()))?;
        let fresh = self.options.ttl.is_none_or(|ttl| found.at.elapsed() < ttl);
        (fresh && found.sha256 == sha256 && found.bytes.len() as u64 == size)
            .then(|| found.bytes.clone())
    }

    /// Keeps a body read after `t` was taken and verified against `sha256`, unless it is too
    /// large or an invalidation of its bucket's slot came in between (see the module's doc).
    pub fn put_body(&self, t: Ticket, bucket: &str, name: &str, sha256: &str, bytes: Bytes) {
        let len = bytes.len();
        if len > self.options.max_body_len
            || len > self.options.max_body_bytes
            || self.epochs[t.slot].load(Ordering::SeqCst) != t.epoch
        {
            return;
        }
        // Halving until the body fits (bounded: concurrent puts may refill meanwhile).
        for _ in 0..8 {
            if self.body_bytes.load(Ordering::Relaxed) + len <= self.options.max_body_bytes {
                break;
            }
            self.evict_bodies();
        }
        let body = Body {
            sha256: sha256.to_owned(),
            bytes,
            at: Instant::now(),
        };
        let key = (bucket.to_owned(), name.to_owned());
        match self.bodies.entry(key) {
            dashmap::mapref::entry::Entry::Occupied(mut o) => {
                if self.epochs[t.slot].load(Ordering::SeqCst) == t.epoch {
                    let old = o.insert(body);
                    self.body_bytes.fetch_add(len, Ordering::Relaxed);
                    self.body_bytes
                        .fetch_sub(old.bytes.len(), Ordering::Relaxed);
                }
            }
            dashmap::mapref::entry::Entry::Vacant(v) => {
                if self.epochs[t.slot].load(Ordering::SeqCst) == t.epoch {
                    v.insert(body);
                    self.body_bytes.fetch_add(len, Ordering::Relaxed);
                }
            }
        }
    }

    /// Bytes of bodies held.
    pub fn body_bytes(&self) -> usize {
        self.body_bytes.load(Ordering::Relaxed)
    }

    fn forget_bodies(&self, change: &Change) {
        if self.bodies.is_empty() {
            return;
        }
        match change {
            Change::Object { bucket, name } => {
                if let Some((_, old)) = self.bodies.remove(&(bucket.clone(), name.clone())) {
                    self.body_bytes
                        .fetch_sub(old.bytes.len(), Ordering::Relaxed);
                }
            }
            Change::Bucket { bucket } => self.retain_bodies(|(b, _)| b != bucket),
            Change::All => self.retain_bodies(|_| false),
            Change::Topology => {}
            // Rights do not change bytes (the rows decide who may read them).
            Change::Rights { .. } | Change::BucketRights { .. } => {}
        }
    }

    /// Drops about half of the bodies (every second one met).
    fn evict_bodies(&self) {
        let mut n = 0u64;
        self.retain_bodies(|_| {
            n += 1;
            !n.is_multiple_of(2)
        });
    }

    fn retain_bodies(&self, mut keep: impl FnMut(&(String, String)) -> bool) {
        self.bodies.retain(|k, body| {
            let kept = keep(k);
            if !kept {
                self.body_bytes
                    .fetch_sub(body.bytes.len(), Ordering::Relaxed);
            }
            kept
        });
    }

    /// Drops about a quarter of the entries (every fourth one met).
    fn evict(&self) {
        let mut n = 0u64;
        self.map.retain(|_, _| {
            n += 1;
            !n.is_multiple_of(4)
        });
    }
}

/// Reports a write's changes to the cache when dropped, that is at the end of the write
/// method, whichever way it ends. Dropped without [`Changing::done`] (an error, or the
/// method's future cancelled while its commit may still land on the database's worker
/// thread), it reports them once more 100 ms and 1 s later.
pub struct Changing {
    cache: Arc<MetaCache>,
    changes: Vec<Change>,
    done: bool,
}

impl Changing {
    pub fn new(cache: Arc<MetaCache>, changes: Vec<Change>) -> Self {
        Self {
            cache,
            changes,
            done: false,
        }
    }

    /// The write finished (committed or cleanly failed).
    pub fn done(mut self) {
        self.done = true;
    }
}

impl Drop for Changing {
    fn drop(&mut self) {
        for c in &self.changes {
            self.cache.invalidate(c);
        }
        if self.done || self.changes.is_empty() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (cache, changes) = (self.cache.clone(), std::mem::take(&mut self.changes));
            rt.spawn(async move {
                for delay in [100, 900] {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    for c in &changes {
                        cache.invalidate(c);
                    }
                }
            });
        }
    }
}

fn slot(bucket: &str) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bucket.hash(&mut h);
    (h.finish() as usize) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(name: &str) -> Bucket {
        Bucket {
            name: name.into(),
            id: name.into(),
            client_id: "c".into(),
            site: "s".into(),
            creation: chrono::Utc::now(),
            expires: None,
            status: crate::model::object::Status::Ready,
        }
    }

    #[test]
    fn an_answer_read_before_an_invalidation_is_not_stored() {
        let c = MetaCache::new(CacheOptions::default());
        let t = c.ticket("b");
        c.invalidate(&Change::bucket("b"));
        c.put_bucket(t, "b", Some(bucket("b")));
        assert!(c.bucket("b").is_none());
        let t = c.ticket("b");
        c.put_bucket(t, "b", None);
        assert_eq!(c.bucket("b").map(|b| b.is_none()), Some(true));
    }

    #[test]
    fn changes_drop_what_they_touch() {
        let c = MetaCache::new(CacheOptions::default());
        let t = c.ticket("b");
        c.put_rights(t, "x", "b", 1);
        c.put_rights(t, "y", "b", 3);
        c.put_bucket(t, "b", Some(bucket("b")));
        c.invalidate(&Change::Rights {
            client: "x".into(),
            bucket: "b".into(),
        });
        let t = c.ticket("b");
        assert_eq!(c.rights("x", "b"), None);
        assert_eq!(c.rights("y", "b"), Some(3));
        c.put_rights(t, "x", "b", 1);
        c.invalidate(&Change::BucketRights { bucket: "b".into() });
        assert_eq!(c.rights("y", "b"), None);
        assert!(c.bucket("b").is_some());
        c.invalidate(&Change::bucket("b"));
        assert!(c.bucket("b").is_none());
    }

    #[test]
    fn the_cap_holds() {
        let c = MetaCache::new(CacheOptions {
            max_entries: 100,
            ttl: None,
            ..CacheOptions::default()
        });
        for i in 0..1000 {
            let name = format!("b{i}");
            let t = c.ticket(&name);
            c.put_bucket(t, &name, None);
            assert!(c.len() <= 100);
        }
    }

    #[test]
    fn payloads_round_trip() {
        for change in [
            Change::object("b", "a/b"),
            Change::Rights {
                client: "c".into(),
                bucket: "b".into(),
            },
            Change::BucketRights { bucket: "b".into() },
            Change::bucket("b"),
            Change::All,
            Change::Topology,
        ] {
            assert_eq!(Change::from_payload(&change.to_payload()), change);
        }
        // As a PostgreSQL trigger writes it (json_build_array puts spaces after commas).
        assert_eq!(
            Change::from_payload(r#"["O", "b", "a\"b"]"#),
            Change::object("b", "a\"b")
        );
        assert_eq!(Change::from_payload("garbage"), Change::All);
    }

    fn body_cache(max_body_bytes: usize) -> MetaCache {
        MetaCache::new(CacheOptions {
            max_body_bytes,
            max_body_len: 100,
            ..CacheOptions::default()
        })
    }

    #[test]
    fn a_body_is_served_only_for_its_hash_and_size() {
        let c = body_cache(1000);
        let t = c.ticket("b");
        c.put_body(t, "b", "o", "h1", Bytes::from_static(b"abc"));
        assert_eq!(c.body("b", "o", "h1", 3).as_deref(), Some(&b"abc"[..]));
        assert_eq!(c.body("b", "o", "h2", 3), None, "another version's hash");
        assert_eq!(c.body("b", "o", "h1", 4), None, "another size");
        assert_eq!(c.body("b", "other", "h1", 3), None);
        // Too large for the cache: not kept.
        c.put_body(t, "b", "big", "h", Bytes::from(vec![0u8; 101]));
        assert_eq!(c.body("b", "big", "h", 101), None);
        assert_eq!(c.body_bytes(), 3);
    }

    #[test]
    fn changes_drop_bodies_and_a_racing_read_keeps_none() {
        let c = body_cache(1000);
        let put = |name: &str| {
            let t = c.ticket("b");
            c.put_body(t, "b", name, "h", Bytes::from_static(b"xy"));
        };
        put("o1");
        put("o2");
        c.invalidate(&Change::Rights {
            client: "x".into(),
            bucket: "b".into(),
        });
        assert!(
            c.body("b", "o1", "h", 2).is_some(),
            "rights do not touch bytes"
        );
        c.invalidate(&Change::object("b", "o1"));
        assert_eq!(c.body("b", "o1", "h", 2), None);
        assert!(c.body("b", "o2", "h", 2).is_some());
        c.invalidate(&Change::bucket("b"));
        assert_eq!(c.body("b", "o2", "h", 2), None);
        put("o3");
        c.invalidate(&Change::All);
        assert_eq!(c.body("b", "o3", "h", 2), None);
        assert_eq!(c.body_bytes(), 0);

        // A read that started before a write to its bucket does not store its (old) bytes.
        let t = c.ticket("b");
        c.invalidate(&Change::object("b", "o4"));
        c.put_body(t, "b", "o4", "h", Bytes::from_static(b"old"));
        assert_eq!(c.body("b", "o4", "h", 3), None);
    }

    #[test]
    fn bodies_stay_within_their_byte_cap() {
        let c = body_cache(500);
        for i in 0..100 {
            let t = c.ticket("b");
            c.put_body(t, "b", &format!("o{i}"), "h", Bytes::from(vec![0u8; 100]));
            assert!(c.body_bytes() <= 500, "{} bytes held", c.body_bytes());
        }
        assert!(c.body("b", "o99", "h", 100).is_some(), "the newest is kept");
        let off = body_cache(0);
        let t = off.ticket("b");
        off.put_body(t, "b", "o", "h", Bytes::from_static(b"a"));
        assert_eq!(off.body("b", "o", "h", 1), None);
    }
}
