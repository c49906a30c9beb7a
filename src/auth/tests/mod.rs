//! Token verification, driven with fixed clocks: every refusal, every algorithm (with tokens
//! signed by OpenSSL in `testdata/` and with fresh keys), JWKS rotation, revocation, claims,
//! settings and `token create`.

mod algorithms;
mod claims;
mod cli;
mod jwks;
mod refusals;
mod revocation;
mod settings;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Value, json};

use super::*;

pub const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

/// A fixed wall clock: `at(0)` is 2027-01-15.
pub fn at(offset_secs: i64) -> SystemTime {
    let base = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    if offset_secs >= 0 {
        base + Duration::from_secs(offset_secs.unsigned_abs())
    } else {
        base - Duration::from_secs(offset_secs.unsigned_abs())
    }
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// Claims valid at `at(0)` for an hour, issued at `at(0)`.
pub fn claims(sub: &str) -> Value {
    json!({
        "sub": sub,
        "iat": unix(at(0)),
        "exp": unix(at(3600)),
        "rooms": ["demo"],
    })
}

/// `claims(sub)` with some claims replaced (a `null` removes one).
pub fn claims_with(sub: &str, changes: Value) -> Value {
    let mut claims = claims(sub);
    let (Some(map), Value::Object(changes)) = (claims.as_object_mut(), changes) else {
        panic!("claims are objects");
    };
    for (name, value) in changes {
        if value.is_null() {
            map.remove(&name);
        } else {
            map.insert(name, value);
        }
    }
    claims
}

pub fn sign_with(key: &EncodingKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    provider::ensure_installed();
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("signs")
}

pub fn hs256(claims: &Value) -> String {
    let key = EncodingKey::from_secret(SECRET).expect("non-empty");
    sign_with(&key, Algorithm::HS256, None, claims)
}

/// A token built by hand: any header, any payload bytes, signed with [`SECRET`].
pub fn raw_hs256(header: &str, payload: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET);
    let tag = ring::hmac::sign(&key, message.as_bytes());
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

pub fn hs_config() -> AuthConfig {
    AuthConfig::with_hs256_secret(SECRET).expect("long enough")
}

pub fn hs_auth() -> Authenticator {
    Authenticator::new(hs_config())
}

/// A key pair generated for the test (ring, through rcgen).
pub struct FreshKey {
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub public_pem: String,
}

impl FreshKey {
    pub fn new(alg: Algorithm) -> Self {
        let rcgen_alg = match alg {
            Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Algorithm::ES384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Algorithm::EdDSA => &rcgen::PKCS_ED25519,
            other => panic!("no fresh keys for {other:?}"),
        };
        let pair = rcgen::KeyPair::generate_for(rcgen_alg).expect("generates");
        let der = pair.serialize_der();
        let encoding = match alg {
            Algorithm::EdDSA => EncodingKey::from_ed_der(&der),
            _ => EncodingKey::from_ec_der(&der),
        };
        Self {
            alg,
            encoding,
            public_pem: pair.public_key_pem(),
        }
    }

    pub fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        sign_with(&self.encoding, self.alg, kid, claims)
    }

    /// The public key as a JWKS entry.
    pub fn jwk(&self, kid: &str) -> Value {
        let pem = self.public_pem.as_bytes();
        let public = match self.alg {
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            _ => DecodingKey::from_ec_pem(pem),
        };
        let mut jwk =
            Jwk::from_decoding_key(&public.expect("public key"), Some(self.alg)).expect("jwk");
        jwk.common.key_id = Some(kid.to_owned());
        serde_json::to_value(jwk).expect("serializes")
    }
}

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/auth/testdata")
        .join(name)
}

/// The OpenSSL-signed fixtures.
pub fn fixtures() -> Value {
    let text = std::fs::read_to_string(testdata("tokens.json")).expect("tokens.json");
    serde_json::from_str(&text).expect("JSON")
}

pub fn fixture(name: &str) -> String {
    fixtures()[name].as_str().expect("a token").to_owned()
}

/// When the fixtures are valid: 100 s after they were issued.
pub fn fixture_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_100)
}

pub fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("writes");
    path
}

/// Replaces a file the way deployments should: a new file renamed into place.
pub fn replace(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).expect("writes");
    std::fs::rename(&tmp, path).expect("renames");
}

pub fn jwks_doc(keys: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).expect("serializes")
}

pub fn settings() -> AuthSettings {
    AuthSettings::default()
}

pub fn verified(result: Result<VerifiedToken, AuthRefusal>) -> VerifiedToken {
    match result {
        Ok(token) => token,
        Err(refusal) => panic!("refused: {refusal}"),
    }
}

pub fn refused(result: Result<VerifiedToken, AuthRefusal>) -> AuthRefusal {
    match result {
        Ok(token) => panic!("accepted: {token:?}"),
        Err(refusal) => refusal,
    }
}

/// What `tracing` writes while `f` runs on this thread.
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("not poisoned")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let logs = String::from_utf8_lossy(&buffer.0.lock().expect("not poisoned")).into_owned();
    (out, logs)
}
