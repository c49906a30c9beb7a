//! Minting HS256 tokens, for development and tests (`signalgate token create`, a dev token
//! route). A minted token passes the same claim rules as verification, so it always verifies
//! with the same secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use super::claims::{self, ClaimRules};
use super::settings::MIN_SECRET_BYTES;
use super::{AuthRefusal, provider};

/// Longest lifetime of a minted token.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// The claims of a token to mint.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSpec {
    pub sub: String,
    /// Room names; `"team-*"` grants a prefix, `"*"` every room.
    pub rooms: Vec<String>,
    /// From now to `exp`, in whole seconds (1 s to 366 days).
    pub ttl: Duration,
    pub device: Option<String>,
    pub name: Option<String>,
    pub metadata: Option<Value>,
    /// May send signals.
    pub signal: bool,
    pub audience: Option<String>,
    pub issuer: Option<String>,
}

impl TokenSpec {
    /// A token for `sub` granting `rooms`, valid for an hour, that may signal.
    pub fn new(sub: impl Into<String>, rooms: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            sub: sub.into(),
            rooms: rooms.into_iter().map(Into::into).collect(),
            ttl: Duration::from_secs(3600),
            device: None,
            name: None,
            metadata: None,
            signal: true,
            audience: None,
            issuer: None,
        }
    }

    /// The claims this spec gives at `now` (`iat` = `now` in whole seconds).
    fn claims(&self, now: SystemTime) -> Result<Map<String, Value>, MintError> {
        if self.ttl < Duration::from_secs(1) || self.ttl > MAX_TTL {
            return Err(MintError::Ttl(self.ttl));
        }
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| MintError::Clock)?
            .as_secs();
        let mut claims = Map::new();
        claims.insert("sub".into(), self.sub.clone().into());
        claims.insert("iat".into(), iat.into());
        claims.insert("exp".into(), (iat + self.ttl.as_secs()).into());
        claims.insert("rooms".into(), self.rooms.clone().into());
        claims.insert("signal".into(), self.signal.into());
        let optional = [
            ("device", self.device.clone().map(Value::from)),
            ("name", self.name.clone().map(Value::from)),
            ("metadata", self.metadata.clone()),
            ("aud", self.audience.clone().map(Value::from)),
            ("iss", self.issuer.clone().map(Value::from)),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                claims.insert(name.into(), value);
            }
        }
        Ok(claims)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error(
        "the HS256 secret is {0} bytes long; at least {MIN_SECRET_BYTES} are required \
         (e.g. `openssl rand -base64 48`)"
    )]
    SecretTooShort(usize),
    #[error("ttl {0:?} is out of range (1s to 366 days)")]
    Ttl(Duration),
    #[error("the gateway has no HS256 secret to sign with (--auth-hs256-secret-file)")]
    NoSecret,
    #[error("the clock is before 1970")]
    Clock,
    #[error("invalid claim: {0}")]
    Claims(String),
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// Signs a token for `spec` with the HS256 `secret` (at least 32 bytes), issued at `now`.
pub fn mint_hs256(secret: &[u8], spec: &TokenSpec, now: SystemTime) -> Result<String, MintError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(MintError::SecretTooShort(secret.len()));
    }
    let claims = spec.claims(now)?;
    let rules = ClaimRules {
        leeway: Duration::ZERO,
        audience: spec.audience.as_deref(),
        issuer: spec.issuer.as_deref(),
    };
    claims::check(&claims, rules, now).map_err(|refusal| match refusal {
        AuthRefusal::Malformed(message) => MintError::Claims(message),
        other => MintError::Claims(other.to_string()),
    })?;
    provider::ensure_installed();
    let key = EncodingKey::from_secret(secret).map_err(|e| MintError::Sign(e.to_string()))?;
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("JWT".to_owned());
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| MintError::Sign(e.to_string()))
}
