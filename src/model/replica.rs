//! The catalogue's vocabulary, as Rucio names it: replica states, bad-replica states, DIDs and
//! the replica rows that travel between sites.

use serde::{Deserialize, Serialize};

/// Rucio `ReplicaState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplicaState {
    #[serde(rename = "A")]
    Available,
    #[serde(rename = "U")]
    Unavailable,
    #[serde(rename = "C")]
    Copying,
    #[serde(rename = "B")]
    BeingDeleted,
    #[serde(rename = "D")]
    Bad,
    #[serde(rename = "T")]
    TemporaryUnavailable,
}

impl ReplicaState {
    const ALL: [ReplicaState; 6] = [
        Self::Available,
        Self::Unavailable,
        Self::Copying,
        Self::BeingDeleted,
        Self::Bad,
        Self::TemporaryUnavailable,
    ];

    /// The one-letter code stored in the database.
    pub fn code(self) -> &'static str {
        match self {
            Self::Available => "A",
            Self::Unavailable => "U",
            Self::Copying => "C",
            Self::BeingDeleted => "B",
            Self::Bad => "D",
            Self::TemporaryUnavailable => "T",
        }
    }

    /// The enum name Rucio puts on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Available => "AVAILABLE",
            Self::Unavailable => "UNAVAILABLE",
            Self::Copying => "COPYING",
            Self::BeingDeleted => "BEING_DELETED",
            Self::Bad => "BAD",
            Self::TemporaryUnavailable => "TEMPORARY_UNAVAILABLE",
        }
    }

    /// Accepts the code or the name, as Rucio clients send either.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.code() == s || st.name().eq_ignore_ascii_case(s))
    }

    /// A copy another site may be repaired from.
    pub fn is_good(self) -> bool {
        matches!(self, Self::Available | Self::TemporaryUnavailable)
    }
}

/// Rucio `BadFilesStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BadState {
    #[serde(rename = "B")]
    Bad,
    #[serde(rename = "D")]
    Deleted,
    #[serde(rename = "L")]
    Lost,
    #[serde(rename = "R")]
    Recovered,
    #[serde(rename = "S")]
    Suspicious,
    #[serde(rename = "T")]
    TemporaryUnavailable,
}

impl BadState {
    pub const ALL: [BadState; 6] = [
        Self::Bad,
        Self::Deleted,
        Self::Lost,
        Self::Recovered,
        Self::Suspicious,
        Self::TemporaryUnavailable,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Self::Bad => "B",
            Self::Deleted => "D",
            Self::Lost => "L",
            Self::Recovered => "R",
            Self::Suspicious => "S",
            Self::TemporaryUnavailable => "T",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Bad => "BAD",
            Self::Deleted => "DELETED",
            Self::Lost => "LOST",
            Self::Recovered => "RECOVERED",
            Self::Suspicious => "SUSPICIOUS",
            Self::TemporaryUnavailable => "TEMPORARY_UNAVAILABLE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.code() == s || st.name().eq_ignore_ascii_case(s))
    }
}

/// A data identifier: scope = bucket, name = object key. The dataset of a bucket is the DID
/// `<bucket>:<bucket>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Did {
    pub scope: String,
    pub name: String,
}

impl Did {
    pub fn new(scope: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            scope: scope.into(),
            name: name.into(),
        }
    }

    /// Whether this DID names a dataset (a whole bucket).
    pub fn is_dataset(&self) -> bool {
        self.scope == self.name
    }
}

impl std::fmt::Display for Did {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.scope, self.name)
    }
}

/// One copy of one object at one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replica {
    pub bucket: String,
    pub name: String,
    pub site: String,
    pub state: ReplicaState,
    pub bytes: u64,
    pub sha256: Option<String>,
    pub adler32: Option<String>,
    pub tombstone: Option<i64>,
    pub lock_cnt: i64,
    pub error_message: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub accessed_at: Option<i64>,
}

impl Replica {
    pub fn did(&self) -> Did {
        Did::new(&self.bucket, &self.name)
    }
}

/// One declaration (Rucio bad_replicas row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BadReplica {
    pub id: i64,
    pub bucket: String,
    pub name: String,
    pub site: String,
    pub state: BadState,
    pub reason: Option<String>,
    pub expires_at: Option<i64>,
    pub attempts: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Adler-32 as Rucio writes it: eight lowercase hex digits.
pub fn adler32_text(checksum: u32) -> String {
    format!("{checksum:08x}")
}

/// Adler-32 of `bytes`, in one step.
pub fn adler32_of(bytes: &[u8]) -> u32 {
    let mut adler = adler2::Adler32::new();
    adler.write_slice(bytes);
    adler.checksum()
}

/// Adler-32 of `first` followed by `second` (`second_len` bytes), from the two checksums: the
/// sum `a` adds up (less the initial 1 counted twice), and each byte of `second` adds to `b` the
/// bytes of `first` once more. Lets the blocks of a file be checksummed apart (out of order, on
/// several streams) without reading the file again.
pub fn adler32_concat(first: u32, second: u32, second_len: u64) -> u32 {
    const MOD: u64 = 65_521;
    let (a1, b1) = (u64::from(first & 0xffff), u64::from(first >> 16));
    let (a2, b2) = (u64::from(second & 0xffff), u64::from(second >> 16));
    let a = (a1 + a2 + MOD - 1) % MOD;
    let b = (b1 + b2 + (second_len % MOD) * ((a1 + MOD - 1) % MOD)) % MOD;
    ((b << 16) | a) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adler32_of_a_concatenation_comes_from_its_parts() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for cut in [0, 1, 5_552, 65_521, 131_042, 299_999, 300_000] {
            let (x, y) = data.split_at(cut);
            assert_eq!(
                adler32_concat(adler32_of(x), adler32_of(y), y.len() as u64),
                adler32_of(&data),
                "cut at {cut}"
            );
        }
        let blocks = data.chunks(70_000).fold(1, |acc, block| {
            adler32_concat(acc, adler32_of(block), block.len() as u64)
        });
        assert_eq!(blocks, adler32_of(&data));
    }

    #[test]
    fn states_parse_from_code_or_name() {
        assert_eq!(ReplicaState::parse("A"), Some(ReplicaState::Available));
        assert_eq!(
            ReplicaState::parse("temporary_unavailable"),
            Some(ReplicaState::TemporaryUnavailable)
        );
        assert_eq!(ReplicaState::parse("X"), None);
        assert_eq!(BadState::parse("SUSPICIOUS"), Some(BadState::Suspicious));
        assert_eq!(BadState::parse("L"), Some(BadState::Lost));
    }

    #[test]
    fn adler32_is_eight_hex_digits() {
        let mut a = adler2::Adler32::new();
        a.write_slice(b"Wikipedia");
        assert_eq!(adler32_text(a.checksum()), "11e60398");
        assert_eq!(adler32_text(1), "00000001");
    }
}
