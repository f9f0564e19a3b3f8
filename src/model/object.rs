//! The domain records as CCS names and serialises them (`AccessorBucket`, `AccessorObject`,
//! `Topology`).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Bucket and object statuses, as CCS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Unknown,
    Upload,
    Ready,
    ErrUpl,
    Deleting,
    Deleted,
    ErrDel,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Unknown,
        Status::Upload,
        Status::Ready,
        Status::ErrUpl,
        Status::Deleting,
        Status::Deleted,
        Status::ErrDel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "UNKNOWN",
            Status::Upload => "UPLOAD",
            Status::Ready => "READY",
            Status::ErrUpl => "ERR_UPL",
            Status::Deleting => "DELETING",
            Status::Deleted => "DELETED",
            Status::ErrDel => "ERR_DEL",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// Timestamps travel as ISO-8601 with milliseconds, UTC.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Accepts RFC 3339 and the zone-less form CCS examples use (taken as UTC).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| Utc.from_utc_datetime(&n))
}

pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

mod iso_ms {
    use super::*;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_time(t))
    }

    pub mod option {
        use super::*;
        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&format_time(t)),
                None => s.serialize_none(),
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    pub id: String,
    #[serde(rename = "name")]
    pub name: String,
    pub client_id: String,
    pub site: String,
    #[serde(with = "iso_ms")]
    pub creation: DateTime<Utc>,
    #[serde(with = "iso_ms::option")]
    pub expires: Option<DateTime<Utc>>,
    pub status: Status,
}

#[derive(Debug, Clone, Serialize)]
pub struct Object {
    pub id: String,
    pub site: String,
    pub bucket: String,
    pub name: String,
    pub hash: Option<String>,
    pub status: Status,
    #[serde(with = "iso_ms")]
    pub creation: DateTime<Utc>,
    #[serde(with = "iso_ms::option")]
    pub expires: Option<DateTime<Utc>>,
    pub size: u64,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TopologyStatus {
    Up,
    Down,
    Deleted,
    Unknown,
}

impl TopologyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TopologyStatus::Up => "UP",
            TopologyStatus::Down => "DOWN",
            TopologyStatus::Deleted => "DELETED",
            TopologyStatus::Unknown => "UNKNOWN",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Up, Self::Down, Self::Deleted, Self::Unknown]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

/// A site of the topology (CCS `Topology`: `uri`; `url` accepted on input).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Topology {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(alias = "url")]
    pub uri: String,
    #[serde(default = "topology_up")]
    pub status: TopologyStatus,
}

fn topology_up() -> TopologyStatus {
    TopologyStatus::Up
}

/// Ownership rights bitmask: READ 1, WRITE 2, DELETE 4 (OWNER 7).
pub mod rights {
    pub const READ: i64 = 1;
    pub const WRITE: i64 = 2;
    pub const DELETE: i64 = 4;
    pub const OWNER: i64 = 7;

    /// CCS `ClientOwnership` names, or a number 1..=7.
    pub fn parse(s: &str) -> Option<i64> {
        let v = match s.to_ascii_uppercase().as_str() {
            "READ" => READ,
            "WRITE" => WRITE,
            "READ_WRITE" => READ | WRITE,
            "DELETE" => DELETE,
            "DELETE_READ" => DELETE | READ,
            "DELETE_WRITE" => DELETE | WRITE,
            "OWNER" => OWNER,
            other => other.parse().ok()?,
        };
        (1..=OWNER).contains(&v).then_some(v)
    }

    pub fn name(v: i64) -> &'static str {
        match v {
            READ => "READ",
            WRITE => "WRITE",
            3 => "READ_WRITE",
            DELETE => "DELETE",
            5 => "DELETE_READ",
            6 => "DELETE_WRITE",
            OWNER => "OWNER",
            _ => "UNKNOWN",
        }
    }
}
