//! TOML configuration. Every key of the ARCHITECTURE contract is accepted; unknown keys are errors
//! that name the key (serde's `deny_unknown_fields`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub site: SiteConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub metadata: MetadataConfig,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    #[serde(default)]
    pub replication: ReplicationConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub topology: TopologyConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub scrub: ScrubConfig,
    #[serde(default)]
    pub rucio: RucioConfig,
    #[serde(default)]
    pub dr: DrConfig,
    #[serde(default)]
    pub tasks: TasksConfig,
}

/// Disaster recovery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrConfig {
    /// The RPO target: a recovery server whose lag is within it is OK, within twice WARNING,
    /// within four times ERROR, beyond CRITICAL.
    #[serde(default = "default_rpo_threshold")]
    pub rpo_threshold_seconds: u64,
    /// How long a failback (stop_failover) may wait for the primary to hold and verify every
    /// object written during the failover before it fails, in seconds; 0: no deadline (it
    /// keeps running, with visible progress, until the primary is back).
    #[serde(default)]
    pub failback_deadline_secs: u64,
    /// DR tasks running at once, per kind (test failover, production failover, failback),
    /// apart from the slots of the other task kinds.
    #[serde(default = "default_dr_concurrent")]
    pub max_concurrent_tasks: usize,
}

impl Default for DrConfig {
    fn default() -> Self {
        Self {
            rpo_threshold_seconds: default_rpo_threshold(),
            failback_deadline_secs: 0,
            max_concurrent_tasks: default_dr_concurrent(),
        }
    }
}

fn default_dr_concurrent() -> usize {
    4
}

/// The task engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksConfig {
    /// Definition runs (and any kind without its own limit) running at once; the others wait
    /// Pending. Each task kind has its own slots.
    #[serde(default = "default_task_concurrent")]
    pub max_concurrent: usize,
    /// Per-kind limits by task type, e.g. `{ replicationActionExecutor = 2 }`.
    #[serde(default)]
    pub limits: std::collections::HashMap<String, usize>,
}

impl Default for TasksConfig {
    fn default() -> Self {
        Self {
            max_concurrent: default_task_concurrent(),
            limits: Default::default(),
        }
    }
}

fn default_task_concurrent() -> usize {
    4
}

fn default_rpo_threshold() -> u64 {
    300
}

/// The scrubber: re-reads stored objects and verifies their SHA-256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Read rate of the scrubber (kept small so it never competes with clients).
    #[serde(default = "default_scrub_rate")]
    pub bytes_per_second: u64,
    /// Pause between two passes over every object.
    #[serde(default = "default_scrub_interval")]
    pub interval_secs: u64,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bytes_per_second: default_scrub_rate(),
            interval_secs: default_scrub_interval(),
        }
    }
}

/// The Rucio replica catalogue and its background jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RucioConfig {
    /// Suspicious declarations (since the copy was last verified) after which it is re-read,
    /// and declared BAD if it fails.
    #[serde(default = "default_suspicious_threshold")]
    pub suspicious_threshold: u32,
    /// How often the tombstone reaper, the end of TEMPORARY_UNAVAILABLE and the repair queue
    /// are looked at.
    #[serde(default = "default_rucio_interval")]
    pub background_interval_ms: u64,
}

impl Default for RucioConfig {
    fn default() -> Self {
        Self {
            suspicious_threshold: default_suspicious_threshold(),
            background_interval_ms: default_rucio_interval(),
        }
    }
}

fn default_scrub_rate() -> u64 {
    1024 * 1024
}
fn default_scrub_interval() -> u64 {
    3600
}
fn default_suspicious_threshold() -> u32 {
    3
}
fn default_rucio_interval() -> u64 {
    5000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    #[serde(default = "default_site_id")]
    pub id: String,
    #[serde(default = "default_listen")]
    pub listen: String,
    /// How peers reach this site; empty means "derived from the bound address".
    #[serde(default)]
    pub public_url: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// This node's name among the nodes of one site sharing a PostgreSQL metadata database:
    /// it labels the leases the node holds. Empty means the host name.
    #[serde(default)]
    pub node_id: String,
    /// How long a node's claim on shared work (a task, a peer's outbox, a singleton such as
    /// the scheduler) lasts unrenewed, in milliseconds: how soon another node of the site
    /// takes over the work of a node that died.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
}

fn default_lease_ms() -> u64 {
    30_000
}

impl Default for SiteConfig {
    fn default() -> Self {
        Self {
            id: default_site_id(),
            listen: default_listen(),
            public_url: String::new(),
            data_dir: default_data_dir(),
            node_id: String::new(),
            lease_ms: default_lease_ms(),
        }
    }
}

impl SiteConfig {
    /// `node_id`, defaulting to the host name (then "node").
    pub fn node_id(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".into())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default = "default_backend")]
    pub backend: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub force_path_style: bool,
    #[serde(default)]
    pub bucket_prefix: String,
    /// Size of the blocks whose SHA-256 is recorded at write time (range reads and resumed
    /// pulls are verified by block). Default 4 MiB.
    #[serde(default = "default_block_size")]
    pub block_size_bytes: u64,
    /// S3: the longest one attempt of a request may wait for its answer (then it is retried,
    /// and after the last attempt the operation fails as a timeout). A backend that accepts a
    /// request and never answers must not hold a delete or an order for good. A streamed
    /// upload, paced by its sender, must have each chunk taken, and its answer once the body
    /// is complete, within it; server-side copies get ten times as long.
    #[serde(default = "default_s3_attempt_timeout")]
    pub s3_attempt_timeout_secs: u64,
}

fn default_block_size() -> u64 {
    4 * 1024 * 1024
}
fn default_s3_attempt_timeout() -> u64 {
    30
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: default_backend(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            force_path_style: false,
            bucket_prefix: String::new(),
            block_size_bytes: default_block_size(),
            s3_attempt_timeout_secs: default_s3_attempt_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    /// `sqlite://PATH` (empty means `sqlite://<data_dir>/meta.db`), or
    /// `postgres://user:password@host:port/database` for a site of several nodes.
    #[serde(default)]
    pub url: String,
    /// Connections to the database this node keeps at most (PostgreSQL; SQLite uses 8).
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// Most entries (bucket, grant, object and replication-status rows, negative answers
    /// included) the in-process metadata cache holds; when full, about a quarter are dropped.
    /// 0 disables the cache.
    #[serde(default = "default_cache_max_entries")]
    pub cache_max_entries: usize,
    /// How long a cached row is trusted, in milliseconds. Writes made by this process
    /// invalidate the cache at once; this only bounds how long a write made by another
    /// process (`mirrorgate import` while the site serves) can go unseen. 0: no expiry.
    #[serde(default = "default_cache_ttl_ms")]
    pub cache_ttl_ms: u64,
    /// Most bytes of hot small object bodies kept in memory (verified when read from storage,
    /// dropped with their object's cached row). 0 keeps none.
    #[serde(default = "default_body_cache_bytes")]
    pub body_cache_bytes: usize,
    /// Largest object whose body is kept (bytes).
    #[serde(default = "default_body_cache_max_object")]
    pub body_cache_max_object: usize,
    /// How long the group committer waits for more writes once one arrived, in microseconds
    /// (see `meta::group`). 0: a group is what queued while the previous one committed.
    #[serde(default = "default_group_commit_window_us")]
    pub group_commit_window_us: u64,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            pool_size: default_pool_size(),
            cache_max_entries: default_cache_max_entries(),
            cache_ttl_ms: default_cache_ttl_ms(),
            body_cache_bytes: default_body_cache_bytes(),
            body_cache_max_object: default_body_cache_max_object(),
            group_commit_window_us: default_group_commit_window_us(),
        }
    }
}

fn default_pool_size() -> u32 {
    16
}

fn default_cache_max_entries() -> usize {
    100_000
}

fn default_group_commit_window_us() -> u64 {
    2000
}

fn default_cache_ttl_ms() -> u64 {
    10_000
}

fn default_body_cache_bytes() -> usize {
    16 << 20
}

fn default_body_cache_max_object() -> usize {
    64 << 10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub id: String,
    pub url: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Attempts for failures that are neither transient nor permanent for sure (a peer that
    /// answers 401/403: a configuration an operator may fix). Transient failures (refused,
    /// reset, timeout, 5xx, 429, a draining peer) do not count against it: they are retried
    /// until delivered or until the order is `max_order_age_secs` old.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Age after which an order that could not be delivered ends as a failed operation,
    /// whatever the cause (24 h by default, as Backbeat operators expect).
    #[serde(default = "default_max_order_age")]
    pub max_order_age_secs: u64,
    /// A call to a peer whose response head, or whose body, makes no progress for this long
    /// is abandoned (and retried, or served by another holder).
    #[serde(default = "default_peer_stall")]
    pub peer_stall_timeout_secs: u64,
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max")]
    pub backoff_max_ms: u64,
    #[serde(default = "default_retention")]
    pub failed_retention_hours: u64,
    /// Objects of at least this many bytes are pulled as several verified ranges at once,
    /// resumable from their verified blocks (64 MiB by default).
    #[serde(default = "default_ranged_pull_min")]
    pub ranged_pull_min_bytes: u64,
    /// Ranges of one such pull in flight at once.
    #[serde(default = "default_pull_streams")]
    pub pull_streams: usize,
    /// Peers pull such an object's completed blocks while a client still uploads it here,
    /// so its replication overlaps the upload (`core::uploads`, `replication::prefetch`).
    #[serde(default = "yes")]
    pub overlap_uploads: bool,
}

fn default_ranged_pull_min() -> u64 {
    64 * 1024 * 1024
}

fn default_pull_streams() -> usize {
    4
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            workers: default_workers(),
            max_attempts: default_max_attempts(),
            max_order_age_secs: default_max_order_age(),
            peer_stall_timeout_secs: default_peer_stall(),
            backoff_initial_ms: default_backoff_initial(),
            backoff_max_ms: default_backoff_max(),
            failed_retention_hours: default_retention(),
            ranged_pull_min_bytes: default_ranged_pull_min(),
            pull_streams: default_pull_streams(),
            overlap_uploads: true,
        }
    }
}

/// Control-plane bearer tokens, the built-in token issuer and per-client rate limits
/// (enforced by `http::auth`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// None: on, except when the site listens on a loopback address.
    pub enabled: Option<bool>,
    /// HS256 key of the built-in issuer (and accepted for verification). Peers mint their
    /// `mirrorgate::peer` tokens with it, so it is the same on every site.
    pub jwt_secret: Option<String>,
    /// Name of an environment variable holding `jwt_secret` (for container images: the secret
    /// stays out of the file). Setting both is an error; a variable that is unset or empty is
    /// an error naming it.
    pub jwt_secret_env: Option<String>,
    /// true: the data plane (`/cloudclonestore/**`, `/replicator/local/**`) needs a bearer token
    /// too, and the client id is the token's `client_id` (else `sub`) claim.
    #[serde(default)]
    pub data_plane: bool,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// JWKS of an external identity provider.
    pub jwks_file: Option<PathBuf>,
    /// PEM public keys (RSA, EC P-256/P-384, Ed25519) whose tokens are accepted.
    #[serde(default)]
    pub public_key_files: Vec<PathBuf>,
    /// When set, tokens must carry this `iss` (and the built-in issuer writes it).
    pub issuer: Option<String>,
    /// When set, tokens must carry this `aud` (and the built-in issuer writes it).
    pub audience: Option<String>,
    /// Lifetime of the tokens the built-in issuer signs.
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime_secs: u64,
    /// Control-plane requests per second per client; 0 disables rate limiting.
    #[serde(default = "default_rate_limit")]
    pub rate_limit_per_second: u32,
    /// Requests a client may send at once before the per-second rate applies.
    #[serde(default = "default_rate_burst")]
    pub rate_limit_burst: u32,
    #[serde(default)]
    pub clients: Vec<AuthClient>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            jwt_secret: None,
            jwt_secret_env: None,
            data_plane: false,
            leeway_secs: default_leeway(),
            jwks_file: None,
            public_key_files: Vec::new(),
            issuer: None,
            audience: None,
            token_lifetime_secs: default_token_lifetime(),
            rate_limit_per_second: default_rate_limit(),
            rate_limit_burst: default_rate_burst(),
            clients: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// Whether any key can verify a token.
    pub fn has_verification_key(&self) -> bool {
        self.jwt_secret.is_some() || self.jwks_file.is_some() || !self.public_key_files.is_empty()
    }

    /// Reads `jwt_secret_env` into `jwt_secret`.
    fn resolve_env(&mut self) -> anyhow::Result<()> {
        let Some(var) = &self.jwt_secret_env else {
            return Ok(());
        };
        anyhow::ensure!(
            self.jwt_secret.is_none(),
            "[auth] jwt_secret and jwt_secret_env are both set: keep one"
        );
        match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => {
                self.jwt_secret = Some(value.trim().to_owned());
                Ok(())
            }
            _ => anyhow::bail!(
                "[auth] jwt_secret_env names the environment variable {var}, which is unset or \
                 empty: set it to 32 random bytes or more (e.g. `openssl rand -hex 32`)"
            ),
        }
    }

    /// Whether `jwt_secret` is guessable: the example value or shorter than 32 bytes.
    pub fn weak_secret(&self) -> bool {
        self.jwt_secret
            .as_deref()
            .is_some_and(|s| s == PLACEHOLDER_SECRET || s.len() < MIN_SECRET_BYTES)
    }

    /// Refuses settings that would leave the control plane unusable or open.
    fn validate(&self, enabled: bool) -> anyhow::Result<()> {
        anyhow::ensure!(
            !enabled || self.has_verification_key(),
            "auth is on but no key verifies tokens: set [auth] jwt_secret (or public_key_files \
             or jwks_file), or turn auth off with [auth] enabled = false"
        );
        anyhow::ensure!(
            self.jwt_secret.as_deref() != Some(""),
            "[auth] jwt_secret must not be empty"
        );
        anyhow::ensure!(
            self.clients.is_empty() || self.jwt_secret.is_some(),
            "[[auth.clients]] need [auth] jwt_secret: the built-in issuer signs their tokens with it"
        );
        anyhow::ensure!(
            self.token_lifetime_secs > 0,
            "[auth] token_lifetime_secs must be > 0"
        );
        let mut ids = std::collections::HashSet::new();
        for client in &self.clients {
            anyhow::ensure!(
                !client.id.is_empty(),
                "[[auth.clients]] id must not be empty"
            );
            anyhow::ensure!(
                !client.secret.is_empty(),
                "[[auth.clients]] {:?}: secret must not be empty",
                client.id
            );
            anyhow::ensure!(
                ids.insert(&client.id),
                "[[auth.clients]] id {:?} appears twice",
                client.id
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthClient {
    pub id: String,
    pub secret: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The example secret of the shipped configurations.
pub const PLACEHOLDER_SECRET: &str = "change-me";
/// Shortest `jwt_secret` accepted on a listener that is not a loopback address.
pub const MIN_SECRET_BYTES: usize = 32;

/// The site id rule (config `site.id`, `[[peers]] id`, the administration API's topology ids):
/// 1 to 64 characters of a-z, A-Z, 0-9, '-', '_' and '.', starting with a letter or digit. It
/// keeps ids usable as a token `sub`, a certificate name, an RSE name and a URL segment.
pub fn check_site_id(id: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&id.len())
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid site id {:?}: 1 to 64 characters of a-z, A-Z, 0-9, '-', '_' and '.', \
             starting with a letter or a digit",
            id.chars().take(80).collect::<String>()
        ))
    }
}

/// TLS for the listener and for calls to peers.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain and key: when both are set the site listens on https.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle trusted for peers (and for client certificates when `client_auth` is on).
    pub ca_file: Option<PathBuf>,
    /// Require peers calling this site to present a certificate signed by `ca_file` (mutual TLS).
    #[serde(default)]
    pub client_auth: bool,
    /// Client certificate and key this site presents to peers.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyConfig {
    /// Per-peer timeout of a lookup (HEAD) in milliseconds.
    #[serde(default = "default_peer_timeout")]
    pub peer_timeout_ms: u64,
    /// How long a negative lookup is remembered.
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl_ms: u64,
    /// How long a positive lookup is remembered.
    #[serde(default = "default_positive_ttl")]
    pub positive_ttl_ms: u64,
    /// Consecutive failures after which a peer is skipped for `peer_backoff_ms`.
    #[serde(default = "default_peer_failures")]
    pub peer_failure_threshold: u32,
    #[serde(default = "default_peer_backoff")]
    pub peer_backoff_ms: u64,
    /// Most lookup answers (positive and negative) the cache holds. When it is full, expired
    /// entries are dropped first, then the entries closest to expiry; a sweep every few seconds
    /// drops expired entries as well. 0 turns the cache off.
    #[serde(default = "default_cache_max_entries")]
    pub cache_max_entries: usize,
    /// Cache misses (lookups that must ask the peers) a client may cause per second, beyond
    /// `miss_burst`; more are refused with 429 and `Retry-After`, without asking any peer.
    /// 0 turns the limit off.
    #[serde(default = "default_miss_rate")]
    pub miss_rate_per_second: u32,
    /// Cache misses a client may cause at once before `miss_rate_per_second` applies
    /// (0: one second's worth).
    #[serde(default = "default_miss_burst")]
    pub miss_burst: u32,
    /// Period of the liveness probe (`GET /healthz` on each UP peer); a peer failing it has
    /// its cached locations dropped. 0 disables the probe.
    #[serde(default = "default_probe_interval")]
    pub probe_interval_ms: u64,
}

fn default_probe_interval() -> u64 {
    1000
}

impl Default for TopologyConfig {
    fn default() -> Self {
        Self {
            peer_timeout_ms: default_peer_timeout(),
            negative_ttl_ms: default_negative_ttl(),
            positive_ttl_ms: default_positive_ttl(),
            peer_failure_threshold: default_peer_failures(),
            peer_backoff_ms: default_peer_backoff(),
            cache_max_entries: default_cache_max_entries(),
            miss_rate_per_second: default_miss_rate(),
            miss_burst: default_miss_burst(),
            probe_interval_ms: default_probe_interval(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request head (request line + headers) in bytes; larger ones get 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// How long a shutdown waits for in-flight streams, in seconds.
    #[serde(default = "default_drain_secs")]
    pub drain_timeout_secs: u64,
    /// Time a new connection has to complete its TLS handshake, and then to deliver its first
    /// complete request head (HTTP/1.1) or request HEADERS (HTTP/2, preface included), in
    /// milliseconds; a connection that sends nothing is closed after it. Also the time an HTTP/2
    /// peer has to answer a keep-alive ping. 0 disables.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed, in seconds: HTTP/1.1
    /// keep-alive between requests (so it also bounds every later request head), HTTP/2 with no
    /// open stream (GOAWAY). HTTP/2 peers are pinged at this interval. 0 disables.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Slowest accepted request body, in bytes per second: a body delivering fewer than
    /// `min_body_rate_bytes_per_sec * body_rate_grace_secs` bytes during `body_rate_grace_secs`
    /// of waiting on the client fails, so the request (an upload) is aborted. Time the server
    /// itself spends not reading is not counted. 0 disables.
    #[serde(default = "default_min_body_rate")]
    pub min_body_rate_bytes_per_sec: u64,
    /// The window over which the body rate is measured, in seconds (see above). 0 disables.
    #[serde(default = "default_body_rate_grace_secs")]
    pub body_rate_grace_secs: u64,
    /// Most connections open at once (TLS handshakes included); beyond it a new connection is
    /// closed at once (plain HTTP: after a best-effort `503` with `connection: close`).
    /// 0: no limit.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest object an upload may store, in bytes (after decompression for a zstd body).
    /// A larger declared size (`x-clonecloudstore-size`, or `Content-Length` of a plain body)
    /// is refused with 413 before anything is stored; a body that turns out larger is cut off
    /// with 413 and nothing of it is kept. 0 means no limit.
    #[serde(default = "default_max_object_bytes")]
    pub max_object_bytes: u64,
    /// Largest zstd window a compressed upload may ask for, in bytes (rounded down to a power
    /// of two, at least 1 KiB). A frame declaring a larger window is refused with 400. The
    /// decoder's memory is about this window, so one compressed upload holds at most
    /// `zstd_window_max_bytes` + 128 KiB (zstd block) + about 3.9 MiB of chunks in and around
    /// the codec channels (see `core::stream`): about 12 MiB with the defaults.
    #[serde(default = "default_zstd_window_max")]
    pub zstd_window_max_bytes: u64,
}

impl LimitsConfig {
    /// `max_object_bytes` as an option (None: unlimited).
    pub fn max_object(&self) -> Option<u64> {
        (self.max_object_bytes > 0).then_some(self.max_object_bytes)
    }

    /// The zstd `WindowLogMax` for `zstd_window_max_bytes`: log2, rounded down, within the
    /// range zstd accepts (10..=31).
    pub fn zstd_window_log_max(&self) -> u32 {
        let bytes = self.zstd_window_max_bytes.max(1);
        (63 - bytes.leading_zeros()).clamp(10, 31)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: default_max_header_bytes(),
            drain_timeout_secs: default_drain_secs(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            idle_timeout_secs: default_idle_timeout_secs(),
            min_body_rate_bytes_per_sec: default_min_body_rate(),
            body_rate_grace_secs: default_body_rate_grace_secs(),
            max_connections: default_max_connections(),
            max_object_bytes: default_max_object_bytes(),
            zstd_window_max_bytes: default_zstd_window_max(),
        }
    }
}

fn default_header_read_timeout_ms() -> u64 {
    10_000
}
fn default_idle_timeout_secs() -> u64 {
    60
}
fn default_min_body_rate() -> u64 {
    1024
}
fn default_body_rate_grace_secs() -> u64 {
    10
}
fn default_max_connections() -> usize {
    4096
}

fn yes() -> bool {
    true
}
fn default_site_id() -> String {
    "site-a".into()
}
fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_backend() -> String {
    "fs".into()
}
fn default_workers() -> usize {
    4
}
fn default_max_order_age() -> u64 {
    24 * 3600
}
fn default_peer_stall() -> u64 {
    30
}
fn default_max_attempts() -> u32 {
    5
}
fn default_backoff_initial() -> u64 {
    1000
}
fn default_backoff_max() -> u64 {
    300_000
}
fn default_retention() -> u64 {
    24
}
fn default_peer_timeout() -> u64 {
    2000
}
fn default_negative_ttl() -> u64 {
    2000
}
fn default_positive_ttl() -> u64 {
    300_000
}
fn default_peer_failures() -> u32 {
    3
}
fn default_peer_backoff() -> u64 {
    5000
}
fn default_max_header_bytes() -> usize {
    64 * 1024
}
fn default_drain_secs() -> u64 {
    30
}
fn default_leeway() -> u64 {
    5
}
fn default_max_object_bytes() -> u64 {
    1 << 40 // 1 TiB
}
fn default_zstd_window_max() -> u64 {
    8 << 20 // 8 MiB: window log 23
}
fn default_miss_rate() -> u32 {
    100
}
fn default_miss_burst() -> u32 {
    200
}
fn default_token_lifetime() -> u64 {
    3600
}
fn default_rate_limit() -> u32 {
    50
}
fn default_rate_burst() -> u32 {
    100
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let mut config: Config = toml::from_str(text)?;
        config.auth.resolve_env()?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.site.id.is_empty(), "site.id must not be empty");
        check_site_id(&self.site.id).map_err(|e| anyhow::anyhow!("site.id: {e}"))?;
        self.listen_addr()?;
        anyhow::ensure!(
            matches!(self.storage.backend.as_str(), "fs" | "s3"),
            "storage.backend must be \"fs\" or \"s3\", not {:?}",
            self.storage.backend
        );
        anyhow::ensure!(
            self.storage.s3_attempt_timeout_secs > 0,
            "storage.s3_attempt_timeout_secs must be > 0"
        );
        anyhow::ensure!(
            !self.scrub.enabled || self.scrub.bytes_per_second > 0,
            "scrub.bytes_per_second must be > 0 (or set scrub.enabled = false)"
        );
        anyhow::ensure!(
            self.rucio.suspicious_threshold > 0,
            "rucio.suspicious_threshold must be > 0"
        );
        anyhow::ensure!(
            self.replication.workers > 0,
            "replication.workers must be > 0"
        );
        anyhow::ensure!(
            self.replication.max_attempts > 0,
            "replication.max_attempts must be > 0"
        );
        anyhow::ensure!(
            self.tls.cert_file.is_some() == self.tls.key_file.is_some(),
            "tls.cert_file and tls.key_file go together"
        );
        for peer in &self.peers {
            check_site_id(&peer.id).map_err(|e| anyhow::anyhow!("[[peers]] id: {e}"))?;
            anyhow::ensure!(
                peer.id != self.site.id,
                "peer id {:?} is this site's own id",
                peer.id
            );
        }
        self.auth.validate(self.auth_enabled())?;
        self.check_secret_strength()
    }

    /// With auth on and a listener other than loopback, a guessable `jwt_secret` would let
    /// anyone mint operator and peer tokens: refuse to start (before anything binds).
    pub fn check_secret_strength(&self) -> anyhow::Result<()> {
        let loopback = self.listen_addr()?.ip().is_loopback();
        anyhow::ensure!(
            !self.auth_enabled() || loopback || !self.auth.weak_secret(),
            "[auth] jwt_secret is {} and site.listen {} is not a loopback address: anyone could \
             sign tokens with it. Use {MIN_SECRET_BYTES} random bytes or more (e.g. `openssl rand \
             -hex 32`), the same on every site",
            if self.auth.jwt_secret.as_deref() == Some(PLACEHOLDER_SECRET) {
                "the placeholder \"change-me\""
            } else {
                "shorter than 32 bytes"
            },
            self.site.listen
        );
        Ok(())
    }

    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.site
            .listen
            .parse()
            .map_err(|e| anyhow::anyhow!("site.listen {:?}: {e}", self.site.listen))
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls.cert_file.is_some()
    }

    /// `metadata.url`, defaulting to a SQLite file in the data dir.
    pub fn metadata_url(&self) -> String {
        if self.metadata.url.is_empty() {
            format!("sqlite://{}", self.site.data_dir.join("meta.db").display())
        } else {
            self.metadata.url.clone()
        }
    }

    /// Auth is on unless set explicitly, or the listener is a loopback address (development).
    pub fn auth_enabled(&self) -> bool {
        self.auth.enabled.unwrap_or_else(|| {
            !self
                .listen_addr()
                .map(|a| a.ip().is_loopback())
                .unwrap_or(false)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_embedded_default() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.site.listen, "127.0.0.1:8080");
        assert_eq!(c.storage.backend, "fs");
        assert!(c.metadata_url().ends_with("data/meta.db"));
        assert!(!c.auth_enabled(), "loopback listener: auth off by default");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[site]\nidd = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("idd"), "{err}");
    }

    #[test]
    fn architecture_example_parses() {
        let c = Config::parse(include_str!("../config/three-sites/a.toml")).unwrap();
        assert_eq!(c.peers.len(), 2);
    }

    const STRONG: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn auth_on_for_public_listener() {
        let public = "[site]\nlisten = \"0.0.0.0:8080\"\n";
        let c = Config::parse(&format!("{public}[auth]\njwt_secret = \"{STRONG}\"\n")).unwrap();
        assert!(c.auth_enabled());
        let c = Config::parse(&format!("{public}[auth]\nenabled = false\n")).unwrap();
        assert!(!c.auth_enabled());
    }

    #[test]
    fn auth_on_without_a_key_is_refused_naming_the_key() {
        let err = Config::parse("[site]\nlisten = \"0.0.0.0:8080\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("jwt_secret"), "{err}");
        let err = Config::parse("[auth]\nenabled = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("jwt_secret"), "{err}");
    }

    #[test]
    fn auth_defaults_keep_old_configs_working() {
        let c = Config::parse("[auth]\njwt_secret = \"s\"\n").unwrap();
        assert_eq!(c.auth.token_lifetime_secs, 3600);
        assert_eq!(c.auth.rate_limit_per_second, 50);
        assert_eq!(c.auth.rate_limit_burst, 100);
        let err = Config::parse("[[auth.clients]]\nid = \"a\"\nsecret = \"b\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("jwt_secret"), "{err}");
    }

    #[test]
    fn weak_secret_on_a_public_listener_is_refused_naming_the_key() {
        let public = "[site]\nlisten = \"0.0.0.0:8080\"\n";
        for weak in ["change-me", "short-secret", &STRONG[1..]] {
            let err = Config::parse(&format!("{public}[auth]\njwt_secret = \"{weak}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("[auth] jwt_secret"), "{err}");
        }
        // Loopback (development) and auth off keep working with the example value.
        Config::parse("[auth]\nenabled = true\njwt_secret = \"change-me\"\n").unwrap();
        Config::parse(&format!(
            "{public}[auth]\nenabled = false\njwt_secret = \"change-me\"\n"
        ))
        .unwrap();
        Config::parse(include_str!("../config/default.toml")).unwrap();
    }

    #[test]
    fn the_multi_node_examples_parse() {
        for text in [
            include_str!("../config/multi-node/node-1.toml"),
            include_str!("../config/multi-node/node-2.toml"),
            include_str!("../config/multi-node/node-3.toml"),
        ] {
            let c = Config::parse(text).unwrap();
            assert!(c.metadata_url().starts_with("postgres://"));
            assert!(c.site.node_id().starts_with("node-"));
        }
        let compose = include_str!("../config/compose-node.toml")
            .replace("MIRRORGATE_JWT_SECRET", "MIRRORGATE_TEST_COMPOSE_SECRET");
        std::env::set_var("MIRRORGATE_TEST_COMPOSE_SECRET", "x".repeat(64));
        let c = Config::parse(&compose).unwrap();
        assert_eq!(c.metadata.pool_size, 16);
        assert!(!c.site.node_id().is_empty(), "defaults to the host name");
    }

    #[test]
    fn the_container_config_does_not_start_with_a_guessable_secret() {
        let text = include_str!("../config/docker.toml");
        assert!(
            !text.contains("\njwt_secret ="),
            "docker.toml ships a secret"
        );
        // Without the variable the image refuses to start, naming it.
        let var = "MIRRORGATE_TEST_UNSET_SECRET_VAR";
        let text = text.replace("MIRRORGATE_JWT_SECRET", var);
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains(var) && err.contains("jwt_secret_env"), "{err}");
    }

    #[test]
    fn secret_from_the_environment() {
        let var = "MIRRORGATE_TEST_SECRET_FROM_ENV";
        std::env::set_var(var, STRONG);
        let c = Config::parse(&format!(
            "[site]\nlisten = \"0.0.0.0:8080\"\n[auth]\njwt_secret_env = \"{var}\"\n"
        ))
        .unwrap();
        assert_eq!(c.auth.jwt_secret.as_deref(), Some(STRONG));
        let err = Config::parse(&format!(
            "[auth]\njwt_secret = \"x\"\njwt_secret_env = \"{var}\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("both"), "{err}");
    }

    #[test]
    fn auth_keys_of_the_contract_and_their_defaults() {
        let c = Config::parse("").unwrap();
        assert!(!c.auth.data_plane);
        assert_eq!(c.auth.leeway_secs, 5);
        let c = Config::parse("[auth]\ndata_plane = true\nleeway_secs = 2\n").unwrap();
        assert!(c.auth.data_plane);
        assert_eq!(c.auth.leeway_secs, 2);
    }

    #[test]
    fn site_ids() {
        for good in ["site-a", "a", "RSE_1", "dc1.rack-2", &"x".repeat(64)] {
            assert!(check_site_id(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "a:b", "é", &"x".repeat(65)] {
            assert!(check_site_id(bad).is_err(), "{bad}");
        }
        let err = Config::parse("[site]\nid = \"a b\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("site.id"), "{err}");
    }

    #[test]
    fn limit_defaults_and_window_log() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.limits.max_object(), Some(1 << 40));
        assert_eq!(c.limits.zstd_window_log_max(), 23);
        assert_eq!(c.topology.cache_max_entries, 100_000);
        let c = Config::parse("[limits]\nmax_object_bytes = 0\nzstd_window_max_bytes = 3000000\n")
            .unwrap();
        assert_eq!(c.limits.max_object(), None);
        assert_eq!(c.limits.zstd_window_log_max(), 21);
    }
}
