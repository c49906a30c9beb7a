//! Token verification: turns the JWT of a Hello or a Refresh into verified facts for the core
//! ([`VerifiedToken`]), or into the reason it is refused ([`AuthRefusal`]).
//!
//! **What is verified.** The signature, with a key from the gateway's configuration only —
//! the HS256 secret, the PEM public key files, or the JWKS key whose `kid` the token names;
//! the key's type decides which `alg` it accepts, so a token cannot make a public key serve as
//! an HMAC secret, and keys or key URLs in the token's header (`jwk`, `jku`, `x5u`) are never
//! used. Then the claims: `sub` and `exp` are required; `exp`, `nbf` and `iat` are checked
//! against the caller's clock with a leeway; `aud` and `iss` when the gateway is configured
//! with them; every claim's type and size. Last, revocation: [`Authenticator::revoke`] refuses
//! the tokens of an identity issued up to a moment.
//!
//! **What is trusted.** Whoever holds a configured key: the claims of a token that verifies
//! (identity, device, room grants, `signal`, `name`, `metadata`) are taken as they are. The
//! client chooses nothing else: what peers see of a session comes from its token.
//!
//! **Why here and not in the core.** The core is sans-IO and deterministic: no clock of its
//! own, no files, no crypto. Verifying needs all three (a wall clock for `exp`, key files that
//! change, signatures), so the runtime calls [`Authenticator::verify`] and hands the core
//! only the outcome; the core then applies grants and expiry with its own clock. The
//! signatures are computed by `ring` (the crypto library the TLS stack already uses) through
//! jsonwebtoken; no cryptography is written here.

mod claims;
mod keys;
mod mint;
mod provider;
mod settings;
pub mod token_cli;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

pub use claims::{
    MAX_DEVICE_BYTES, MAX_METADATA_BYTES, MAX_NAME_BYTES, MAX_ROOM_GRANT_BYTES, MAX_ROOM_GRANTS,
    MAX_SUB_BYTES,
};
pub use mint::{MintError, TokenSpec, mint_hs256};
pub use settings::{
    AuthConfig, AuthSettings, AuthSettingsError, DEFAULT_JWKS_POLL_INTERVAL, DEFAULT_LEEWAY,
    MIN_SECRET_BYTES, SecretString, read_secret_file,
};

use crate::proto::ErrorCode;
use keys::{JwksWatcher, KeyOrigin, VerifyingKey};

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Which rooms a token grants (the `rooms` claim: `"*"` every room, `"lobby"` that room,
/// `"team-*"` every room starting with `team-`, stored without the `*`). The core's own type:
/// the core checks grants, this module only reads them from the token.
pub use crate::core::identity::RoomGrant;

/// What a verified token says. Absent optional claims are `None` or empty; a token without a
/// `rooms` claim grants no room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// `sub`: the identity.
    pub sub: String,
    /// `device`: one session per identity and device.
    pub device: Option<String>,
    /// `exp` (without the leeway).
    pub expires_at: SystemTime,
    /// `iat`, when the token has one.
    pub issued_at: Option<SystemTime>,
    /// `rooms`.
    pub rooms: Vec<RoomGrant>,
    /// `signal` (default true): may send signals.
    pub signal: bool,
    /// `name`, or empty.
    pub name: String,
    /// `metadata` as compact JSON text, or empty.
    pub metadata: String,
}

impl VerifiedToken {
    /// How long the token is valid from `now` (zero once expired).
    pub fn expires_in(&self, now: SystemTime) -> Duration {
        self.expires_at
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }
}

/// Why a token is refused. The messages help a developer (which claim, which key id) and never
/// contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthRefusal {
    #[error("no token: this gateway requires a JWT in Hello.token (and Refresh.token)")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token refused: {0}")]
    BadSignature(String),
    #[error("token expired (exp is past, beyond the clock leeway): get a new one")]
    Expired,
    #[error("token not valid yet (nbf or iat is in the future, beyond the clock leeway)")]
    NotYetValid,
    #[error("token is for another audience (aud does not list the one this gateway requires)")]
    WrongAudience,
    #[error("token is from another issuer (iss is not the one this gateway requires)")]
    WrongIssuer,
    #[error("token revoked: its identity was revoked after it was issued; get a new token")]
    Revoked,
}

impl AuthRefusal {
    /// For a metric label.
    pub fn label(&self) -> &'static str {
        match self {
            AuthRefusal::Missing => "missing",
            AuthRefusal::Malformed(_) => "malformed",
            AuthRefusal::BadSignature(_) => "bad_signature",
            AuthRefusal::Expired => "expired",
            AuthRefusal::NotYetValid => "not_yet_valid",
            AuthRefusal::WrongAudience => "wrong_audience",
            AuthRefusal::WrongIssuer => "wrong_issuer",
            AuthRefusal::Revoked => "revoked",
        }
    }

    /// The wire contract's `TOKEN_*` code.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthRefusal::Missing => ErrorCode::TokenMissing,
            AuthRefusal::Malformed(_) => ErrorCode::TokenMalformed,
            AuthRefusal::BadSignature(_) => ErrorCode::TokenBadSignature,
            AuthRefusal::Expired => ErrorCode::TokenExpired,
            AuthRefusal::NotYetValid => ErrorCode::TokenNotYetValid,
            AuthRefusal::WrongAudience => ErrorCode::TokenWrongAudience,
            AuthRefusal::WrongIssuer => ErrorCode::TokenWrongIssuer,
            AuthRefusal::Revoked => ErrorCode::TokenRevoked,
        }
    }
}

/// Verifies tokens against the configured keys. Share it with an `Arc`: every method takes
/// `&self` (the JWKS keys and the revocations are behind locks held for microseconds).
pub struct Authenticator {
    static_keys: Vec<VerifyingKey>,
    jwks: Option<JwksWatcher>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: Duration,
    /// `sub` → tokens issued at or before this moment are revoked.
    revoked: Mutex<HashMap<String, SystemTime>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("static_keys", &self.static_keys.len())
            .field("jwks", &self.jwks.as_ref().map(JwksWatcher::path))
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

/// A key id from a token, shortened for messages.
fn shown(kid: &str) -> String {
    let mut shown: String = kid.chars().take(64).collect();
    if shown.len() < kid.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Self {
        provider::ensure_installed();
        let jwks = config
            .jwks
            .map(|snapshot| JwksWatcher::new(snapshot, config.jwks_poll_interval));
        Self {
            static_keys: config.static_keys,
            jwks,
            audience: config.audience,
            issuer: config.issuer,
            leeway: config.leeway,
            revoked: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies `token` at `now` (the wall clock; tests pass their own). Order of checks:
    /// present, shape, signature, claims, times, audience, issuer, revocation.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<VerifiedToken, AuthRefusal> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthRefusal::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthRefusal::Malformed(format!(
                "the token is {} bytes long, more than {MAX_TOKEN_BYTES}",
                token.len()
            )));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            AuthRefusal::Malformed(
                "not a JWT: expected three base64url parts separated by dots, the first a JSON \
                 header whose alg is one of HS256, ES256, ES384, RS256..RS512, PS256..PS512, \
                 EdDSA"
                    .to_owned(),
            )
        })?;
        if header.crit.is_some() {
            return Err(AuthRefusal::Malformed(
                "the header lists critical extensions (crit), which this gateway does not \
                 support"
                    .to_owned(),
            ));
        }
        let claims = self.verify_signature(token, header.alg, header.kid.as_deref(), now)?;
        let rules = claims::ClaimRules {
            leeway: self.leeway,
            audience: self.audience.as_deref(),
            issuer: self.issuer.as_deref(),
        };
        let verified = claims::check(&claims, rules, now)?;
        let revoked = self
            .revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&verified.sub)
            .copied();
        if let Some(revoked_at) = revoked
            && verified.issued_at.is_none_or(|iat| iat <= revoked_at)
        {
            return Err(AuthRefusal::Revoked);
        }
        Ok(verified)
    }

    /// Refuses (`Revoked`) the tokens of `sub` issued (`iat`) at or before `at`, and its tokens
    /// without `iat`; a token issued later is accepted again ("revoked until its next token").
    /// A later call never moves the moment back. `iat` has a resolution of one second: a
    /// token issued in the same second as `at` is revoked too.
    pub fn revoke(&self, sub: &str, at: SystemTime) {
        let mut revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = revoked.entry(sub.to_owned()).or_insert(at);
        *entry = (*entry).max(at);
    }

    fn verify_signature(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
        now: SystemTime,
    ) -> Result<Map<String, Value>, AuthRefusal> {
        // The keys a token with this `alg` and `kid` may verify with: every configured key
        // of the algorithm, and of the JWKS the key the `kid` names (all of the algorithm's
        // for a token without `kid`).
        let jwks_keys = self.jwks.as_ref().map(|jwks| jwks.keys(now));
        let keys: Vec<&VerifyingKey> = self
            .static_keys
            .iter()
            .chain(
                jwks_keys
                    .iter()
                    .flat_map(|keys| keys.iter())
                    .filter(|k| kid.is_none() || k.kid.as_deref() == kid),
            )
            .filter(|k| k.accepts(alg))
            .collect();
        if keys.is_empty() {
            let mut message = format!("no configured key takes alg {alg:?}");
            if let Some(kid) = kid {
                message.push_str(&format!(" with kid {}", shown(kid)));
            }
            if let Some(jwks_keys) = &jwks_keys {
                let kids: Vec<&str> = jwks_keys.iter().filter_map(|k| k.kid.as_deref()).collect();
                let more = kids.len().saturating_sub(10);
                message.push_str(&format!(
                    " (the JWKS has kids {:?}",
                    &kids[..kids.len() - more]
                ));
                if more > 0 {
                    message.push_str(&format!(" and {more} more"));
                }
                message.push(')');
            }
            return Err(AuthRefusal::BadSignature(message));
        }
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        for key in keys.iter().copied() {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => match e.kind() {
                    // jsonwebtoken gives up on claims it cannot read for its own checks (e.g.
                    // `"nbf": [1]`): when the signature verifies with this key, read them
                    // ourselves so that the refusal names the claim.
                    ErrorKind::Json(_) | ErrorKind::Utf8(_)
                        if signature_verifies(token, key, alg) =>
                    {
                        return jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(
                            |_| {
                                AuthRefusal::Malformed(
                                    "the payload is not a JSON object of claims".to_owned(),
                                )
                            },
                        );
                    }
                    ErrorKind::Base64(_) => {
                        return Err(AuthRefusal::Malformed(
                            "the payload or the signature is not base64url".to_owned(),
                        ));
                    }
                    ErrorKind::InvalidToken => {
                        return Err(AuthRefusal::Malformed(
                            "not a JWT with a header this gateway supports".to_owned(),
                        ));
                    }
                    // Does not verify with this key: try the next one.
                    _ => {}
                },
            }
        }
        let tried: Vec<String> = keys.iter().map(|k| k.origin.short()).collect();
        let tried = match tried.len() {
            0..=3 => tried.join(", "),
            n => format!("{} and {} more keys", tried[..3].join(", "), n - 3),
        };
        Err(AuthRefusal::BadSignature(format!(
            "the {alg:?} signature does not verify with {tried}"
        )))
    }

    /// Mints a token with the configured HS256 secret (for a development token route;
    /// `MintError::NoSecret` when the gateway has none). The secret never leaves this type.
    pub fn mint_hs256(&self, spec: &TokenSpec, now: SystemTime) -> Result<String, MintError> {
        let secret = self
            .static_keys
            .iter()
            .find(|k| k.origin == KeyOrigin::Secret)
            .and_then(|k| k.key.try_get_as_bytes().ok())
            .ok_or(MintError::NoSecret)?;
        mint_hs256(secret, spec, now)
    }

    /// Looks at the JWKS file now (whatever the poll interval) and reloads it if it changed.
    /// Returns a description of what happened, `None` without a JWKS file.
    pub fn check_jwks(&self) -> Option<String> {
        self.jwks.as_ref().map(|jwks| match jwks.check_now() {
            keys::JwksCheck::Unchanged => "unchanged".to_owned(),
            keys::JwksCheck::Reloaded { kids } => format!("reloaded, kids {kids:?}"),
            keys::JwksCheck::Broken(reason) => format!("kept the keys loaded before: {reason}"),
        })
    }

    /// Where each configured key comes from (for a start-up banner; no key material).
    pub fn describe_keys(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .static_keys
            .iter()
            .map(|k| describe(&k.origin, &k.algorithms))
            .collect();
        if let Some(jwks) = &self.jwks {
            out.extend(
                jwks.keys_in_force()
                    .iter()
                    .map(|k| describe(&k.origin, &k.algorithms)),
            );
        }
        out
    }
}

/// The signature alone (for a token whose claims jsonwebtoken could not read).
fn signature_verifies(token: &str, key: &VerifyingKey, alg: Algorithm) -> bool {
    let Some((message, signature)) = token.rsplit_once('.') else {
        return false;
    };
    jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key.key, alg).unwrap_or(false)
}

fn describe(origin: &KeyOrigin, algorithms: &[Algorithm]) -> String {
    format!("{origin} ({algorithms:?})")
}
