//! Block hashes: the SHA-256 of each fixed-size block of an object version, recorded in the
//! same pass as the whole-object hash. A range read is checked against the blocks it touches,
//! and a pull resumes from its verified blocks. Pure rules, no I/O.

use sha2::{Digest, Sha256};

/// Default block size: 4 MiB.
pub const DEFAULT_BLOCK_SIZE: u64 = 4 * 1024 * 1024; // keep in step with the config default

/// The block hashes of one object version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHashes {
    pub block_size: u64,
    pub digests: Vec<[u8; 32]>,
}

impl BlockHashes {
    /// Blocks `[first, last]` that bytes `[start, start + len)` touch (`len` > 0).
    pub fn touched(&self, start: u64, len: u64) -> (u64, u64) {
        (start / self.block_size, (start + len - 1) / self.block_size)
    }

    /// Byte span `[from, to)` of block `index` in an object of `size` bytes.
    pub fn span(&self, index: u64, size: u64) -> (u64, u64) {
        let from = index * self.block_size;
        (from, (from + self.block_size).min(size))
    }

    /// The digests as one hex text (64 characters a block), as the metadata stores them.
    pub fn to_hex(&self) -> String {
        self.digests
            .iter()
            .flat_map(|d| d.iter())
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Parses [`BlockHashes::to_hex`]; None when the text is not a whole number of digests.
    pub fn from_hex(block_size: u64, text: &str) -> Option<Self> {
        if block_size == 0 || !text.len().is_multiple_of(64) || !text.is_ascii() {
            return None;
        }
        let digests = text
            .as_bytes()
            .chunks(64)
            .map(|digest| {
                let mut out = [0u8; 32];
                for (i, pair) in digest.chunks(2).enumerate() {
                    let pair = std::str::from_utf8(pair).ok()?;
                    out[i] = u8::from_str_radix(pair, 16).ok()?;
                }
                Some(out)
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            block_size,
            digests,
        })
    }
}

/// Hashes a stream of bytes block by block (fed in pieces of any size).
pub struct BlockHasher {
    block_size: u64,
    current: Sha256,
    filled: u64,
    digests: Vec<[u8; 32]>,
}

impl BlockHasher {
    pub fn new(block_size: u64) -> Self {
        Self {
            block_size: block_size.max(1),
            current: Sha256::new(),
            filled: 0,
            digests: Vec::new(),
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = (self.block_size - self.filled) as usize;
            let take = room.min(bytes.len());
            self.current.update(&bytes[..take]);
            self.filled += take as u64;
            bytes = &bytes[take..];
            if self.filled == self.block_size {
                self.close_block();
            }
        }
    }

    /// The digests of the blocks completed so far (the last, short block only by `finish`).
    pub fn completed(&self) -> &[[u8; 32]] {
        &self.digests
    }

    fn close_block(&mut self) {
        let digest = std::mem::take(&mut self.current).finalize();
        self.digests.push(digest.into());
        self.filled = 0;
    }

    /// The hashes, the last (short) block included. An empty object has no block.
    pub fn finish(mut self) -> BlockHashes {
        if self.filled > 0 {
            self.close_block();
        }
        BlockHashes {
            block_size: self.block_size,
            digests: self.digests,
        }
    }
}

/// SHA-256 of one whole block.
pub fn digest(block: &[u8]) -> [u8; 32] {
    Sha256::digest(block).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_split_at_their_size_whatever_the_pieces() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let mut h = BlockHasher::new(4096);
        for piece in data.chunks(777) {
            h.update(piece);
        }
        let blocks = h.finish();
        assert_eq!(blocks.digests.len(), 3);
        assert_eq!(blocks.digests[0], digest(&data[..4096]));
        assert_eq!(blocks.digests[2], digest(&data[8192..]));
        let back = BlockHashes::from_hex(4096, &blocks.to_hex()).unwrap();
        assert_eq!(back, blocks);
        assert_eq!(blocks.touched(4095, 2), (0, 1));
        assert_eq!(blocks.touched(8192, 1), (2, 2));
        assert_eq!(blocks.span(2, 10_000), (8192, 10_000));
        assert!(BlockHashes::from_hex(4096, "abc").is_none());
        assert!(BlockHasher::new(4096).finish().digests.is_empty());
    }
}
