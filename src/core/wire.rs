//! The CCS wire format shared by the API rooms and the peer client: protocol header names,
//! and CCS object headers: rendering an object's metadata as `x-clonecloudstore-*` headers and
//! parsing the optional headers of an upload and of a listing filter.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::error::{Error, Result};
use crate::meta::{Object, ObjectFilter, Status};
use crate::model::hash;
use crate::model::names;
use crate::model::object::{format_time, parse_time};

/// Protocol headers of every request and response.
pub const OP_ID: HeaderName = HeaderName::from_static("x-clonecloudstore-op-id");
pub const MODULE: HeaderName = HeaderName::from_static("x-clonecloudstore-module");
pub const ERROR: HeaderName = HeaderName::from_static("x-clonecloudstore-error");
pub const CLIENT_ID: HeaderName = HeaderName::from_static("x-clonecloudstore-client-id");
pub const TARGET_ID: HeaderName = HeaderName::from_static("x-clonecloudstore-target-id");
pub const TYPE: HeaderName = HeaderName::from_static("x-clonecloudstore-type");

/// Object headers.
pub const ID: &str = "x-clonecloudstore-id";
pub const SITE: &str = "x-clonecloudstore-site";
pub const BUCKET: &str = "x-clonecloudstore-bucket";
pub const NAME: &str = "x-clonecloudstore-name";
pub const CREATION: &str = "x-clonecloudstore-creation";
pub const SIZE: &str = "x-clonecloudstore-size";
pub const HASH: &str = "x-clonecloudstore-hash";
pub const METADATA: &str = "x-clonecloudstore-metadata";
pub const STATUS: &str = "x-clonecloudstore-status";
pub const EXPIRES: &str = "x-clonecloudstore-expires";
/// Sent by a peer that verifies what it receives (value [`VERIFY_BY_RECEIVER`]); honoured on
/// the peer routes only: the serving site then streams its bytes without hashing them (one
/// SHA-256 per byte per hop), and the receiver reports a mismatch back.
pub const VERIFY: &str = "x-mirrorgate-verify";
pub const VERIFY_BY_RECEIVER: &str = "receiver";

fn put(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// JSON with every non-ASCII character escaped, so it is a valid header value.
pub fn ascii_json(value: &impl serde::Serialize) -> String {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Every object header, as CCS sends them with an object's bytes.
pub fn object_headers(obj: &Object) -> HeaderMap {
    let mut h = HeaderMap::new();
    put(&mut h, ID, &obj.id);
    put(&mut h, SITE, &obj.site);
    put(&mut h, BUCKET, &obj.bucket);
    put(&mut h, NAME, &obj.name);
    put(&mut h, CREATION, &format_time(&obj.creation));
    put(&mut h, SIZE, &obj.size.to_string());
    if let Some(hash) = &obj.hash {
        put(&mut h, HASH, hash);
    }
    put(&mut h, METADATA, &ascii_json(&obj.metadata));
    put(&mut h, STATUS, obj.status.as_str());
    if let Some(e) = &obj.expires {
        put(&mut h, EXPIRES, &format_time(e));
    }
    h
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => {
            // UTF-8 is accepted: clients send metadata values as they are.
            let s = std::str::from_utf8(v.as_bytes())
                .map_err(|_| Error::bad_request(format!("header {name} is not valid UTF-8")))?
                .trim();
            Ok((!s.is_empty()).then_some(s))
        }
    }
}

fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>> {
    text(headers, name)?
        .map(|s| {
            s.parse::<u64>().map_err(|_| {
                Error::bad_request(format!(
                    "header {name}: {s:?} is not a non-negative integer"
                ))
            })
        })
        .transpose()
}

fn time(headers: &HeaderMap, name: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    text(headers, name)?
        .map(|s| {
            parse_time(s).ok_or_else(|| {
                Error::bad_request(format!("header {name}: {s:?} is not an ISO-8601 date-time"))
            })
        })
        .transpose()
}

/// Optional headers of an upload.
#[derive(Debug, Default)]
pub struct UploadHeaders {
    pub size: Option<u64>,
    pub hash: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
    pub zstd: bool,
}

pub fn parse_metadata(s: &str) -> Result<BTreeMap<String, String>> {
    let map: BTreeMap<String, String> = serde_json::from_str(s).map_err(|e| {
        Error::bad_request(format!(
            "header {METADATA}: not a JSON object of strings: {e}"
        ))
    })?;
    for key in map.keys() {
        names::check_metadata_key(key)?;
    }
    Ok(map)
}

pub fn parse_upload(headers: &HeaderMap) -> Result<UploadHeaders> {
    let hash = text(headers, HASH)?
        .map(|h| {
            hash::normalize(h).ok_or_else(|| {
                Error::bad_request(format!(
                    "header {HASH}: not a SHA-256 in CCS encoding (52 base32hex characters)"
                ))
            })
        })
        .transpose()?;
    let metadata = text(headers, METADATA)?
        .map(parse_metadata)
        .transpose()?
        .unwrap_or_default();
    let zstd = match text(headers, "content-encoding")? {
        None => false,
        Some(e) if e.eq_ignore_ascii_case("zstd") => true,
        Some(e) if e.eq_ignore_ascii_case("identity") => false,
        Some(e) => {
            return Err(Error::bad_request(format!(
                "unsupported Content-Encoding {e:?}: use zstd or none"
            )))
        }
    };
    Ok(UploadHeaders {
        size: number(headers, SIZE)?,
        hash,
        metadata,
        expires: time(headers, EXPIRES)?,
        zstd,
    })
}

/// The listing filter headers of `PUT /cloudclonestore/{bucket}`.
pub fn parse_filter(headers: &HeaderMap) -> Result<ObjectFilter> {
    let statuses = match text(headers, "x-clonecloudstore-statuses")? {
        None => Vec::new(),
        Some(s) => {
            let names: Vec<String> = if s.starts_with('[') {
                serde_json::from_str(s).map_err(|e| {
                    Error::bad_request(format!("header x-clonecloudstore-statuses: {e}"))
                })?
            } else {
                s.split(',').map(|p| p.trim().to_owned()).collect()
            };
            names
                .iter()
                .map(|n| {
                    Status::parse(n)
                        .ok_or_else(|| Error::bad_request(format!("unknown status {n:?}")))
                })
                .collect::<Result<_>>()?
        }
    };
    Ok(ObjectFilter {
        name_prefix: text(headers, "x-clonecloudstore-nameprefix")?.map(str::to_owned),
        statuses,
        creation_before: time(headers, "x-clonecloudstore-creationbefore")?,
        creation_after: time(headers, "x-clonecloudstore-creationafter")?,
        expires_before: time(headers, "x-clonecloudstore-expiresbefore")?,
        expires_after: time(headers, "x-clonecloudstore-expiresafter")?,
        size_lt: number(headers, "x-clonecloudstore-sizelt")?,
        size_gt: number(headers, "x-clonecloudstore-sizegt")?,
        metadata_eq: text(headers, "x-clonecloudstore-metadataeq")?
            .map(parse_metadata)
            .transpose()?
            .unwrap_or_default(),
    })
}

/// Whether the client asked for a zstd-compressed response.
pub fn wants_zstd(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let mut it = part.split(';');
            let coding = it.next().unwrap_or("").trim();
            let refused = it.any(|p| p.trim().replace(' ', "") == "q=0");
            coding.eq_ignore_ascii_case("zstd") && !refused
        })
}

/// Whether the client asked for JSON metadata rather than bytes.
pub fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json") && !v.contains("application/octet-stream"))
}

/// What a `Range` header asks of an object of `size` bytes (RFC 9110, `bytes` unit only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable range (none, another unit, bad syntax, several ranges, or `If-Range`): the
    /// whole object, 200.
    Whole,
    /// Bytes `start .. start + len`: 206 with `Content-Range`.
    Part { start: u64, len: u64 },
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

impl ByteRange {
    /// The `Content-Range` value of a 206 (`Part`) or a 416 (`Unsatisfiable`).
    pub fn content_range(&self, size: u64) -> Option<String> {
        match self {
            ByteRange::Whole => None,
            ByteRange::Part { start, len } => {
                Some(format!("bytes {start}-{}/{size}", start + len - 1))
            }
            ByteRange::Unsatisfiable => Some(format!("bytes */{size}")),
        }
    }
}

/// Reads the request's `Range` header against an object of `size` bytes. A multi-range
/// request is served whole (200): RFC 9110 lets a server ignore `Range`, and no client of
/// this API needs multipart/byteranges. `If-Range` is not evaluated: such a request is
/// served whole too, which is always correct.
pub fn byte_range(headers: &HeaderMap, size: u64) -> ByteRange {
    let Some(value) = headers.get(http::header::RANGE) else {
        return ByteRange::Whole;
    };
    if headers.contains_key(http::header::IF_RANGE)
        || headers.get_all(http::header::RANGE).iter().count() > 1
    {
        return ByteRange::Whole;
    }
    let Some(spec) = value
        .to_str()
        .ok()
        .map(str::trim)
        .and_then(|v| v.strip_prefix("bytes="))
    else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (first.is_empty(), last.is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => match number(last) {
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if size == 0 => ByteRange::Unsatisfiable,
            Some(n) => {
                let len = n.min(size);
                ByteRange::Part {
                    start: size - len,
                    len,
                }
            }
            None => ByteRange::Whole,
        },
        // bytes=a-: from a to the end.
        (false, true) => match number(first) {
            Some(a) if a >= size => ByteRange::Unsatisfiable,
            Some(a) => ByteRange::Part {
                start: a,
                len: size - a,
            },
            None => ByteRange::Whole,
        },
        // bytes=a-b: a to b inclusive, b cut to the end.
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= size {
                    ByteRange::Unsatisfiable
                } else {
                    ByteRange::Part {
                        start: a,
                        len: b.min(size - 1) - a + 1,
                    }
                }
            }
            _ => ByteRange::Whole,
        },
        (true, true) => ByteRange::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_parsing() {
        let mut h = HeaderMap::new();
        h.insert(
            "accept-encoding",
            HeaderValue::from_static("gzip, zstd;q=0.9"),
        );
        assert!(wants_zstd(&h));
        h.insert("accept-encoding", HeaderValue::from_static("zstd;q=0"));
        assert!(!wants_zstd(&h));
    }

    #[test]
    fn metadata_header_escapes_non_ascii() {
        let mut m = BTreeMap::new();
        m.insert("k".to_string(), "é😀".to_string());
        let s = ascii_json(&m);
        assert!(s.is_ascii());
        let back: BTreeMap<String, String> = serde_json::from_str(&s).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn upload_header_errors_are_clear() {
        let mut h = HeaderMap::new();
        h.insert(SIZE, HeaderValue::from_static("-1"));
        assert!(parse_upload(&h).unwrap_err().message.contains(SIZE));
        let mut h = HeaderMap::new();
        h.insert(METADATA, HeaderValue::from_static("{\"1bad\":\"x\"}"));
        assert!(parse_upload(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert(EXPIRES, HeaderValue::from_static("tomorrow"));
        assert!(parse_upload(&h).is_err());
    }

    fn range(v: &str, size: u64) -> ByteRange {
        let mut h = HeaderMap::new();
        h.insert(http::header::RANGE, HeaderValue::from_str(v).unwrap());
        byte_range(&h, size)
    }

    #[test]
    fn byte_ranges() {
        let part = |start, len| ByteRange::Part { start, len };
        assert_eq!(byte_range(&HeaderMap::new(), 10), ByteRange::Whole);
        assert_eq!(range("bytes=0-3", 10), part(0, 4));
        assert_eq!(range("bytes=2-100", 10), part(2, 8));
        assert_eq!(range("bytes=9-9", 10), part(9, 1));
        assert_eq!(range("bytes=4-", 10), part(4, 6));
        assert_eq!(range("bytes=-3", 10), part(7, 3));
        assert_eq!(range("bytes=-30", 10), part(0, 10));
        assert_eq!(range("bytes=10-", 10), ByteRange::Unsatisfiable);
        assert_eq!(range("bytes=10-20", 10), ByteRange::Unsatisfiable);
        assert_eq!(range("bytes=-0", 10), ByteRange::Unsatisfiable);
        assert_eq!(range("bytes=0-0", 0), ByteRange::Unsatisfiable);
        assert_eq!(range("bytes=-1", 0), ByteRange::Unsatisfiable);
        assert_eq!(range("bytes=5-2", 10), ByteRange::Whole);
        assert_eq!(range("bytes=0-1,4-5", 10), ByteRange::Whole);
        assert_eq!(range("items=0-1", 10), ByteRange::Whole);
        assert_eq!(range("bytes=x-1", 10), ByteRange::Whole);
        assert_eq!(range("bytes=-", 10), ByteRange::Whole);
        assert_eq!(
            part(2, 3).content_range(10).as_deref(),
            Some("bytes 2-4/10")
        );
        assert_eq!(
            ByteRange::Unsatisfiable.content_range(10).as_deref(),
            Some("bytes */10")
        );
    }
}
