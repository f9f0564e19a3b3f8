//! Who is calling, as the server and the trust middlewares (`crate::api::trust`) record it in the
//! request extensions: the names of a verified mTLS client certificate, the authenticated peer
//! site, and the client id a data-plane token speaks for.

/// The names of the client certificate of the connection (DNS subject alternative names, then
/// the subject's common names), inserted by the server on every request of a mutual-TLS
/// connection. The certificate chain was verified by rustls against `[tls] ca_file` before
/// the first request; a name equal to a site id of the topology authenticates that peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCertNames(pub Vec<String>);

/// The peer site a `/replicator/remote/**` request was authenticated as (a `mirrorgate::peer`
/// token's `sub`, or a certificate name). Absent when no credential is checked (auth off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSite(pub String);

/// With `[auth] data_plane = true`: the client id the request's token speaks for (its
/// `client_id` claim, else `sub`). The `ClientId` extractor prefers it to the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClient(pub String);

/// `commonName` (2.5.4.3).
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// `subjectAltName` (2.5.29.17).
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
/// `[2] IMPLICIT IA5String`: the dNSName choice of a GeneralName.
const DNS_NAME: u8 = 0x82;
/// `[3] EXPLICIT Extensions` of a TBSCertificate.
const EXTENSIONS: u8 = 0xa3;

/// The DNS names (subjectAltName) and the common names of a DER X.509 certificate, in that
/// order, without duplicates. A certificate that does not parse has no names. Only reads the
/// certificate: its chain is verified by rustls before.
pub fn cert_names(cert_der: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let _ = collect_names(cert_der, &mut names);
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

fn collect_names(der: &[u8], names: &mut Vec<String>) -> Option<()> {
    let (tag, cert, _) = tlv(der)?;
    (tag == SEQUENCE).then_some(())?;
    let (tag, tbs, _) = tlv(cert)?;
    (tag == SEQUENCE).then_some(())?;
    let mut fields = Items(tbs).peekable();
    // version [0] EXPLICIT, optional.
    if fields.peek().is_some_and(|(tag, _)| *tag == 0xa0) {
        fields.next();
    }
    // serialNumber, signature, issuer, validity, subject.
    let subject = fields.nth(4)?;
    let mut common_names = Vec::new();
    if subject.0 == SEQUENCE {
        for (tag, rdn) in Items(subject.1) {
            if tag != SET {
                continue;
            }
            for (tag, attribute) in Items(rdn) {
                let mut parts = Items(attribute);
                if let (SEQUENCE, Some((OID, oid)), Some((_, value))) =
                    (tag, parts.next(), parts.next())
                {
                    if oid == OID_COMMON_NAME {
                        if let Ok(cn) = std::str::from_utf8(value) {
                            common_names.push(cn.to_owned());
                        }
                    }
                }
            }
        }
    }
    for (tag, extensions) in fields {
        if tag != EXTENSIONS {
            continue;
        }
        let (_, list, _) = tlv(extensions)?;
        for (_, extension) in Items(list) {
            let mut parts = Items(extension);
            let Some((OID, oid)) = parts.next() else {
                continue;
            };
            if oid != OID_SUBJECT_ALT_NAME {
                continue;
            }
            // critical (BOOLEAN) is optional; the value is the last OCTET STRING.
            let Some((_, value)) = parts.find(|(tag, _)| *tag == OCTET_STRING) else {
                continue;
            };
            let Some((SEQUENCE, general_names, _)) = tlv(value) else {
                continue;
            };
            for (tag, name) in Items(general_names) {
                if tag == DNS_NAME {
                    if let Ok(dns) = std::str::from_utf8(name) {
                        names.push(dns.to_owned());
                    }
                }
            }
        }
    }
    names.extend(common_names);
    Some(())
}

/// One DER element: (tag, content, what follows). Low tag numbers and definite lengths only
/// (all that X.509 uses).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The elements of a constructed value, in order (stops at the first malformed one).
struct Items<'a>(&'a [u8]);

impl<'a> Iterator for Items<'a> {
    type Item = (u8, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let (tag, content, rest) = tlv(self.0)?;
        self.0 = rest;
        Some((tag, content))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_has_no_names() {
        assert!(cert_names(b"").is_empty());
        assert!(cert_names(b"\x30\x05\x30\x03\x02\x01").is_empty());
        assert!(cert_names(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_empty());
    }

    #[test]
    fn lengths() {
        assert_eq!(
            tlv(&[0x04, 0x01, 0xaa, 0xbb]),
            Some((0x04, &[0xaa][..], &[0xbb][..]))
        );
        let long = [&[0x04, 0x81, 0x80][..], &[7u8; 0x80]].concat();
        assert_eq!(tlv(&long).map(|t| t.1.len()), Some(0x80));
        assert_eq!(tlv(&[0x04, 0x02, 0xaa]), None);
    }

    #[test]
    fn dns_names_then_common_name() {
        let sans = vec![
            "site-b".to_owned(),
            "127.0.0.1".to_owned(),
            "b.example".to_owned(),
        ];
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "mirrorgate");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "site-c");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(cert_names(cert.der()), ["site-b", "b.example", "site-c"]);
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "only-cn");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(cert_names(cert.der()), ["only-cn"]);
    }
}
