//! Bearer-token verification: the trusted keys (the HS256 secret, PEM public keys, a JWKS) and
//! what a valid token grants.

use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::AuthConfig;

/// Who a valid token speaks for and what it may do. Handlers find it in the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The `sub` claim.
    pub subject: Option<String>,
    /// The `client_id` claim (OAuth2 token exchange, RFC 8693), when the token carries one.
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
}

impl Principal {
    pub fn has_any(&self, wanted: &[&str]) -> bool {
        self.scopes.iter().any(|s| wanted.contains(&s.as_str()))
    }

    /// Who the token speaks for on the data plane: `client_id`, else `sub`.
    pub fn data_plane_client(&self) -> Option<&str> {
        self.client_id.as_deref().or(self.subject.as_deref())
    }
}

/// Why a request has no usable token: every reason is a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Missing,
    NotBearer,
    Malformed,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    Invalid(String),
}

impl Rejection {
    pub fn describe(&self) -> String {
        match self {
            Self::Missing => "no bearer token: send Authorization: Bearer <token>".into(),
            Self::NotBearer => "the Authorization header is not a Bearer token".into(),
            Self::Malformed => "the bearer token is not a well-formed JWT".into(),
            Self::UnknownKey => "no trusted key matches the token's algorithm and key id".into(),
            Self::BadSignature => "the token's signature does not verify".into(),
            Self::Expired => "the token has expired".into(),
            Self::NotYetValid => "the token is not valid yet (nbf)".into(),
            Self::WrongIssuer => "the token's issuer (iss) is not accepted".into(),
            Self::WrongAudience => "the token's audience (aud) is not accepted".into(),
            Self::Invalid(why) => format!("invalid token: {why}"),
        }
    }

    fn from_jwt_error(kind: &ErrorKind) -> Self {
        match kind {
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => Self::WrongIssuer,
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => Self::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) => Self::Invalid(format!("no {claim} claim")),
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => Self::BadSignature,
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_) => Self::Malformed,
            other => Self::Invalid(format!("{other:?}")),
        }
    }
}

/// One key a token may be signed with, and the algorithms it may be used with (a key is never
/// used outside its family, which rules out algorithm confusion).
struct TrustedKey {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

pub struct Verifier {
    keys: Vec<TrustedKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
}

/// A claim that IdPs write either as a space-separated string or as an array.
#[derive(Deserialize)]
#[serde(untagged)]
enum Words {
    One(String),
    Many(Vec<String>),
}

impl Words {
    fn into_vec(self) -> Vec<String> {
        match self {
            Words::One(s) => s.split_whitespace().map(str::to_owned).collect(),
            Words::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    client_id: Option<String>,
    scope: Option<Words>,
    scopes: Option<Words>,
}

impl Claims {
    fn into_principal(self) -> Principal {
        let mut scopes = self.scope.map(Words::into_vec).unwrap_or_default();
        scopes.extend(self.scopes.map(Words::into_vec).unwrap_or_default());
        Principal {
            subject: self.sub.filter(|s| !s.is_empty()),
            client_id: self.client_id.filter(|s| !s.is_empty()),
            scopes,
        }
    }
}

impl Verifier {
    /// Loads every configured key; a key file that cannot be used is an error naming it.
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.jwt_secret {
            keys.push(TrustedKey {
                kid: None,
                key: DecodingKey::from_secret(secret.as_bytes()),
                algorithms: vec![Algorithm::HS256],
            });
        }
        for path in &config.public_key_files {
            let key = pem_key(path)
                .with_context(|| format!("[auth] public_key_files: {}", path.display()))?;
            keys.push(key);
        }
        if let Some(path) = &config.jwks_file {
            let jwks =
                jwks_keys(path).with_context(|| format!("[auth] jwks_file: {}", path.display()))?;
            keys.extend(jwks);
        }
        Ok(Self {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway_secs: config.leeway_secs,
        })
    }

    /// A verifier that trusts nothing (every token is refused).
    pub fn refusing_all() -> Self {
        Self {
            keys: Vec::new(),
            issuer: None,
            audience: None,
            leeway_secs: 0,
        }
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Checks the signature against the keys that fit the token's `alg` (and `kid`), then
    /// `exp`, `nbf`, and `iss`/`aud` when configured.
    pub fn verify(&self, token: &str) -> Result<Principal, Rejection> {
        let header = decode_header(token).map_err(|_| Rejection::Malformed)?;
        let validation = self.validation(header.alg);
        let mut outcome = Err(Rejection::UnknownKey);
        for trusted in self.candidates(header.alg, header.kid.as_deref()) {
            match decode::<Claims>(token, &trusted.key, &validation) {
                Ok(data) => return Ok(data.claims.into_principal()),
                Err(e) => {
                    let rejection = Rejection::from_jwt_error(e.kind());
                    // A signature that verified makes this key the right one: its verdict stands.
                    if rejection != Rejection::BadSignature {
                        return Err(rejection);
                    }
                    outcome = Err(rejection);
                }
            }
        }
        outcome
    }

    fn candidates<'a>(
        &'a self,
        alg: Algorithm,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a TrustedKey> {
        self.keys.iter().filter(move |k| {
            k.algorithms.contains(&alg)
                && match (kid, k.kid.as_deref()) {
                    (Some(wanted), Some(have)) => wanted == have,
                    _ => true,
                }
        })
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.validate_nbf = true;
        // jsonwebtoken tolerates 60 s of clock skew by default; `[auth] leeway_secs` decides.
        v.leeway = self.leeway_secs;
        if let Some(issuer) = &self.issuer {
            v.set_issuer(&[issuer]);
            v.required_spec_claims.insert("iss".into());
        }
        if let Some(audience) = &self.audience {
            v.set_audience(&[audience]);
            v.required_spec_claims.insert("aud".into());
        }
        v
    }
}

/// A PEM public key: RSA, EC (P-256/P-384) or Ed25519.
fn pem_key(path: &Path) -> anyhow::Result<TrustedKey> {
    let pem = std::fs::read(path).context("cannot read the file")?;
    let key = DecodingKey::from_rsa_pem(&pem)
        .or_else(|_| DecodingKey::from_ec_pem(&pem))
        .or_else(|_| DecodingKey::from_ed_pem(&pem))
        .map_err(|_| anyhow::anyhow!("not a PEM RSA, EC or Ed25519 public key"))?;
    Ok(TrustedKey {
        kid: None,
        algorithms: key.family().algorithms().to_vec(),
        key,
    })
}

/// The signing keys of a JWKS document; keys we cannot use are skipped with a warning.
fn jwks_keys(path: &Path) -> anyhow::Result<Vec<TrustedKey>> {
    #[derive(Deserialize)]
    struct JwkSet {
        keys: Vec<serde_json::Value>,
    }
    let text = std::fs::read(path).context("cannot read the file")?;
    let set: JwkSet =
        serde_json::from_slice(&text).context("not a JWKS document ({\"keys\": [...]})")?;
    let mut keys = Vec::new();
    for (i, value) in set.keys.into_iter().enumerate() {
        match jwk_key(value) {
            Ok(Some(key)) => keys.push(key),
            Ok(None) => {}
            Err(e) => tracing::warn!("[auth] jwks_file {}: key #{i} skipped: {e}", path.display()),
        }
    }
    anyhow::ensure!(!keys.is_empty(), "no usable signing key in the JWKS");
    Ok(keys)
}

fn jwk_key(value: serde_json::Value) -> anyhow::Result<Option<TrustedKey>> {
    let jwk: Jwk = serde_json::from_value(value)?;
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return Ok(None);
    }
    let key = DecodingKey::from_jwk(&jwk)?;
    let algorithms = match jwk.common.key_algorithm {
        Some(alg) => vec![Algorithm::from_str(&alg.to_string())?],
        None => default_algorithms(&jwk, &key),
    };
    Ok(Some(TrustedKey {
        kid: jwk.common.key_id.clone(),
        key,
        algorithms,
    }))
}

/// A JWK without `alg`: what its type allows (an EC key: the one algorithm of its curve).
fn default_algorithms(jwk: &Jwk, key: &DecodingKey) -> Vec<Algorithm> {
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => Vec::new(),
        },
        _ => key.family().algorithms().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn secret_config(secret: &str) -> AuthConfig {
        AuthConfig {
            jwt_secret: Some(secret.into()),
            ..AuthConfig::default()
        }
    }

    fn hs256(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn scope_string_and_scopes_array_both_count() {
        let v = Verifier::from_config(&secret_config("s")).unwrap();
        let t = hs256(
            "s",
            serde_json::json!({"sub": "ops", "exp": now() + 60, "scope": "a b", "scopes": ["c"]}),
        );
        let p = v.verify(&t).unwrap();
        assert_eq!(p.subject.as_deref(), Some("ops"));
        assert_eq!(p.scopes, ["a", "b", "c"]);
    }

    #[test]
    fn wrong_secret_expired_and_garbage_are_rejected() {
        let v = Verifier::from_config(&secret_config("s")).unwrap();
        let claims = serde_json::json!({"sub": "x", "exp": now() + 60});
        assert_eq!(
            v.verify(&hs256("other", claims)),
            Err(Rejection::BadSignature)
        );
        let old = serde_json::json!({"sub": "x", "exp": now() - 3600});
        assert_eq!(v.verify(&hs256("s", old)), Err(Rejection::Expired));
        assert_eq!(v.verify("not-a-jwt"), Err(Rejection::Malformed));
    }

    #[test]
    fn issuer_and_audience_are_required_when_configured() {
        let mut config = secret_config("s");
        config.issuer = Some("me".into());
        config.audience = Some("mirrorgate".into());
        let v = Verifier::from_config(&config).unwrap();
        let exp = now() + 60;
        let good = serde_json::json!({"exp": exp, "iss": "me", "aud": "mirrorgate"});
        assert!(v.verify(&hs256("s", good)).is_ok());
        let no_iss = serde_json::json!({"exp": exp, "aud": "mirrorgate"});
        assert_eq!(v.verify(&hs256("s", no_iss)), Err(Rejection::WrongIssuer));
        let bad_aud = serde_json::json!({"exp": exp, "iss": "me", "aud": "other"});
        assert_eq!(
            v.verify(&hs256("s", bad_aud)),
            Err(Rejection::WrongAudience)
        );
    }

    #[test]
    fn a_secret_never_verifies_other_algorithms() {
        let v = Verifier::from_config(&secret_config("s")).unwrap();
        let t = encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"exp": now() + 60}),
            &EncodingKey::from_secret(b"s"),
        )
        .unwrap();
        assert_eq!(v.verify(&t), Err(Rejection::UnknownKey));
    }

    #[test]
    fn leeway_is_the_configured_one() {
        let mut config = secret_config("s");
        config.leeway_secs = 0;
        let v = Verifier::from_config(&config).unwrap();
        // Expired 30 s ago: jsonwebtoken's default leeway (60 s) would still accept it.
        let late = serde_json::json!({"sub": "x", "exp": now() - 30});
        assert_eq!(v.verify(&hs256("s", late.clone())), Err(Rejection::Expired));
        config.leeway_secs = 60;
        let v = Verifier::from_config(&config).unwrap();
        assert!(v.verify(&hs256("s", late)).is_ok());
        let client = serde_json::json!({"sub": "x", "client_id": "c", "exp": now() + 60});
        let p = v.verify(&hs256("s", client)).unwrap();
        assert_eq!(p.data_plane_client(), Some("c"));
    }
}
