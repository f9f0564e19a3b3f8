//! S3-compatible storage: one backend bucket `<bucket_prefix><bucket>` per mirrorgate bucket,
//! objects under their own key, the verified SHA-256 (CCS encoding) in the user metadata
//! `mirrorgate-sha256`.
//!
//! # Writes never expose unverified bytes under the object's key
//! The metadata store is the truth about visibility, but the backend is kept clean too:
//! - **Small objects of known size** (up to [`SINGLE_PUT_MAX`]) stream in one PutObject to a
//!   staging key (`~mirrorgate-staging/<uuid>`; `~` cannot occur in CCS names). `commit` copies
//!   it server-side onto the final key with the hash in the metadata and deletes the staging
//!   key; abort deletes the staging key. Uploading straight to the final key and deleting it
//!   on a hash mismatch would race with a client's immediate retry of the same key.
//! - **Large objects and unknown sizes** are multipart uploads to the final key: parts are
//!   invisible until `commit` completes the upload, abort (or dropping the writer) aborts it.
//!   The upload is created lazily, so an unknown-size body that ends within the first part is
//!   sent as one PutObject with its hash. The hash is unknown when a multipart upload starts,
//!   so after completing it the object's metadata is rewritten by a server-side self-copy
//!   (skipped above the 5 GiB copy limit, and when the sender declared the hash up front,
//!   see [`Storage::writer_with_hash`]).
//!
//! # Memory bound
//! A multipart writer holds the part it is filling plus at most [`PARTS_IN_FLIGHT`] parts being
//! uploaded: `(PARTS_IN_FLIGHT + 1) × part size` = 32 MiB per upload with 8 MiB parts (known
//! sizes up to 80 GiB; larger ones use bigger parts to stay within 10,000 parts), 64 MiB for
//! unknown sizes (16 MiB parts, up to 160 GiB). A streamed PutObject holds a few chunks.
//! Reads stream with no buffering beyond the HTTP client's.
//!
//! # Errors
//! Throttling, 5xx, timeouts and connection failures are retried by the SDK (standard mode,
//! [`MAX_ATTEMPTS`] attempts, exponential backoff). What remains becomes an [`Error`] with
//! [`Origin::Storage`] whose message names the S3 error code.
//!
//! # Timeouts
//! Every attempt waits at most `[storage] s3_attempt_timeout_secs` for its answer: a backend
//! that takes a request and never answers would otherwise hold its caller for good (a delete
//! left DELETING, an order holding its name). Two requests are bounded otherwise: the
//! streamed PutObject, fed at its sender's pace (see [`unbounded`]), fails when S3 takes no
//! chunk of its body, or gives no answer once the body is complete, within the bound; the
//! server-side CopyObject, which may copy up to 5 GiB, gets ten times the bound (see
//! [`for_copies`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
    MetadataDirective,
};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::{ByteStream, ListPage, ObjectWriter, Storage, StoredObject};
use crate::config::StorageConfig;
use crate::error::{Error, Kind, Origin, Result};

/// Known sizes up to this go in one streamed PutObject; larger ones are multipart uploads.
pub const SINGLE_PUT_MAX: u64 = 16 * MIB;
/// Smallest part size (S3's minimum is 5 MiB).
pub const PART_SIZE_MIN: u64 = 8 * MIB;
/// Part size when the total size is unknown.
pub const PART_SIZE_UNKNOWN: u64 = 16 * MIB;
/// Parts uploading concurrently per upload, besides the one being filled.
pub const PARTS_IN_FLIGHT: usize = 3;
/// Attempts per S3 request (first try included).
pub const MAX_ATTEMPTS: u32 = 4;
/// User-metadata key of the verified SHA-256 (sent as `x-amz-meta-mirrorgate-sha256`).
pub const HASH_METADATA: &str = "mirrorgate-sha256";
/// Where staged single-request uploads wait for `commit`.
pub const STAGING_PREFIX: &str = "~mirrorgate-staging/";

const MIB: u64 = 1024 * 1024;
const MAX_PARTS: u64 = 10_000;
/// CopyObject's limit: larger multipart objects keep their bytes but get no hash metadata.
const COPY_MAX: u64 = 5 * 1024 * MIB;
/// Chunks queued between the request handler and a streamed PutObject.
const BODY_QUEUE: usize = 4;
/// Staged uploads and multipart uploads older than this are leftovers of a crash.
const ABANDONED_AFTER: Duration = Duration::from_secs(24 * 3600);

pub struct S3Storage {
    client: Client,
    bucket_prefix: String,
    region: String,
}

impl S3Storage {
    /// Builds the client from `[storage]`; credentials and region fall back to the standard AWS
    /// environment and profile chain.
    pub async fn open(config: &StorageConfig) -> anyhow::Result<Self> {
        let sdk_config = sdk_loader(config)?.load().await;
        let region = sdk_config
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        let s3_config = aws_sdk_s3::config::Builder::from(&sdk_config)
            .region(Region::new(region.clone()))
            .force_path_style(config.force_path_style)
            .build();
        tracing::info!(
            endpoint = config.endpoint.as_deref().unwrap_or("(AWS default)"),
            region = %region,
            bucket_prefix = %config.bucket_prefix,
            "S3 storage"
        );
        Ok(Self {
            client: Client::from_conf(s3_config),
            bucket_prefix: config.bucket_prefix.clone(),
            region,
        })
    }

    /// The backend bucket that holds a mirrorgate bucket.
    pub fn backend_bucket(&self, bucket: &str) -> String {
        format!("{}{bucket}", self.bucket_prefix)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn target(&self, bucket: &str, key: &str) -> Target {
        Target {
            client: self.client.clone(),
            bucket: self.backend_bucket(bucket),
            key: key.to_owned(),
        }
    }

    fn location(&self) -> Option<CreateBucketConfiguration> {
        // us-east-1 is the one region that must not be named.
        (self.region != "us-east-1").then(|| {
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                .build()
        })
    }

    async fn bucket_exists(&self, backend: &str) -> Result<bool> {
        match self.client.head_bucket().bucket(backend).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(s3_error("HeadBucket", backend, e)),
        }
    }

    /// Our backend buckets (best effort: listing buckets may be forbidden).
    async fn own_buckets(&self) -> Result<Vec<String>> {
        let out = self
            .client
            .list_buckets()
            .send()
            .await
            .map_err(|e| s3_error("ListBuckets", "", e))?;
        Ok(out
            .buckets()
            .iter()
            .filter_map(|b| b.name())
            .filter(|n| n.starts_with(&self.bucket_prefix))
            .map(str::to_owned)
            .collect())
    }

    /// Aborts multipart uploads and deletes staged uploads abandoned by a crash. Uploads of
    /// other processes sharing the backend are younger than [`ABANDONED_AFTER`].
    async fn sweep_bucket(&self, backend: &str) -> usize {
        let cutoff =
            aws_sdk_s3::primitives::DateTime::from(std::time::SystemTime::now() - ABANDONED_AFTER);
        let mut removed = 0;
        match self
            .client
            .list_multipart_uploads()
            .bucket(backend)
            .send()
            .await
        {
            Ok(out) => {
                for u in out.uploads() {
                    let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                        continue;
                    };
                    if u.initiated().is_some_and(|t| t.secs() < cutoff.secs()) {
                        abort_upload(&self.client, backend, key, id).await;
                        removed += 1;
                    }
                }
            }
            Err(e) => tracing::debug!(
                "cannot list multipart uploads of {backend}: {}",
                s3_error("ListMultipartUploads", backend, e)
            ),
        }
        match self
            .client
            .list_objects_v2()
            .bucket(backend)
            .prefix(STAGING_PREFIX)
            .send()
            .await
        {
            Ok(out) => {
                for o in out.contents() {
                    let stale = o.last_modified().is_some_and(|t| t.secs() < cutoff.secs());
                    if let (true, Some(key)) = (stale, o.key()) {
                        delete_quietly(&self.client, backend, key).await;
                        removed += 1;
                    }
                }
            }
            Err(e) => tracing::debug!(
                "cannot list staged uploads of {backend}: {}",
                s3_error("ListObjectsV2", backend, e)
            ),
        }
        removed
    }
}

/// The AWS config loader: explicit settings win, the standard chain fills the rest.
fn sdk_loader(config: &StorageConfig) -> anyhow::Result<aws_config::ConfigLoader> {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        // Third-party S3 servers reject the SDK's default CRC trailers; we verify SHA-256 ourselves.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(5)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(config.s3_attempt_timeout_secs))
                .build(),
        )
        // Upload bodies move at the pace of our own client; a slow client is not a stalled S3.
        .stalled_stream_protection(
            StalledStreamProtectionConfig::enabled()
                .upload_enabled(false)
                .grace_period(Duration::from_secs(20))
                .build(),
        );
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    match (&config.access_key_id, &config.secret_access_key) {
        (Some(id), Some(secret)) => {
            let creds = Credentials::new(id, secret, None, None, "mirrorgate-config");
            loader = loader.credentials_provider(creds);
        }
        (None, None) => {}
        _ => anyhow::bail!(
            "storage.access_key_id and storage.secret_access_key go together \
             (or leave both out to use the AWS environment and profile chain)"
        ),
    }
    Ok(loader)
}

#[async_trait]
impl Storage for S3Storage {
    async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let backend = self.backend_bucket(bucket);
        if self.bucket_exists(&backend).await? {
            return Ok(());
        }
        let created = self
            .client
            .create_bucket()
            .bucket(&backend)
            .set_create_bucket_configuration(self.location())
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_bucket_already_owned_by_you()) =>
            {
                Ok(())
            }
            Err(e) => Err(s3_error("CreateBucket", &backend, e)),
        }
    }

    async fn has_bucket(&self, bucket: &str) -> Result<bool> {
        self.bucket_exists(&self.backend_bucket(bucket)).await
    }

    async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        let backend = self.backend_bucket(bucket);
        match self.client.delete_bucket().bucket(&backend).send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.code() {
                Some("NoSuchBucket") => Ok(()),
                // Objects mirrorgate does not know about (not imported): never delete those.
                Some("BucketNotEmpty") => {
                    tracing::warn!("backend bucket {backend} kept: it holds objects mirrorgate does not manage");
                    Ok(())
                }
                _ => Err(s3_error("DeleteBucket", &backend, e)),
            },
        }
    }

    async fn writer(
        &self,
        bucket: &str,
        key: &str,
        size_hint: Option<u64>,
    ) -> Result<Box<dyn ObjectWriter>> {
        self.writer_with_hash(bucket, key, size_hint, None).await
    }

    async fn writer_with_hash(
        &self,
        bucket: &str,
        key: &str,
        size_hint: Option<u64>,
        declared_sha256: Option<&str>,
    ) -> Result<Box<dyn ObjectWriter>> {
        let target = self.target(bucket, key);
        let declared = declared_sha256.map(str::to_owned);
        Ok(match size_hint {
            Some(size) if size <= SINGLE_PUT_MAX => Box::new(StagedPutWriter::start(target, size)),
            _ => Box::new(MultipartWriter::new(
                target,
                part_size(size_hint)?,
                declared,
            )),
        })
    }

    async fn read(&self, bucket: &str, key: &str) -> Result<ByteStream> {
        let target = self.target(bucket, key);
        let out = match target
            .client
            .get_object()
            .bucket(&target.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(Error::storage(format!(
                    "object {bucket}/{key} missing from storage (S3 NoSuchKey)"
                )))
            }
            Err(e) => return Err(s3_error("GetObject", &target.describe(), e)),
        };
        Ok(body_stream(out.body, target.describe()))
    }

    async fn read_range(
        &self,
        bucket: &str,
        key: &str,
        start: u64,
        len: u64,
    ) -> Result<ByteStream> {
        if len == 0 {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let target = self.target(bucket, key);
        let out = match target
            .client
            .get_object()
            .bucket(&target.bucket)
            .key(key)
            .range(format!("bytes={start}-{}", start + len - 1))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(Error::storage(format!(
                    "object {bucket}/{key} missing from storage (S3 NoSuchKey)"
                )))
            }
            Err(e) => return Err(s3_error("GetObject", &target.describe(), e)),
        };
        Ok(body_stream(out.body, target.describe()))
    }

    async fn stat(&self, bucket: &str, key: &str) -> Result<Option<u64>> {
        Ok(self.describe(bucket, key).await?.map(|o| o.size))
    }

    async fn describe(&self, bucket: &str, key: &str) -> Result<Option<StoredObject>> {
        let target = self.target(bucket, key);
        let head = target
            .client
            .head_object()
            .bucket(&target.bucket)
            .key(key)
            .send()
            .await;
        match head {
            Ok(out) => Ok(Some(StoredObject {
                key: key.to_owned(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                hash: out.metadata().and_then(hash_from_metadata),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(s3_error("HeadObject", &target.describe(), e)),
        }
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        let target = self.target(bucket, key);
        match target
            .client
            .delete_object()
            .bucket(&target.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchKey") => Ok(()),
            Err(e) => Err(s3_error("DeleteObject", &target.describe(), e)),
        }
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        continuation: Option<&str>,
    ) -> Result<ListPage> {
        let backend = self.backend_bucket(bucket);
        let out = self
            .client
            .list_objects_v2()
            .bucket(&backend)
            .prefix(prefix)
            .set_continuation_token(continuation.map(str::to_owned))
            .send()
            .await
            .map_err(|e| s3_error("ListObjectsV2", &backend, e))?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                let key = o.key()?;
                (!key.starts_with(STAGING_PREFIX)).then(|| StoredObject {
                    key: key.to_owned(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    hash: None,
                })
            })
            .collect();
        let next = if out.is_truncated() == Some(true) {
            out.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok(ListPage { objects, next })
    }

    async fn sweep(&self) -> Result<usize> {
        let buckets = match self.own_buckets().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("S3 startup sweep skipped: {e}");
                return Ok(0);
            }
        };
        let mut removed = 0;
        for backend in buckets {
            removed += self.sweep_bucket(&backend).await;
        }
        Ok(removed)
    }
}

/// Part size for an upload: at least [`PART_SIZE_MIN`], large enough to stay within 10,000
/// parts, rounded up to whole MiB.
pub fn part_size(size_hint: Option<u64>) -> Result<usize> {
    let size = match size_hint {
        None => PART_SIZE_UNKNOWN,
        Some(total) => total.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB,
    }
    .max(PART_SIZE_MIN);
    if size > 5 * 1024 * MIB {
        return Err(Error::new(
            Kind::PayloadTooLarge,
            Origin::Client,
            "object larger than S3's 48.8 TiB limit",
        ));
    }
    Ok(size as usize)
}

/// Our hash from an object's user metadata; `sha256` is accepted too (other CCS tools).
fn hash_from_metadata(metadata: &HashMap<String, String>) -> Option<String> {
    [HASH_METADATA, "sha256"]
        .iter()
        .find_map(|k| metadata.get(*k))
        .and_then(|h| crate::model::hash::normalize(h))
}

fn hash_metadata(sha256: &str) -> HashMap<String, String> {
    HashMap::from([(HASH_METADATA.to_owned(), sha256.to_owned())])
}

/// Adapts an S3 response body to our stream type.
fn body_stream(body: S3Body, what: String) -> ByteStream {
    Box::pin(futures::stream::unfold(
        Some((body, what)),
        |state| async move {
            let (mut body, what) = state?;
            match body.next().await? {
                Ok(chunk) => Some((Ok(chunk), Some((body, what)))),
                Err(e) => Some((
                    Err(Error::new(
                        Kind::BadGateway,
                        Origin::Storage,
                        format!("S3 GetObject {what}: body interrupted: {e}"),
                    )),
                    None,
                )),
            }
        },
    ))
}

/// Where an object goes: client, backend bucket, key.
#[derive(Clone)]
struct Target {
    client: Client,
    bucket: String,
    key: String,
}

impl Target {
    fn describe(&self) -> String {
        format!("{}/{}", self.bucket, self.key)
    }

    /// Server-side copy onto this target with `metadata` (REPLACE).
    async fn copy_from(&self, source_key: &str, metadata: HashMap<String, String>) -> Result<()> {
        let attempt = for_copies(self.client.config());
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .copy_source(format!("{}/{}", self.bucket, encode_key(source_key)))
            .metadata_directive(MetadataDirective::Replace)
            .set_metadata(Some(metadata))
            .customize()
            .config_override(attempt)
            .send()
            .await
            .map_err(|e| s3_error("CopyObject", &self.describe(), e))?;
        Ok(())
    }
}

/// The error of a streamed upload that made no progress for `bound`.
fn stalled(what: &str, bound: Duration) -> Error {
    Error::new(
        Kind::GatewayTimeout,
        Origin::Storage,
        format!("S3 {what}: no progress for {} s", bound.as_secs()),
    )
}

/// A request whose attempt is not bounded in time (a body fed at its sender's pace: a slow
/// client is not a stalled S3).
fn unbounded() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::new().timeout_config(
        TimeoutConfig::builder()
            .disable_operation_attempt_timeout()
            .build(),
    )
}

/// The configured attempt bound (`[storage] s3_attempt_timeout_secs`).
fn attempt_bound(client: &Client) -> Duration {
    client
        .config()
        .timeout_config()
        .and_then(|t| t.operation_attempt_timeout())
        .unwrap_or(Duration::from_secs(30))
}

/// The attempt bound of a server-side copy: ten times the configured one.
fn for_copies(config: &aws_sdk_s3::Config) -> aws_sdk_s3::config::Builder {
    let bound = config
        .timeout_config()
        .and_then(|t| t.operation_attempt_timeout())
        .map_or(Duration::from_secs(300), |d| d * 10);
    aws_sdk_s3::config::Builder::new().timeout_config(
        TimeoutConfig::builder()
            .operation_attempt_timeout(bound)
            .build(),
    )
}

async fn delete_quietly(client: &Client, bucket: &str, key: &str) {
    if let Err(e) = client.delete_object().bucket(bucket).key(key).send().await {
        let e = s3_error("DeleteObject", &format!("{bucket}/{key}"), e);
        tracing::warn!("leftover kept until the next sweep: {e}");
    }
}

async fn abort_upload(client: &Client, bucket: &str, key: &str, upload_id: &str) {
    let aborted = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
    if let Err(e) = aborted {
        let e = s3_error("AbortMultipartUpload", &format!("{bucket}/{key}"), e);
        tracing::warn!("multipart upload {upload_id} kept until the next sweep: {e}");
    }
}

/// Percent-encodes a key for `x-amz-copy-source` (everything but unreserved characters and `/`).
fn encode_key(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `cleanup` now, or in the background when dropped outside an `abort`.
fn spawn_cleanup(cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(cleanup);
    }
}

// ---- small objects: one streamed PutObject to a staging key ----------------------------------

struct StagedPutWriter {
    target: Target,
    staging_key: String,
    body: Option<mpsc::Sender<Bytes>>,
    upload: Option<JoinHandle<Result<()>>>,
}

impl StagedPutWriter {
    /// Starts the PutObject at once; its body is fed by `write`.
    fn start(target: Target, size: u64) -> Self {
        let staging_key = format!("{STAGING_PREFIX}{}", uuid::Uuid::new_v4());
        let (tx, rx) = mpsc::channel(BODY_QUEUE);
        let body = S3Body::from_body_1_x(ChannelBody {
            rx,
            remaining: size,
        });
        let request = target
            .client
            .put_object()
            .bucket(&target.bucket)
            .key(&staging_key)
            .content_length(size as i64)
            .body(body)
            .customize()
            .config_override(unbounded());
        let what = format!("{}/{staging_key}", target.bucket);
        let upload = tokio::spawn(async move {
            request
                .send()
                .await
                .map(|_| ())
                .map_err(|e| s3_error("PutObject", &what, e))
        });
        Self {
            target,
            staging_key,
            body: Some(tx),
            upload: Some(upload),
        }
    }

    /// Waits for the PutObject to end (its body is complete or cut short by now), at most
    /// the attempt bound: a backend that took the whole body and never answers fails it.
    async fn finish_upload(upload: JoinHandle<Result<()>>, bound: Duration) -> Result<()> {
        let abort = upload.abort_handle();
        match tokio::time::timeout(bound, upload).await {
            Ok(ended) => ended.map_err(|e| Error::internal(format!("S3 upload task: {e}")))?,
            Err(_) => {
                abort.abort();
                Err(stalled("PutObject answer", bound))
            }
        }
    }

    /// Ends the body early (so the PutObject fails) and deletes the staging key if it was
    /// complete anyway.
    fn cleanup(&mut self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        self.body.take();
        let upload = self.upload.take()?;
        let (client, bucket, key) = (
            self.target.client.clone(),
            self.target.bucket.clone(),
            self.staging_key.clone(),
        );
        let bound = attempt_bound(&client);
        Some(async move {
            if Self::finish_upload(upload, bound).await.is_ok() {
                delete_quietly(&client, &bucket, &key).await;
            }
        })
    }
}

#[async_trait]
impl ObjectWriter for StagedPutWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let body = self
            .body
            .as_ref()
            .ok_or_else(|| Error::internal("writer already closed"))?;
        let bound = attempt_bound(&self.target.client);
        match tokio::time::timeout(bound, body.send(chunk)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => {}
            // S3 stopped taking the body: the request is given up (dropped by `cleanup`).
            Err(_) => return Err(stalled("PutObject body", bound)),
        }
        // The request ended before its body: report why.
        self.body.take();
        let upload = self
            .upload
            .take()
            .ok_or_else(|| Error::internal("writer already closed"))?;
        Self::finish_upload(upload, bound).await?;
        Err(Error::storage(format!(
            "S3 PutObject {}: request ended before its body",
            self.target.describe()
        )))
    }

    async fn commit(mut self: Box<Self>, sha256: &str) -> Result<()> {
        self.body.take();
        let upload = self
            .upload
            .take()
            .ok_or_else(|| Error::internal("writer already closed"))?;
        Self::finish_upload(upload, attempt_bound(&self.target.client)).await?;
        let copied = self
            .target
            .copy_from(&self.staging_key, hash_metadata(sha256))
            .await;
        delete_quietly(&self.target.client, &self.target.bucket, &self.staging_key).await;
        copied
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(cleanup) = self.cleanup() {
            cleanup.await;
        }
    }
}

impl Drop for StagedPutWriter {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup() {
            spawn_cleanup(cleanup);
        }
    }
}

/// A request body fed through a channel, with its exact length (sent as Content-Length, so a
/// body cut short fails the request instead of storing a truncated object).
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    remaining: u64,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx).map(|chunk| {
            chunk.map(|c| {
                self.remaining = self.remaining.saturating_sub(c.len() as u64);
                Ok(http_body::Frame::data(c))
            })
        })
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

// ---- large objects and unknown sizes: multipart upload ----------------------------------------

struct MultipartWriter {
    target: Target,
    part_size: usize,
    /// Hash the sender declared: recorded at creation, saving the self-copy when it holds.
    declared: Option<String>,
    filling: BytesMut,
    upload_id: Option<String>,
    next_part: i32,
    size: u64,
    in_flight: JoinSet<Result<CompletedPart>>,
    uploaded: Vec<CompletedPart>,
    /// Committed or aborted: nothing left for `Drop`.
    closed: bool,
}

impl MultipartWriter {
    fn new(target: Target, part_size: usize, declared: Option<String>) -> Self {
        Self {
            target,
            part_size,
            declared,
            filling: BytesMut::new(),
            upload_id: None,
            next_part: 1,
            size: 0,
            in_flight: JoinSet::new(),
            uploaded: Vec::new(),
            closed: false,
        }
    }

    async fn upload_id(&mut self) -> Result<String> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let out = self
            .target
            .client
            .create_multipart_upload()
            .bucket(&self.target.bucket)
            .key(&self.target.key)
            .set_metadata(self.declared.as_deref().map(hash_metadata))
            .send()
            .await
            .map_err(|e| s3_error("CreateMultipartUpload", &self.target.describe(), e))?;
        let id = out
            .upload_id()
            .ok_or_else(|| Error::storage("S3 CreateMultipartUpload answered no upload id"))?
            .to_owned();
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    /// Starts uploading the filled buffer, after waiting for room in the window.
    async fn ship_part(&mut self) -> Result<()> {
        let upload_id = self.upload_id().await?;
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.collect_one().await?;
        }
        if self.next_part as u64 > MAX_PARTS {
            return Err(Error::new(
                Kind::PayloadTooLarge,
                Origin::Client,
                "object exceeds 10,000 multipart parts",
            ));
        }
        let part = std::mem::take(&mut self.filling).freeze();
        let number = self.next_part;
        self.next_part += 1;
        let target = self.target.clone();
        self.in_flight
            .spawn(upload_part(target, upload_id, number, part));
        Ok(())
    }

    async fn collect_one(&mut self) -> Result<()> {
        match self.in_flight.join_next().await {
            Some(Ok(part)) => {
                self.uploaded.push(part?);
                Ok(())
            }
            Some(Err(e)) => Err(Error::internal(format!("S3 part upload task: {e}"))),
            None => Ok(()),
        }
    }

    /// A body that ended within the first part: one PutObject, hash included.
    async fn put_whole(&mut self, sha256: &str) -> Result<()> {
        let body = std::mem::take(&mut self.filling).freeze();
        self.target
            .client
            .put_object()
            .bucket(&self.target.bucket)
            .key(&self.target.key)
            .content_length(body.len() as i64)
            .body(S3Body::from(body))
            .set_metadata(Some(hash_metadata(sha256)))
            .send()
            .await
            .map_err(|e| s3_error("PutObject", &self.target.describe(), e))?;
        Ok(())
    }

    async fn complete(&mut self, upload_id: &str) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.collect_one().await?;
        }
        let mut parts = std::mem::take(&mut self.uploaded);
        parts.sort_by_key(|p| p.part_number());
        self.target
            .client
            .complete_multipart_upload()
            .bucket(&self.target.bucket)
            .key(&self.target.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error("CompleteMultipartUpload", &self.target.describe(), e))?;
        Ok(())
    }

    /// Records the verified hash in the metadata by a self-copy (best effort: the hash is also
    /// in the metadata store; import recomputes it when missing).
    async fn seal(&self, sha256: &str) {
        if self.declared.as_deref() == Some(sha256) {
            return;
        }
        if self.size > COPY_MAX {
            tracing::debug!(object = %self.target.describe(), "too large for a metadata self-copy");
            return;
        }
        if let Err(e) = self
            .target
            .copy_from(&self.target.key, hash_metadata(sha256))
            .await
        {
            tracing::warn!("object stored without its hash in the S3 metadata: {e}");
        }
    }

    /// Lets in-flight parts finish (so none lands after the abort), then aborts the upload.
    fn cleanup(&mut self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        self.closed = true;
        let upload_id = self.upload_id.take()?;
        let mut in_flight = std::mem::take(&mut self.in_flight);
        let target = self.target.clone();
        Some(async move {
            while in_flight.join_next().await.is_some() {}
            abort_upload(&target.client, &target.bucket, &target.key, &upload_id).await;
        })
    }
}

async fn upload_part(
    target: Target,
    upload_id: String,
    number: i32,
    part: Bytes,
) -> Result<CompletedPart> {
    let out = target
        .client
        .upload_part()
        .bucket(&target.bucket)
        .key(&target.key)
        .upload_id(upload_id)
        .part_number(number)
        .content_length(part.len() as i64)
        .body(S3Body::from(part))
        .send()
        .await
        .map_err(|e| s3_error("UploadPart", &target.describe(), e))?;
    Ok(CompletedPart::builder()
        .part_number(number)
        .set_e_tag(out.e_tag().map(str::to_owned))
        .build())
}

#[async_trait]
impl ObjectWriter for MultipartWriter {
    async fn write(&mut self, mut chunk: Bytes) -> Result<()> {
        self.size += chunk.len() as u64;
        while !chunk.is_empty() {
            if self.filling.capacity() == 0 {
                self.filling.reserve(self.part_size);
            }
            let room = self.part_size - self.filling.len();
            let taken = chunk.split_to(room.min(chunk.len()));
            self.filling.extend_from_slice(&taken);
            if self.filling.len() == self.part_size {
                self.ship_part().await?;
            }
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>, sha256: &str) -> Result<()> {
        let Some(upload_id) = self.upload_id.clone() else {
            self.closed = true;
            return self.put_whole(sha256).await;
        };
        if !self.filling.is_empty() {
            self.ship_part().await?;
        }
        self.complete(&upload_id).await?;
        self.closed = true;
        self.seal(sha256).await;
        Ok(())
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(cleanup) = self.cleanup() {
            cleanup.await;
        }
    }
}

impl Drop for MultipartWriter {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        if let Some(cleanup) = self.cleanup() {
            spawn_cleanup(cleanup);
        }
    }
}

// ---- errors -------------------------------------------------------------------------------------

/// Turns what the SDK gave up on into a mirrorgate error naming the S3 operation and code.
fn s3_error<E>(op: &str, what: &str, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let at = if what.is_empty() {
        op.to_owned()
    } else {
        format!("{op} {what}")
    };
    match &err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().unwrap_or(match status {
                404 => "NotFound",
                403 => "AccessDenied",
                _ => "Unknown",
            });
            let detail = ctx.err().message().unwrap_or("");
            service_error(&at, status, code, detail)
        }
        SdkError::TimeoutError(_) => Error::new(
            Kind::GatewayTimeout,
            Origin::Storage,
            format!("S3 {at}: timed out after {MAX_ATTEMPTS} attempts"),
        ),
        SdkError::DispatchFailure(_) => Error::new(
            Kind::Unavailable,
            Origin::Storage,
            format!(
                "S3 {at}: cannot reach the S3 endpoint after {MAX_ATTEMPTS} attempts: {}",
                DisplayErrorContext(&err)
            ),
        ),
        SdkError::ResponseError(_) => Error::new(
            Kind::BadGateway,
            Origin::Storage,
            format!(
                "S3 {at}: unreadable response: {}",
                DisplayErrorContext(&err)
            ),
        ),
        _ => Error::storage(format!("S3 {at}: {}", DisplayErrorContext(&err))),
    }
}

fn service_error(at: &str, status: u16, code: &str, detail: &str) -> Error {
    let hint = match code {
        "NoSuchBucket" => " (the backend bucket does not exist: check storage.bucket_prefix)",
        "AccessDenied" | "AllAccessDisabled" => " (check the S3 credentials and their permissions)",
        "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken" | "InvalidToken" => {
            " (check storage.access_key_id / storage.secret_access_key or the AWS credential chain)"
        }
        _ => "",
    };
    let kind = match (code, status) {
        ("SlowDown", _) | (_, 503) => Kind::Unavailable,
        (_, 500..=599) => Kind::BadGateway,
        _ => Kind::Internal,
    };
    let message = format!("S3 {at}: {code}{hint}: {detail}");
    Error::new(kind, Origin::Storage, message.trim_end_matches(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_stay_within_limits() {
        assert_eq!(part_size(Some(1 << 30)).unwrap() as u64, PART_SIZE_MIN);
        assert_eq!(part_size(None).unwrap() as u64, PART_SIZE_UNKNOWN);
        let huge = 200 * 1024 * MIB;
        let p = part_size(Some(huge)).unwrap() as u64;
        assert!(huge.div_ceil(p) <= MAX_PARTS && p.is_multiple_of(MIB));
    }

    #[test]
    fn permanent_errors_name_the_code() {
        let e = service_error("PutObject b/k", 403, "InvalidAccessKeyId", "no such key id");
        assert_eq!(e.origin, Origin::Storage);
        assert!(e.message.contains("InvalidAccessKeyId"), "{}", e.message);
        assert!(e.message.contains("access_key_id"), "{}", e.message);
        let e = service_error("PutObject b/k", 503, "SlowDown", "");
        assert_eq!(e.kind, Kind::Unavailable);
        assert!(e.message.ends_with("SlowDown"), "{}", e.message);
    }

    #[test]
    fn example_config_parses() {
        let c = crate::Config::parse(include_str!("../../config/s3-site.toml")).unwrap();
        assert_eq!(c.storage.backend, "s3");
        assert!(c.storage.force_path_style);
    }

    #[test]
    fn copy_source_keys_are_encoded() {
        assert_eq!(encode_key("a/b c+d~"), "a/b%20c%2Bd~");
    }

    #[test]
    fn hash_is_read_from_either_metadata_key() {
        let h = crate::model::hash::of(b"x");
        let ours = HashMap::from([(HASH_METADATA.to_owned(), h.clone())]);
        let theirs = HashMap::from([("sha256".to_owned(), h.to_uppercase())]);
        assert_eq!(hash_from_metadata(&ours), Some(h.clone()));
        assert_eq!(hash_from_metadata(&theirs), Some(h));
        assert_eq!(hash_from_metadata(&HashMap::new()), None);
    }
}
