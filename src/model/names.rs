//! CCS name rules: bucket `^[0-9a-z-]{3,63}$`, object `^[0-9a-zA-Z_./-]{1,1024}$`,
//! metadata key `^[a-zA-Z_][0-9a-zA-Z_]*$`.

use crate::error::{Error, Result};

pub fn check_bucket(name: &str) -> Result<()> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "invalid bucket name {name:?}: 3 to 63 characters of a-z, 0-9 and '-'"
        )))
    }
}

pub fn check_object(name: &str) -> Result<()> {
    let ok = (1..=1024).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "invalid object name {:?}: 1 to 1024 characters of a-z, A-Z, 0-9, '_', '.', '/' and '-'",
            name.chars().take(100).collect::<String>()
        )))
    }
}

pub fn check_metadata_key(key: &str) -> Result<()> {
    let mut bytes = key.bytes();
    let ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "invalid metadata key {key:?}: letters, digits and '_', not starting with a digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        assert!(check_bucket("abc").is_ok());
        assert!(check_bucket("my-bucket-01").is_ok());
        assert!(check_bucket("ab").is_err());
        assert!(check_bucket("ABC").is_err());
        assert!(check_bucket("a_b").is_err());
        assert!(check_bucket(&"a".repeat(64)).is_err());
    }

    #[test]
    fn object_names() {
        assert!(check_object("dir/sub/file.txt").is_ok());
        assert!(check_object("").is_err());
        assert!(check_object("sp ace").is_err());
        assert!(check_object("é").is_err());
        assert!(check_object(&"a".repeat(1025)).is_err());
    }

    #[test]
    fn metadata_keys() {
        assert!(check_metadata_key("_a1").is_ok());
        assert!(check_metadata_key("1a").is_err());
        assert!(check_metadata_key("a-b").is_err());
        assert!(check_metadata_key("").is_err());
    }
}
