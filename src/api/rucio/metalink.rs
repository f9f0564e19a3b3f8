//! Metalink 4 (RFC 5854) rendering of a replica listing, as Rucio writes it: one `<file>` per
//! DID with its identity, checksums (adler32, and SHA-256 in hex), size, glfn and one `<url>`
//! per copy in priority order.

use super::list::FileReplicas;

pub fn render(files: &[FileReplicas], detailed_url: bool) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n",
    );
    for f in files {
        file(&mut out, f, detailed_url);
    }
    out.push_str("</metalink>\n");
    out
}

fn file(out: &mut String, f: &FileReplicas, detailed_url: bool) {
    let did = f.did.to_string();
    out.push_str(&format!(" <file name=\"{}\">\n", escape(&f.did.name)));
    out.push_str(&format!(
        "  <parents>\n   <did>{}</did>\n  </parents>\n",
        escape(&format!("{0}:{0}", f.did.scope))
    ));
    out.push_str(&format!("  <identity>{}</identity>\n", escape(&did)));
    if let Some(a) = &f.adler32 {
        out.push_str(&format!("  <hash type=\"adler32\">{}</hash>\n", escape(a)));
    }
    if let Some(hex) = f.sha256.as_deref().and_then(sha256_hex) {
        out.push_str(&format!("  <hash type=\"sha-256\">{hex}</hash>\n"));
    }
    out.push_str(&format!("  <size>{}</size>\n", f.bytes));
    out.push_str(&format!(
        "  <glfn name=\"/rucio/{}\"></glfn>\n",
        escape(&did)
    ));
    for c in &f.copies {
        let attrs = if detailed_url {
            format!(
                "location=\"{}\" domain=\"wan\" priority=\"{}\" client_extract=\"false\"",
                escape(&c.rse),
                c.priority
            )
        } else {
            format!(
                "location=\"{}\" priority=\"{}\"",
                escape(&c.rse),
                c.priority
            )
        };
        out.push_str(&format!("  <url {attrs}>{}</url>\n", escape(&c.pfn)));
    }
    out.push_str(" </file>\n");
}

/// Metalink hashes are hex; the catalogue keeps SHA-256 in the CCS encoding.
fn sha256_hex(ccs: &str) -> Option<String> {
    crate::model::hash::decode(ccs).map(|d| d.iter().map(|b| format!("{b:02x}")).collect())
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rucio::list::Located;
    use crate::model::replica::{Did, ReplicaState};

    #[test]
    fn renders_escaped_files_with_urls_in_priority_order() {
        let f = FileReplicas {
            did: Did::new("bkt", "a&b<c>"),
            bytes: 3,
            adler32: Some("024d0127".into()),
            sha256: Some(crate::model::hash::of(b"abc")),
            copies: vec![Located {
                rse: "site-a".into(),
                pfn: "http://h/replicator/remote/buckets/bkt/a%26b".into(),
                state: ReplicaState::Available,
                priority: 1,
            }],
        };
        let xml = render(&[f], true);
        assert!(xml.contains("<file name=\"a&amp;b&lt;c&gt;\">"), "{xml}");
        assert!(xml.contains("<identity>bkt:a&amp;b&lt;c&gt;</identity>"));
        assert!(xml.contains(
            "<hash type=\"sha-256\">ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad</hash>"
        ));
        assert!(xml.contains("<url location=\"site-a\" domain=\"wan\" priority=\"1\""));
        assert!(render(&[], false).ends_with("</metalink>\n"));
    }
}
