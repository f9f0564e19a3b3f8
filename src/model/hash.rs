//! SHA-256 as CCS encodes it: base32 with the extended-hex alphabet, lowercase, no padding
//! (52 characters).

use data_encoding::{Encoding, Specification};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

pub const ENCODED_LEN: usize = 52;

fn base32hex_lower() -> &'static Encoding {
    static ENC: OnceLock<Encoding> = OnceLock::new();
    ENC.get_or_init(|| {
        let mut spec = Specification::new();
        spec.symbols.push_str("0123456789abcdefghijklmnopqrstuv");
        spec.encoding().expect("valid base32hex spec")
    })
}

/// Encodes a SHA-256 digest the CCS way.
pub fn encode(digest: &[u8]) -> String {
    base32hex_lower().encode(digest)
}

/// Parses a client-sent hash; accepts upper case too, answers None when it is not a SHA-256.
pub fn decode(text: &str) -> Option<[u8; 32]> {
    if text.len() != ENCODED_LEN {
        return None;
    }
    let bytes = base32hex_lower()
        .decode(text.to_ascii_lowercase().as_bytes())
        .ok()?;
    bytes.try_into().ok()
}

/// Normalises a client-sent hash to the canonical lowercase form, or None when invalid.
pub fn normalize(text: &str) -> Option<String> {
    decode(text).map(|d| encode(&d))
}

/// Hash of a byte slice, encoded.
pub fn of(data: &[u8]) -> String {
    encode(&Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_matches_known_value() {
        // SHA-256("") = e3b0c442... ; base32hex-lower of it, computed independently.
        let h = of(b"");
        assert_eq!(h.len(), ENCODED_LEN);
        assert_eq!(h, "seoc8gkovge196nruj49irtp4gjqsgf4cidp6j54imchmu2in1ag");
        assert_eq!(decode(&h).unwrap().to_vec(), Sha256::digest(b"").to_vec());
    }

    #[test]
    fn rejects_wrong_length_and_alphabet() {
        assert!(decode("abc").is_none());
        assert!(decode(&"w".repeat(52)).is_none());
        assert_eq!(normalize(&of(b"x").to_uppercase()), Some(of(b"x")));
    }
}
