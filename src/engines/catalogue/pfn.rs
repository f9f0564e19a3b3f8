//! PFNs: the URL that reads one copy at one site, `<site url>/replicator/remote/buckets/<bucket>/<key>`
//! (the key percent-encoded, its `/` kept), and back from a PFN to (site, bucket, key).

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::view::SiteInfo;

const REMOTE: &str = "/replicator/remote/buckets/";

/// What stays literal in a key: RFC 3986 unreserved characters and the path separator.
const KEY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

pub fn build(site_url: &str, bucket: &str, key: &str) -> String {
    format!(
        "{}{REMOTE}{bucket}/{}",
        site_url.trim_end_matches('/'),
        utf8_percent_encode(key, KEY)
    )
}

/// The scheme of a PFN (`http`, `https`).
pub fn scheme(pfn: &str) -> &str {
    pfn.split_once("://").map(|(s, _)| s).unwrap_or("")
}

/// The site, bucket and key a PFN names, when it is one of ours.
pub fn parse<'a>(sites: &'a [SiteInfo], pfn: &str) -> Option<(&'a SiteInfo, String, String)> {
    sites.iter().find_map(|site| {
        let rest = pfn.strip_prefix(site.url.trim_end_matches('/'))?;
        let rest = rest.strip_prefix(REMOTE)?;
        let (bucket, key) = rest.split_once('/')?;
        let key = percent_decode_str(key).decode_utf8().ok()?;
        (!bucket.is_empty() && !key.is_empty()).then(|| (site, bucket.to_owned(), key.into_owned()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites() -> Vec<SiteInfo> {
        vec![
            SiteInfo::new("a", "http://127.0.0.1:1/", true, true),
            SiteInfo::new("b", "http://127.0.0.1:2", false, true),
        ]
    }

    #[test]
    fn round_trip_keeps_slashes_and_encodes_the_rest() {
        let pfn = build("http://127.0.0.1:2/", "bkt", "dir/a b?#%.txt");
        assert_eq!(
            pfn,
            "http://127.0.0.1:2/replicator/remote/buckets/bkt/dir/a%20b%3F%23%25.txt"
        );
        let sites = sites();
        let (site, bucket, key) = parse(&sites, &pfn).unwrap();
        assert_eq!(
            (site.id.as_str(), bucket.as_str(), key.as_str()),
            ("b", "bkt", "dir/a b?#%.txt")
        );
        assert_eq!(scheme(&pfn), "http");
    }

    #[test]
    fn foreign_pfns_are_not_ours() {
        let sites = sites();
        assert!(parse(&sites, "srm://elsewhere/x/y").is_none());
        assert!(parse(&sites, "http://127.0.0.1:1/other/path").is_none());
        assert!(parse(&sites, "http://127.0.0.1:1/replicator/remote/buckets/bkt").is_none());
    }
}
