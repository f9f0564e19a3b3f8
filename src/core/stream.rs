//! Streaming adapters on the data path. Chunks are `Bytes` passed through bounded channels;
//! nothing buffers a whole object.
//!
//! - [`Verify`] hashes while it forwards and holds the last chunk back until the hash is checked,
//!   so a corrupt object never reaches a client as a complete-looking body.
//! - [`zstd_encode`] / [`zstd_decode`] run the codec on a blocking thread, fed and drained
//!   through bounded channels, so compression never stalls the reactor and backpressure holds.
//! - [`file_stream`] reads a file of this site's disk (a staged pull) in 1 MiB chunks.
//! - [`zstd_decode_bounded`] and [`limit_size`] bound what an upload may cost: the decoder
//!   refuses frames whose window is larger than configured, and a body larger than the
//!   largest object is cut off.
//!
//! Memory of one compressed upload, at most: `CODEC_DEPTH` + 2 request frames (queued for the
//! decoder, one being decoded, one waiting to be queued; hyper hands out frames of at most
//! about 408 KiB: 2.4 MiB), `CODEC_DEPTH` + 2 decoded chunks of [`CODEC_CHUNK`] (queued for
//! storage, one being filled, one being written: 1.5 MiB), and the decoder's window
//! (≤ `[limits] zstd_window_max_bytes`, 8 MiB by default) with its 128 KiB block buffer:
//! about 12 MiB with the defaults, whatever the size of the object.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream_shim::ReceiverStream;
use zstd::stream::raw::{DParameter, Decoder, Encoder, InBuffer, Operation, OutBuffer};

use crate::error::{Error, Kind, Origin, Result};
use crate::model::blocks::BlockHashes;
use crate::model::hash;
use crate::storage::ByteStream;

/// zstd output chunk size, and the depth of each codec channel.
pub const CODEC_CHUNK: usize = 256 * 1024;
pub const CODEC_DEPTH: usize = 4;
/// Level used on the wire: fast, the link is the bottleneck rarely enough.
pub const ZSTD_LEVEL: i32 = 1;

/// Called once when verification fails, with a description of the mismatch.
pub type OnMismatch = Box<dyn FnOnce(&str) + Send>;

/// Forwards a stream while hashing it; the final chunk is released only if size and SHA-256
/// match what the metadata says. In compressed mode the stream is zstd and passes through as
/// is, while a decompressed copy of each chunk is hashed (size and hash describe the
/// uncompressed bytes).
pub struct Verify {
    inner: ByteStream,
    hasher: Sha256,
    decoder: Option<(Decoder<'static>, Vec<u8>)>,
    held: Option<Bytes>,
    seen: u64,
    expected_hash: String,
    expected_size: u64,
    on_mismatch: Option<OnMismatch>,
    done: bool,
}

impl Verify {
    pub fn new(
        inner: ByteStream,
        expected_hash: &str,
        expected_size: u64,
        on_mismatch: OnMismatch,
    ) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            decoder: None,
            held: None,
            seen: 0,
            expected_hash: expected_hash.to_owned(),
            expected_size,
            on_mismatch: Some(on_mismatch),
            done: false,
        }
    }

    /// Verifies a zstd stream that is forwarded compressed.
    pub fn compressed(
        inner: ByteStream,
        expected_hash: &str,
        expected_size: u64,
        on_mismatch: OnMismatch,
    ) -> Result<Self> {
        let decoder = Decoder::new().map_err(|e| Error::internal(format!("zstd: {e}")))?;
        let mut v = Self::new(inner, expected_hash, expected_size, on_mismatch);
        v.decoder = Some((decoder, vec![0u8; CODEC_CHUNK]));
        Ok(v)
    }

    /// Hashes a chunk (its decompressed form in compressed mode).
    fn absorb(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        let Some((decoder, scratch)) = &mut self.decoder else {
            self.hasher.update(chunk);
            self.seen += chunk.len() as u64;
            return Ok(());
        };
        let mut src = InBuffer::around(chunk);
        loop {
            let mut dst = OutBuffer::around(&mut scratch[..]);
            decoder.run(&mut src, &mut dst)?;
            let n = dst.pos();
            self.hasher.update(&scratch[..n]);
            self.seen += n as u64;
            if src.pos() >= chunk.len() && n < scratch.len() {
                return Ok(());
            }
        }
    }

    fn fail(&mut self, what: String) -> Error {
        self.done = true;
        self.held = None;
        if let Some(f) = self.on_mismatch.take() {
            f(&what);
        }
        Error::new(Kind::Internal, Origin::Storage, what)
    }

    fn finish(&mut self) -> Option<Result<Bytes>> {
        self.done = true;
        let actual = hash::encode(&std::mem::take(&mut self.hasher).finalize());
        if self.seen != self.expected_size {
            let what = format!(
                "size mismatch: {} bytes, expected {}",
                self.seen, self.expected_size
            );
            return Some(Err(self.fail(what)));
        }
        if actual != self.expected_hash {
            let what = format!(
                "hash mismatch: bytes hash {actual}, expected {}",
                self.expected_hash
            );
            return Some(Err(self.fail(what)));
        }
        self.held.take().map(Ok)
    }
}

impl Stream for Verify {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match self.inner.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Err(e) = self.absorb(&chunk) {
                        return Poll::Ready(Some(Err(
                            self.fail(format!("corrupt zstd stream: {e}"))
                        )));
                    }
                    if self.seen > self.expected_size {
                        let what = format!(
                            "size mismatch: more than the expected {} bytes",
                            self.expected_size
                        );
                        return Poll::Ready(Some(Err(self.fail(what))));
                    }
                    // Only a chunk that completes the expected size can end a good stream:
                    // that one is held until the end proves size and hash; earlier ones pass
                    // at once (a stream ending before them fails on its size).
                    if self.seen < self.expected_size && self.held.is_none() {
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    if let Some(previous) = self.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => return Poll::Ready(self.finish()),
            }
        }
    }
}

/// Chunks a [`verify_aside`] stream may run ahead of its hashing thread.
const ASIDE_DEPTH: usize = 2;

/// [`Verify`] (uncompressed) with the SHA-256 computed on a blocking thread, in parallel with
/// the reading and the sending of the stream: each chunk passes on at once and a shared
/// reference to it (no copy) is queued for the hashing thread, at most [`ASIDE_DEPTH`] ahead.
/// The same guarantee as [`Verify`]: the chunk that completes the size is held until the
/// hashing thread has the digest of every byte, so a corrupt object never completes.
pub fn verify_aside(
    inner: ByteStream,
    expected_hash: &str,
    expected_size: u64,
    on_mismatch: OnMismatch,
) -> ByteStream {
    let (tx, mut rx) = mpsc::channel::<Bytes>(ASIDE_DEPTH);
    let hashing = tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
        }
        <[u8; 32]>::from(hasher.finalize())
    });
    let aside = Aside {
        inner,
        tx: Some(tx),
        hashing: Some(hashing),
        held: None,
        seen: 0,
        expected_hash: expected_hash.to_owned(),
        expected_size,
        on_mismatch: Some(on_mismatch),
        done: false,
    };
    Box::pin(futures::stream::unfold(aside, |mut aside| async move {
        let item = aside.next_item().await?;
        Some((item, aside))
    }))
}

struct Aside {
    inner: ByteStream,
    tx: Option<mpsc::Sender<Bytes>>,
    hashing: Option<tokio::task::JoinHandle<[u8; 32]>>,
    held: Option<Bytes>,
    seen: u64,
    expected_hash: String,
    expected_size: u64,
    on_mismatch: Option<OnMismatch>,
    done: bool,
}

impl Aside {
    async fn next_item(&mut self) -> Option<Result<Bytes>> {
        loop {
            if self.done {
                return None;
            }
            match self.inner.next().await {
                Some(Ok(chunk)) => {
                    self.seen += chunk.len() as u64;
                    if self.seen > self.expected_size {
                        let what = format!(
                            "size mismatch: more than the expected {} bytes",
                            self.expected_size
                        );
                        return Some(Err(self.fail(what)));
                    }
                    let queued = match &self.tx {
                        Some(tx) => tx.send(chunk.clone()).await.is_ok(),
                        None => false,
                    };
                    if !queued {
                        self.done = true;
                        return Some(Err(Error::internal("the hashing thread stopped")));
                    }
                    // As in Verify: only the chunk completing the size is held.
                    if self.seen < self.expected_size && self.held.is_none() {
                        return Some(Ok(chunk));
                    }
                    if let Some(previous) = self.held.replace(chunk) {
                        return Some(Ok(previous));
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => return self.finish().await,
            }
        }
    }

    async fn finish(&mut self) -> Option<Result<Bytes>> {
        self.done = true;
        if self.seen != self.expected_size {
            let what = format!(
                "size mismatch: {} bytes, expected {}",
                self.seen, self.expected_size
            );
            return Some(Err(self.fail(what)));
        }
        self.tx = None;
        let digest = match self.hashing.take()?.await {
            Ok(digest) => digest,
            Err(e) => return Some(Err(Error::internal(format!("hashing thread: {e}")))),
        };
        let actual = hash::encode(&digest);
        if actual != self.expected_hash {
            let what = format!(
                "hash mismatch: bytes hash {actual}, expected {}",
                self.expected_hash
            );
            return Some(Err(self.fail(what)));
        }
        self.held.take().map(Ok)
    }

    fn fail(&mut self, what: String) -> Error {
        self.done = true;
        self.held = None;
        if let Some(f) = self.on_mismatch.take() {
            f(&what);
        }
        Error::new(Kind::Internal, Origin::Storage, what)
    }
}

/// Forwards the bytes of whole blocks `[first, last]` of an object (read from the offset of
/// `first`) while checking each block against its recorded SHA-256, and passes on only the
/// part inside `[want_start, want_end)`. Each block's last piece is held back until the block
/// verified, so a corrupt block never completes at the receiver.
pub struct VerifyBlocks {
    inner: ByteStream,
    blocks: BlockHashes,
    size: u64,
    index: u64,
    last: u64,
    pos: u64,
    block_end: u64,
    want: (u64, u64),
    hasher: Sha256,
    held: Option<Bytes>,
    ready: std::collections::VecDeque<Bytes>,
    on_mismatch: Option<OnMismatch>,
    done: bool,
}

impl VerifyBlocks {
    /// `inner` must start at the first byte of the first block `want_start` touches.
    pub fn new(
        inner: ByteStream,
        blocks: BlockHashes,
        size: u64,
        want_start: u64,
        want_len: u64,
        on_mismatch: OnMismatch,
    ) -> Self {
        let (first, last) = blocks.touched(want_start, want_len);
        let (pos, block_end) = blocks.span(first, size);
        Self {
            inner,
            blocks,
            size,
            index: first,
            last,
            pos,
            block_end,
            want: (want_start, want_start + want_len),
            hasher: Sha256::new(),
            held: None,
            ready: Default::default(),
            on_mismatch: Some(on_mismatch),
            done: false,
        }
    }

    fn fail(&mut self, what: String) -> Error {
        self.done = true;
        self.held = None;
        self.ready.clear();
        if let Some(f) = self.on_mismatch.take() {
            f(&what);
        }
        Error::new(Kind::Internal, Origin::Storage, what)
    }

    /// Hashes one piece of a chunk, all inside the current block; queues what may go out.
    fn absorb(&mut self, piece: Bytes) -> Result<()> {
        self.hasher.update(&piece);
        let (from, to) = (self.pos, self.pos + piece.len() as u64);
        self.pos = to;
        let (lo, hi) = (from.max(self.want.0), to.min(self.want.1));
        if lo < hi {
            let slice = piece.slice((lo - from) as usize..(hi - from) as usize);
            if let Some(previous) = self.held.replace(slice) {
                self.ready.push_back(previous);
            }
        }
        if self.pos < self.block_end {
            return Ok(());
        }
        let actual: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        let expected = self.blocks.digests.get(self.index as usize);
        if expected != Some(&actual) {
            let (from, to) = self.blocks.span(self.index, self.size);
            let what = format!(
                "hash mismatch: block {} (bytes {from}-{}) does not match its recorded SHA-256",
                self.index,
                to - 1
            );
            return Err(self.fail(what));
        }
        self.ready.extend(self.held.take());
        self.index += 1;
        self.block_end = self.blocks.span(self.index, self.size).1;
        if self.index > self.last {
            self.done = true;
        }
        Ok(())
    }

    fn absorb_chunk(&mut self, mut chunk: Bytes) -> Result<()> {
        while !chunk.is_empty() && !self.done {
            let take = (self.block_end - self.pos).min(chunk.len() as u64) as usize;
            let piece = chunk.split_to(take);
            self.absorb(piece)?;
        }
        Ok(())
    }
}

impl Stream for VerifyBlocks {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(out) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(out)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match std::task::ready!(self.inner.poll_next_unpin(cx)) {
                Some(Ok(chunk)) => {
                    if let Err(e) = self.absorb_chunk(chunk) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    let what = format!(
                        "size mismatch: storage ended at byte {}, block {} ends at {}",
                        self.pos, self.index, self.block_end
                    );
                    return Poll::Ready(Some(Err(self.fail(what))));
                }
            }
        }
    }
}

/// Compresses a stream with zstd on a blocking thread.
pub fn zstd_encode(input: ByteStream) -> ByteStream {
    codec_pipeline(input, || Encoder::new(ZSTD_LEVEL), true)
}

/// Decompresses a zstd stream on a blocking thread; output comes in bounded chunks, so a
/// decompression bomb cannot grow memory.
pub fn zstd_decode(input: ByteStream) -> ByteStream {
    codec_pipeline(input, Decoder::new, false)
}

/// Like [`zstd_decode`], but a frame that needs a window larger than `2^window_log_max` bytes
/// is refused (400) before the decoder allocates it.
pub fn zstd_decode_bounded(input: ByteStream, window_log_max: u32) -> ByteStream {
    codec_pipeline(
        input,
        move || {
            let mut decoder = Decoder::new()?;
            decoder.set_parameter(DParameter::WindowLogMax(window_log_max))?;
            Ok(decoder)
        },
        false,
    )
}

/// Fails the stream with 413 (`Kind::PayloadTooLarge`) as soon as more than `max` bytes have
/// passed; nothing beyond the limit is forwarded.
pub fn limit_size(input: ByteStream, max: u64, what: &'static str) -> ByteStream {
    let mut seen = 0u64;
    let mut over = false;
    Box::pin(input.map(move |item| {
        if over {
            return Err(too_large(max, what));
        }
        let chunk = item?;
        seen = seen.saturating_add(chunk.len() as u64);
        if seen > max {
            over = true;
            return Err(too_large(max, what));
        }
        Ok(chunk)
    }))
}

/// A request body that, when dropped before its end (the upload was refused or cut off), goes
/// on reading and discarding it in a background task, up to `max_bytes` or `max_time`. The
/// client, still sending, then gets to read the answer (413, 400) instead of a connection
/// reset; past either bound the connection is closed as before. Nothing read is kept.
pub struct DrainOnDrop {
    inner: Option<ByteStream>,
    finished: bool,
    max_bytes: u64,
    max_time: std::time::Duration,
}

impl DrainOnDrop {
    pub fn new(inner: ByteStream, max_bytes: u64, max_time: std::time::Duration) -> Self {
        Self {
            inner: Some(inner),
            finished: false,
            max_bytes,
            max_time,
        }
    }
}

impl Stream for DrainOnDrop {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let item = std::task::ready!(inner.poll_next_unpin(cx));
        if !matches!(item, Some(Ok(_))) {
            self.finished = true;
        }
        Poll::Ready(item)
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let Some(mut inner) = self.inner.take() else {
            return;
        };
        if self.finished {
            return;
        }
        let (max_bytes, max_time) = (self.max_bytes, self.max_time);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let drain = async {
                    let mut seen = 0u64;
                    while let Some(Ok(chunk)) = inner.next().await {
                        seen += chunk.len() as u64;
                        if seen > max_bytes {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(max_time, drain).await;
            });
        }
    }
}

/// The most zstd bytes a body of at most `max` uncompressed bytes needs (zstd's compress
/// bound, generously rounded up; at least 64 KiB), so a compressed body cannot be made
/// endless with skippable frames or empty blocks.
pub fn zstd_bound(max: u64) -> u64 {
    max.saturating_add(max / 128).saturating_add(64 * 1024)
}

/// The error of a body larger than the limit.
pub fn too_large(max: u64, what: &str) -> Error {
    Error::payload_too_large(format!("{what} is larger than the limit of {max} bytes"))
}

fn codec_error(e: impl std::fmt::Display, encode: bool) -> Error {
    if encode {
        Error::internal(format!("zstd compression failed: {e}"))
    } else if e.to_string().contains("too much memory") {
        Error::bad_request(format!(
            "zstd frame needs a larger window than this site accepts ({e})"
        ))
    } else {
        Error::bad_request(format!("invalid zstd body: {e}"))
    }
}

fn codec_pipeline<O, F>(mut input: ByteStream, make: F, encode: bool) -> ByteStream
where
    O: Operation + 'static,
    F: FnOnce() -> std::io::Result<O> + Send + 'static,
{
    let (in_tx, mut in_rx) = mpsc::channel::<Result<Bytes>>(CODEC_DEPTH);
    let (out_tx, out_rx) = mpsc::channel::<Result<Bytes>>(CODEC_DEPTH);
    tokio::spawn(async move {
        while let Some(item) = input.next().await {
            let stop = item.is_err();
            if in_tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        let emit = |b: Bytes| out_tx.blocking_send(Ok(b)).is_ok();
        let fail = |e: Error| {
            let _ = out_tx.blocking_send(Err(e));
        };
        let mut op = match make() {
            Ok(op) => op,
            Err(e) => return fail(codec_error(e, encode)),
        };
        let mut hint = 0usize;
        while let Some(item) = in_rx.blocking_recv() {
            let chunk = match item {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            match run_op(&mut op, &chunk, &emit) {
                Ok(Some(h)) => hint = h,
                Ok(None) => return, // consumer gone
                Err(e) => return fail(codec_error(e, encode)),
            }
        }
        let finished = if encode {
            finish_encoder(&mut op, &emit)
        } else {
            finish_decoder(hint)
        };
        if let Err(e) = finished {
            fail(codec_error(e, encode));
        }
    });
    Box::pin(ReceiverStream::new(out_rx))
}

/// Feeds one input chunk through the codec, emitting full output buffers as they fill.
/// Returns the codec's last hint, or None when the consumer has gone away.
fn run_op<O: Operation>(
    op: &mut O,
    input: &[u8],
    emit: &impl Fn(Bytes) -> bool,
) -> std::io::Result<Option<usize>> {
    let mut src = InBuffer::around(input);
    let mut hint = 0;
    loop {
        let mut buf = vec![0u8; CODEC_CHUNK];
        let mut dst = OutBuffer::around(&mut buf);
        let consumed_before = src.pos();
        let h = op.run(&mut src, &mut dst)?;
        let written = dst.pos();
        // A call that made no progress (after a frame ended exactly at a buffer boundary)
        // reports the next frame's header hint; keep the hint of the last real progress.
        if written > 0 || src.pos() > consumed_before {
            hint = h;
        }
        let full = written == CODEC_CHUNK;
        if written > 0 {
            buf.truncate(written);
            if !emit(Bytes::from(buf)) {
                return Ok(None);
            }
        }
        if src.pos() >= input.len() && !full {
            return Ok(Some(hint));
        }
    }
}

fn finish_encoder<O: Operation>(op: &mut O, emit: &impl Fn(Bytes) -> bool) -> std::io::Result<()> {
    loop {
        let mut buf = vec![0u8; CODEC_CHUNK];
        let mut dst = OutBuffer::around(&mut buf);
        let remaining = op.finish(&mut dst, true)?;
        let written = dst.pos();
        if written > 0 {
            buf.truncate(written);
            if !emit(Bytes::from(buf)) {
                return Ok(());
            }
        }
        if remaining == 0 {
            return Ok(());
        }
    }
}

fn finish_decoder(last_hint: usize) -> std::io::Result<()> {
    // run_op drained every full output buffer already; a hint of 0 means the last frame ended.
    if last_hint != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "truncated zstd stream",
        ));
    }
    Ok(())
}

/// Minimal `Stream` over an mpsc receiver (keeps tokio-stream out of the dependency list).
mod tokio_stream_shim {
    use super::*;

    pub struct ReceiverStream<T>(mpsc::Receiver<T>);

    impl<T> ReceiverStream<T> {
        pub fn new(rx: mpsc::Receiver<T>) -> Self {
            Self(rx)
        }
    }

    impl<T> Stream for ReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}

pub use tokio_stream_shim::ReceiverStream as ChannelStream;

/// A stream of the given chunks (tests and benches).
pub fn from_chunks(chunks: Vec<Bytes>) -> ByteStream {
    Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)))
}

/// A file of this site's disk (a staged pull) as a stream of chunks of up to 1 MiB.
pub async fn file_stream(path: &std::path::Path) -> Result<ByteStream> {
    let file = tokio::fs::File::open(path).await?;
    let chunks = tokio_util::io::ReaderStream::with_capacity(file, 1024 * 1024);
    Ok(Box::pin(chunks.map(|r| r.map_err(Error::from))))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(mut s: ByteStream) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8 ^ (i / 7919) as u8).collect()
    }

    fn chunks(data: &[u8], size: usize) -> Vec<Bytes> {
        data.chunks(size).map(Bytes::copy_from_slice).collect()
    }

    #[tokio::test]
    async fn verify_passes_good_bytes() {
        let data = sample(1_000_000);
        let s = Verify::new(
            from_chunks(chunks(&data, 65536)),
            &hash::of(&data),
            data.len() as u64,
            Box::new(|_| panic!()),
        );
        assert_eq!(collect(Box::pin(s)).await.unwrap(), data);
    }

    #[tokio::test]
    async fn verify_withholds_last_chunk_on_mismatch() {
        let data = sample(300_000);
        let mut bad = data.clone();
        bad[299_999] ^= 1;
        let (tx, rx) = std::sync::mpsc::channel();
        let mut s = Verify::new(
            from_chunks(chunks(&bad, 100_000)),
            &hash::of(&data),
            data.len() as u64,
            Box::new(move |w| tx.send(w.to_owned()).unwrap()),
        );
        let mut delivered = 0;
        let mut failed = false;
        while let Some(c) = s.next().await {
            match c {
                Ok(c) => delivered += c.len(),
                Err(_) => failed = true,
            }
        }
        assert!(failed);
        assert!(delivered < data.len(), "never a complete-looking body");
        assert!(rx.recv().unwrap().contains("hash mismatch"));
    }

    /// What a stream delivered before it ended, whether it failed, and the mismatch reported.
    async fn outcome(
        mut s: ByteStream,
        reported: std::sync::mpsc::Receiver<String>,
    ) -> (usize, bool, String) {
        let (mut delivered, mut failed) = (0, false);
        while let Some(c) = s.next().await {
            match c {
                Ok(c) => delivered += c.len(),
                Err(_) => failed = true,
            }
        }
        (delivered, failed, reported.try_recv().unwrap_or_default())
    }

    #[tokio::test]
    async fn verify_aside_passes_good_bytes_and_withholds_the_end_of_bad_ones() {
        let data = sample(1_000_000);
        let good = verify_aside(
            from_chunks(chunks(&data, 65536)),
            &hash::of(&data),
            data.len() as u64,
            Box::new(|_| panic!()),
        );
        assert_eq!(collect(good).await.unwrap(), data);
        let empty = verify_aside(
            from_chunks(vec![]),
            &hash::of(&[]),
            0,
            Box::new(|_| panic!()),
        );
        assert!(collect(empty).await.unwrap().is_empty());

        let mut bad = data.clone();
        bad[999_999] ^= 1;
        let cases = [
            (bad, "hash mismatch"),
            (data[..999_000].to_vec(), "size mismatch"),
            ([&data[..], b"x"].concat(), "size mismatch"),
        ];
        for (sent, why) in cases {
            let (tx, rx) = std::sync::mpsc::channel();
            let s = verify_aside(
                from_chunks(chunks(&sent, 100_000)),
                &hash::of(&data),
                data.len() as u64,
                Box::new(move |w| tx.send(w.to_owned()).unwrap()),
            );
            let (delivered, failed, reported) = outcome(s, rx).await;
            assert!(failed, "{why}");
            assert!(
                delivered < data.len(),
                "never a complete-looking body ({why})"
            );
            assert!(reported.contains(why), "{reported}");
        }
    }

    #[tokio::test]
    async fn verify_compressed_checks_the_uncompressed_bytes() {
        let data = sample(2_000_000);
        let compressed = zstd::encode_all(&data[..], 1).unwrap();
        let good = Verify::compressed(
            from_chunks(chunks(&compressed, 70_000)),
            &hash::of(&data),
            data.len() as u64,
            Box::new(|_| panic!()),
        )
        .unwrap();
        assert_eq!(collect(Box::pin(good)).await.unwrap(), compressed);
        let other = sample(2_000_001);
        let bad = Verify::compressed(
            from_chunks(chunks(&compressed, 70_000)),
            &hash::of(&other),
            other.len() as u64,
            Box::new(|_| {}),
        )
        .unwrap();
        assert!(collect(Box::pin(bad)).await.is_err());
    }

    #[tokio::test]
    async fn verify_blocks_serves_the_slice_and_stops_at_a_bad_block() {
        let data = sample(10_000);
        let mut h = crate::model::blocks::BlockHasher::new(1000);
        h.update(&data);
        let blocks = h.finish();
        let read = |from: usize, to: usize, bad: Option<usize>| {
            let mut bytes = data[from..to].to_vec();
            if let Some(at) = bad {
                bytes[at - from] ^= 1;
            }
            from_chunks(chunks(&bytes, 333))
        };
        // Bytes 1500..4200 touch blocks 1..=4, read from 1000 to 5000.
        let good = VerifyBlocks::new(
            read(1000, 5000, None),
            blocks.clone(),
            10_000,
            1500,
            2700,
            Box::new(|_| panic!()),
        );
        assert_eq!(collect(Box::pin(good)).await.unwrap(), &data[1500..4200]);
        let tail = VerifyBlocks::new(
            read(9000, 10_000, None),
            blocks.clone(),
            10_000,
            9999,
            1,
            Box::new(|_| panic!()),
        );
        assert_eq!(collect(Box::pin(tail)).await.unwrap(), &data[9999..]);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut bad = VerifyBlocks::new(
            read(1000, 5000, Some(3500)),
            blocks,
            10_000,
            1500,
            2700,
            Box::new(move |w| tx.send(w.to_owned()).unwrap()),
        );
        let mut delivered = 0;
        let mut failed = false;
        while let Some(c) = bad.next().await {
            match c {
                Ok(c) => delivered += c.len(),
                Err(_) => failed = true,
            }
        }
        assert!(failed);
        assert!(delivered < 2500, "block 3 never completes: {delivered}");
        assert!(rx.recv().unwrap().contains("block 3"));
    }

    #[tokio::test]
    async fn zstd_round_trip_and_bounded_chunks() {
        let data = sample(3_000_000);
        let compressed = collect(zstd_encode(from_chunks(chunks(&data, 262_144))))
            .await
            .unwrap();
        assert!(compressed.len() < data.len());
        assert_eq!(zstd::decode_all(&compressed[..]).unwrap(), data);
        let mut out = zstd_decode(from_chunks(chunks(&compressed, 1000)));
        let mut back = Vec::new();
        while let Some(c) = out.next().await {
            let c = c.unwrap();
            assert!(c.len() <= CODEC_CHUNK);
            back.extend_from_slice(&c);
        }
        assert_eq!(back, data);
    }

    #[tokio::test]
    async fn zstd_bomb_comes_out_in_small_chunks() {
        let zeros = vec![0u8; 64 * 1024 * 1024];
        let compressed = zstd::encode_all(&zeros[..], 3).unwrap();
        assert!(compressed.len() < 64 * 1024);
        let mut out = zstd_decode(from_chunks(vec![Bytes::from(compressed)]));
        let mut total = 0;
        while let Some(c) = out.next().await {
            let c = c.unwrap();
            assert!(c.len() <= CODEC_CHUNK);
            total += c.len();
        }
        assert_eq!(total, zeros.len());
    }

    #[tokio::test]
    async fn bounded_decoder_refuses_a_wider_window() {
        let data = sample(300_000);
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.window_log(25).unwrap();
        std::io::Write::write_all(&mut enc, &data).unwrap();
        let wide = enc.finish().unwrap();
        let err = collect(zstd_decode_bounded(
            from_chunks(vec![Bytes::from(wide.clone())]),
            23,
        ))
        .await
        .unwrap_err();
        assert_eq!(err.kind, Kind::BadRequest, "{err}");
        assert!(err.message.contains("window"), "{err}");
        let back = collect(zstd_decode_bounded(
            from_chunks(vec![Bytes::from(wide)]),
            25,
        ))
        .await
        .unwrap();
        assert_eq!(back, data);
    }

    #[tokio::test]
    async fn limit_size_cuts_off_past_the_limit() {
        let data = sample(100_000);
        let ok = collect(limit_size(from_chunks(chunks(&data, 30_000)), 100_000, "x"))
            .await
            .unwrap();
        assert_eq!(ok, data);
        let mut s = limit_size(from_chunks(chunks(&data, 30_000)), 99_999, "x");
        let mut passed = 0;
        let err = loop {
            match s.next().await {
                Some(Ok(c)) => passed += c.len(),
                Some(Err(e)) => break e,
                None => panic!("no error"),
            }
        };
        assert_eq!(err.kind, Kind::PayloadTooLarge);
        assert_eq!(err.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(passed <= 99_999);
        // The limit applies after decompression: a small bomb is cut off as well.
        let bomb = zstd::encode_all(&vec![0u8; 4 << 20][..], 3).unwrap();
        let err = collect(limit_size(
            zstd_decode_bounded(from_chunks(vec![Bytes::from(bomb)]), 23),
            1 << 20,
            "x",
        ))
        .await
        .unwrap_err();
        assert_eq!(err.kind, Kind::PayloadTooLarge);
    }

    #[tokio::test]
    async fn a_dropped_body_is_drained_up_to_its_bounds() {
        let (tx, rx) = mpsc::channel::<Result<Bytes>>(1);
        let mut body = DrainOnDrop::new(
            Box::pin(ChannelStream::new(rx)),
            10_000,
            std::time::Duration::from_secs(5),
        );
        let sender = tokio::spawn(async move {
            let mut sent = 0;
            for _ in 0..20 {
                if tx.send(Ok(Bytes::from(vec![0u8; 1000]))).await.is_err() {
                    break;
                }
                sent += 1;
            }
            sent
        });
        assert!(body.next().await.is_some());
        drop(body);
        // Drained past the first chunk, stopped once past 10 000 bytes.
        let sent = tokio::time::timeout(std::time::Duration::from_secs(5), sender)
            .await
            .unwrap()
            .unwrap();
        assert!((11..20).contains(&sent), "{sent}");
    }

    #[tokio::test]
    async fn truncated_or_garbage_zstd_is_an_error() {
        let compressed = zstd::encode_all(&sample(100_000)[..], 1).unwrap();
        let cut = compressed[..compressed.len() / 2].to_vec();
        assert!(collect(zstd_decode(from_chunks(vec![Bytes::from(cut)])))
            .await
            .is_err());
        let garbage = Bytes::from_static(b"this is not zstd at all");
        assert!(collect(zstd_decode(from_chunks(vec![garbage])))
            .await
            .is_err());
    }
}
