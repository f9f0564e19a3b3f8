//! Throughput of the streaming adapters of `core::stream` over 64 MiB in 256 KiB chunks:
//!
//! - `sha256/sha2_raw`: `sha2::Sha256` over the chunks, no stream (the baseline);
//! - `sha256/verify`: the `Verify` adapter draining a stream of pseudo-random chunks;
//! - `zstd/encode`, `zstd/decode`: the `zstd_encode` / `zstd_decode` pipelines (level 1,
//!   blocking codec thread + bounded channels) over text-like data;
//! - `zstd/encode_raw`, `zstd/decode_raw`: the same codec calls on one thread, no channels.
//!
//! Throughput is always counted in uncompressed bytes (as `zstd -b` does). The text-like corpus
//! is words from a 4096-word pseudo-random vocabulary, drawn with a skew toward short indices,
//! separated by spaces and newlines (zstd -1 compresses it about 2.3:1). Set
//! `MIRRORGATE_BENCH_CORPUS=<file>` to also write that corpus to a file, for `zstd -b1 <file>`.
//!
//! Run with `cargo bench --bench streaming` (about a minute).

use std::time::Duration;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use futures::StreamExt;
use mirrorgate::core::stream::{from_chunks, zstd_decode, zstd_encode, Verify};
use mirrorgate::storage::ByteStream;
use sha2::{Digest, Sha256};
use zstd::stream::raw::{Decoder, Encoder, InBuffer, Operation, OutBuffer};

const TOTAL: usize = 64 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

/// xorshift64*: deterministic and fast, good enough for benchmark data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Text-like bytes: skewed draws from a pseudo-random vocabulary, lines of ~12 words.
fn text_bytes(n: usize) -> Vec<u8> {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let vocabulary: Vec<Vec<u8>> = (0..4096)
        .map(|_| {
            let len = 2 + (rng.next() % 9) as usize;
            (0..len).map(|_| b'a' + (rng.next() % 26) as u8).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(n + 16);
    let mut words = 0u64;
    while out.len() < n {
        let r = rng.next();
        // min of two uniform draws: small indices (common words) come up more often.
        let i = ((r & 0xfff).min((r >> 12) & 0xfff)) as usize;
        out.extend_from_slice(&vocabulary[i]);
        words += 1;
        out.push(if words.is_multiple_of(12) {
            b'\n'
        } else {
            b' '
        });
    }
    out.truncate(n);
    out
}

fn chunks(data: &[u8]) -> Vec<Bytes> {
    data.chunks(CHUNK).map(Bytes::copy_from_slice).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    // What `mirrorgate serve` runs on: the multi-threaded runtime, one worker per core.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Drains a stream, returning how many bytes came out.
async fn drain(mut s: ByteStream) -> usize {
    let mut n = 0;
    while let Some(chunk) = s.next().await {
        n += black_box(chunk.expect("stream item")).len();
    }
    n
}

/// Runs a codec over the chunks on the calling thread, reusing one output buffer.
fn run_raw<O: Operation>(op: &mut O, input: &[Bytes], out: &mut [u8], finish: bool) -> usize {
    let mut produced = 0;
    for chunk in input {
        let mut src = InBuffer::around(chunk);
        loop {
            let mut dst = OutBuffer::around(&mut *out);
            op.run(&mut src, &mut dst).expect("codec");
            produced += dst.pos();
            let full = dst.pos() == dst.capacity();
            if src.pos() == chunk.len() && !full {
                break;
            }
        }
    }
    if finish {
        loop {
            let mut dst = OutBuffer::around(&mut *out);
            let remaining = op.finish(&mut dst, true).expect("finish");
            produced += dst.pos();
            if remaining == 0 {
                break;
            }
        }
    }
    produced
}

fn sha256(c: &mut Criterion) {
    let data = random_bytes(TOTAL);
    let input = chunks(&data);
    let expected = mirrorgate::model::hash::of(&data);
    drop(data);
    let rt = runtime();

    let mut g = c.benchmark_group("sha256");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Bytes(TOTAL as u64));
    g.bench_function("sha2_raw", |b| {
        b.iter(|| {
            let mut h = Sha256::new();
            for chunk in &input {
                h.update(chunk);
            }
            black_box(h.finalize())
        })
    });
    g.bench_function("verify", |b| {
        b.iter(|| {
            rt.block_on(async {
                let v = Verify::new(
                    from_chunks(input.clone()),
                    &expected,
                    TOTAL as u64,
                    Box::new(|what| panic!("verification failed: {what}")),
                );
                assert_eq!(drain(Box::pin(v)).await, TOTAL);
            })
        })
    });
    g.finish();
}

fn zstd(c: &mut Criterion) {
    let text = text_bytes(TOTAL);
    if let Some(path) = std::env::var_os("MIRRORGATE_BENCH_CORPUS") {
        std::fs::write(&path, &text).expect("write the corpus file");
    }
    let plain = chunks(&text);
    let compressed = zstd::encode_all(&text[..], mirrorgate::core::stream::ZSTD_LEVEL)
        .expect("compress the corpus");
    eprintln!(
        "zstd corpus: {} bytes of text-like data, {} compressed at level {} (ratio {:.2})",
        text.len(),
        compressed.len(),
        mirrorgate::core::stream::ZSTD_LEVEL,
        text.len() as f64 / compressed.len() as f64
    );
    let packed = chunks(&compressed);
    drop((text, compressed));
    let rt = runtime();
    let mut out = vec![0u8; CHUNK];

    let mut g = c.benchmark_group("zstd");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Bytes(TOTAL as u64));
    g.bench_function("encode", |b| {
        b.iter(|| {
            rt.block_on(async { black_box(drain(zstd_encode(from_chunks(plain.clone()))).await) })
        })
    });
    g.bench_function("encode_raw", |b| {
        b.iter(|| {
            let mut enc = Encoder::new(mirrorgate::core::stream::ZSTD_LEVEL).unwrap();
            black_box(run_raw(&mut enc, &plain, &mut out, true))
        })
    });
    g.bench_function("decode", |b| {
        b.iter(|| {
            rt.block_on(async {
                assert_eq!(drain(zstd_decode(from_chunks(packed.clone()))).await, TOTAL);
            })
        })
    });
    g.bench_function("decode_raw", |b| {
        b.iter(|| {
            let mut dec = Decoder::new().unwrap();
            assert_eq!(run_raw(&mut dec, &packed, &mut out, false), TOTAL);
        })
    });
    g.finish();
}

criterion_group!(benches, sha256, zstd);
criterion_main!(benches);
