//! Verification keys: the HS256 secret, PEM public key files (type detected from the file)
//! and a JWKS file that is reloaded when it changes.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, TryLockError};
use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde_json::Value;

const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Smallest RSA modulus accepted (ring verifies 2048..=8192 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("JWKS file {}: {reason}", path.display())]
    Jwks { path: PathBuf, reason: String },
}

/// Where a key comes from, for messages (never the key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyOrigin {
    Secret,
    PemFile(PathBuf),
    Jwks { path: PathBuf, kid: String },
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyOrigin::Secret => write!(f, "the HS256 secret"),
            KeyOrigin::PemFile(path) => write!(f, "public key file {}", path.display()),
            KeyOrigin::Jwks { path, kid } => {
                write!(f, "kid {kid:?} of JWKS file {}", path.display())
            }
        }
    }
}

impl KeyOrigin {
    /// For messages to clients: file names without their directories.
    pub fn short(&self) -> String {
        let name = |path: &Path| {
            path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        };
        match self {
            KeyOrigin::Secret => "the HS256 secret".to_owned(),
            KeyOrigin::PemFile(path) => format!("public key file {}", name(path)),
            KeyOrigin::Jwks { kid, .. } => format!("JWKS kid {kid:?}"),
        }
    }
}

/// One key and the algorithms a token may use with it (the key's type decides them: a token
/// never chooses how its key is interpreted).
#[derive(Debug, Clone)]
pub(crate) struct VerifyingKey {
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
    pub kid: Option<String>,
    pub origin: KeyOrigin,
}

impl VerifyingKey {
    /// The caller checked the secret's length (it is never empty).
    pub fn hs256(secret: &[u8]) -> Result<Self, super::AuthSettingsError> {
        let key = DecodingKey::from_secret(secret).map_err(|_| {
            super::AuthSettingsError::Invalid("the HS256 secret is empty".to_owned())
        })?;
        Ok(Self {
            key,
            algorithms: vec![Algorithm::HS256],
            kid: None,
            origin: KeyOrigin::Secret,
        })
    }

    pub fn accepts(&self, algorithm: Algorithm) -> bool {
        self.algorithms.contains(&algorithm)
    }
}

fn pem_error(path: &Path, reason: impl Into<String>) -> KeyError {
    KeyError::Pem {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Reads a PEM public key (or certificate) file and detects its type.
pub(crate) fn load_public_key_file(path: &Path) -> Result<VerifyingKey, KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
        what: "public key file",
        path: path.to_owned(),
        source,
    })?;
    parse_public_key_pem(&bytes, path)
}

fn pem_label(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = &text[start..];
    let end = rest.find("-----")?;
    Some(rest[..end].trim())
}

pub(crate) fn parse_public_key_pem(bytes: &[u8], path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| pem_error(path, "is not a PEM file (it is not text)"))?;
    let Some(label) = pem_label(text) else {
        return Err(pem_error(path, "is not a PEM file (no -----BEGIN line)"));
    };
    if label.contains("PRIVATE KEY") {
        return Err(pem_error(
            path,
            format!(
                "holds a private key (BEGIN {label}); give the token issuer's public key \
                 (`openssl pkey -in key.pem -pubout`)"
            ),
        ));
    }
    if !matches!(label, "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE") {
        return Err(pem_error(
            path,
            format!("holds a {label:?}, not a public key or certificate"),
        ));
    }
    let origin = KeyOrigin::PemFile(path.to_owned());
    let make = |key: DecodingKey, algorithms: Vec<Algorithm>| VerifyingKey {
        key,
        algorithms,
        kid: None,
        origin: origin.clone(),
    };
    if let Ok(key) = DecodingKey::from_ec_pem(bytes) {
        let algorithm = match key.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => Algorithm::ES256,
            Ok(97) => Algorithm::ES384,
            _ => {
                return Err(pem_error(
                    path,
                    "holds an EC key on a curve this gateway does not support (P-256, P-384)",
                ));
            }
        };
        return Ok(make(key, vec![algorithm]));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(bytes) {
        if key.try_get_as_bytes().map(<[u8]>::len).ok() != Some(32) {
            return Err(pem_error(path, "holds an EdDSA key that is not Ed25519"));
        }
        return Ok(make(key, vec![Algorithm::EdDSA]));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(bytes) {
        return Ok(make(key, RSA_ALGORITHMS.to_vec()));
    }
    Err(pem_error(
        path,
        format!(
            "BEGIN {label} does not hold a supported public key (EC P-256/P-384, Ed25519, \
             RSA)"
        ),
    ))
}

/// The parts of a file's metadata that change when it is rewritten or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

impl FileStamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: meta.ino(),
            device: meta.dev(),
        })
    }
}

/// A JWKS file as read once: its usable keys and the entries that were skipped (and why).
#[derive(Debug, Clone)]
pub(crate) struct JwksSnapshot {
    pub path: PathBuf,
    pub keys: Vec<VerifyingKey>,
    pub skipped: Vec<String>,
    pub stamp: Option<FileStamp>,
}

impl JwksSnapshot {
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let stamp = FileStamp::of(path).ok();
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            what: "JWKS file",
            path: path.to_owned(),
            source,
        })?;
        let (keys, skipped) = parse_jwks(&bytes, path)?;
        for reason in &skipped {
            tracing::warn!(file = %path.display(), "JWKS entry skipped: {reason}");
        }
        Ok(Self {
            path: path.to_owned(),
            keys,
            skipped,
            stamp,
        })
    }

    fn kids(&self) -> Vec<&str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref()).collect()
    }
}

fn jwks_error(path: &Path, reason: impl Into<String>) -> KeyError {
    KeyError::Jwks {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Parses `{"keys": [...]}`. Entries that cannot verify signatures (no `kid`, `use` other
/// than `sig`, symmetric or unsupported key types, broken key material) are skipped and
/// reported; a file without any usable key is an error.
pub(crate) fn parse_jwks(
    bytes: &[u8],
    path: &Path,
) -> Result<(Vec<VerifyingKey>, Vec<String>), KeyError> {
    let document: Value =
        serde_json::from_slice(bytes).map_err(|e| jwks_error(path, format!("is not JSON: {e}")))?;
    let Some(entries) = document.get("keys").and_then(Value::as_array) else {
        return Err(jwks_error(path, "is not a JWKS: no \"keys\" array"));
    };
    let mut keys: Vec<VerifyingKey> = Vec::new();
    let mut skipped = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        match jwk_entry(entry, path) {
            Ok(key) if keys.iter().any(|k| k.kid == key.kid) => {
                skipped.push(format!("keys[{index}]: duplicate kid {:?}", key.kid));
            }
            Ok(key) => keys.push(key),
            Err(reason) => skipped.push(format!("keys[{index}]: {reason}")),
        }
    }
    if keys.is_empty() {
        let why = if skipped.is_empty() {
            "the \"keys\" array is empty".to_owned()
        } else {
            skipped.join("; ")
        };
        return Err(jwks_error(path, format!("holds no usable key ({why})")));
    }
    Ok((keys, skipped))
}

fn jwk_entry(entry: &Value, path: &Path) -> Result<VerifyingKey, String> {
    let kid = match entry.get("kid") {
        Some(Value::String(kid)) if !kid.is_empty() => kid.clone(),
        _ => return Err("no \"kid\" (tokens are matched to JWKS keys by kid)".to_owned()),
    };
    let named = |reason: String| format!("kid {kid:?}: {reason}");
    if let Some(usage) = entry.get("use")
        && usage.as_str() != Some("sig")
    {
        return Err(named(format!("\"use\" is {usage}, not \"sig\"")));
    }
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|e| named(e.to_string()))?;
    let (key, mut algorithms) = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => {
            let (algorithm, point_len) = match p.curve {
                EllipticCurve::P256 => (Algorithm::ES256, 65),
                EllipticCurve::P384 => (Algorithm::ES384, 97),
                _ => {
                    let curve = entry.get("crv").unwrap_or(&Value::Null);
                    return Err(named(format!(
                        "EC curve {curve} not supported (P-256, P-384)"
                    )));
                }
            };
            let key = DecodingKey::from_ec_components(&p.x, &p.y)
                .map_err(|e| named(format!("bad EC coordinates: {e}")))?;
            if key.try_get_as_bytes().map(<[u8]>::len).ok() != Some(point_len) {
                return Err(named("EC coordinates have the wrong length".to_owned()));
            }
            (key, vec![algorithm])
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 {
                let curve = entry.get("crv").unwrap_or(&Value::Null);
                return Err(named(format!("OKP curve {curve} not supported (Ed25519)")));
            }
            let key = DecodingKey::from_ed_components(&p.x)
                .map_err(|e| named(format!("bad Ed25519 key: {e}")))?;
            if key.try_get_as_bytes().map(<[u8]>::len).ok() != Some(32) {
                return Err(named("Ed25519 key is not 32 bytes".to_owned()));
            }
            (key, vec![Algorithm::EdDSA])
        }
        AlgorithmParameters::RSA(p) => {
            let key = DecodingKey::from_rsa_components(&p.n, &p.e)
                .map_err(|e| named(format!("bad RSA components: {e}")))?;
            if let DecodingKeyKind::RsaModulusExponent { n, .. } = key.kind() {
                let significant = n.iter().skip_while(|b| **b == 0).count();
                if significant < MIN_RSA_MODULUS_BYTES {
                    return Err(named(format!(
                        "RSA modulus of {} bits; at least 2048 are required",
                        significant * 8
                    )));
                }
            }
            (key, RSA_ALGORITHMS.to_vec())
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err(named(
                "symmetric (\"oct\") keys are not taken from a JWKS; use \
                 --auth-hs256-secret-file"
                    .to_owned(),
            ));
        }
        _ => return Err(named("key type not supported (EC, OKP, RSA)".to_owned())),
    };
    if let Some(declared) = jwk.common.key_algorithm {
        let declared = Algorithm::try_from(declared)
            .ok()
            .filter(|a| algorithms.contains(a))
            .ok_or_else(|| named(format!("\"alg\" {declared:?} does not fit the key type")))?;
        algorithms = vec![declared];
    }
    Ok(VerifyingKey {
        key,
        algorithms,
        kid: Some(kid.clone()),
        origin: KeyOrigin::Jwks {
            path: path.to_owned(),
            kid,
        },
    })
}

/// The JWKS keys in force, reloaded when the file changes. A verification looks at the
/// file's metadata at most once per `interval` (the caller's clock); only one thread does so
/// at a time while the others go on with the keys in force.
#[derive(Debug)]
pub(crate) struct JwksWatcher {
    path: PathBuf,
    interval: Duration,
    keys: RwLock<Arc<Vec<VerifyingKey>>>,
    poll: Mutex<PollState>,
}

#[derive(Debug)]
struct PollState {
    last_check: Option<SystemTime>,
    /// The file as last seen; `None` while it cannot be read.
    seen: Option<FileStamp>,
}

/// What a check of the JWKS file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JwksCheck {
    Unchanged,
    Reloaded {
        kids: Vec<String>,
    },
    /// Unreadable or broken: the keys loaded before stay in force.
    Broken(String),
}

impl JwksWatcher {
    pub fn new(snapshot: JwksSnapshot, interval: Duration) -> Self {
        Self {
            path: snapshot.path,
            interval,
            keys: RwLock::new(Arc::new(snapshot.keys)),
            poll: Mutex::new(PollState {
                last_check: None,
                seen: snapshot.stamp,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys in force, after a look at the file if one is due.
    pub fn keys(&self, now: SystemTime) -> Arc<Vec<VerifyingKey>> {
        let state = match self.poll.try_lock() {
            Ok(state) => Some(state),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        if let Some(mut state) = state {
            let due = match state.last_check {
                None => true,
                Some(last) => now
                    .duration_since(last)
                    .map_or(true, |since| since >= self.interval),
            };
            if due {
                state.last_check = Some(now);
                self.check(&mut state);
            }
        }
        self.keys_in_force()
    }

    /// Looks at the file now, whatever the interval.
    pub fn check_now(&self) -> JwksCheck {
        let mut state = self.poll.lock().unwrap_or_else(PoisonError::into_inner);
        self.check(&mut state)
    }

    pub fn keys_in_force(&self) -> Arc<Vec<VerifyingKey>> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn check(&self, state: &mut PollState) -> JwksCheck {
        let stamp = match FileStamp::of(&self.path) {
            Ok(stamp) => stamp,
            Err(e) => {
                let reason = format!("cannot read it: {e}");
                if state.seen.take().is_some() {
                    self.log_broken(&reason);
                }
                return JwksCheck::Broken(reason);
            }
        };
        if state.seen == Some(stamp) {
            return JwksCheck::Unchanged;
        }
        state.seen = Some(stamp);
        let loaded = std::fs::read(&self.path)
            .map_err(|e| format!("cannot read it: {e}"))
            .and_then(|bytes| {
                parse_jwks(&bytes, &self.path).map_err(|e| match e {
                    KeyError::Jwks { reason, .. } => reason,
                    other => other.to_string(),
                })
            });
        match loaded {
            Ok((keys, skipped)) => {
                let snapshot = JwksSnapshot {
                    path: self.path.clone(),
                    keys,
                    skipped,
                    stamp: Some(stamp),
                };
                let kids: Vec<String> = snapshot.kids().into_iter().map(str::to_owned).collect();
                for reason in &snapshot.skipped {
                    tracing::warn!(file = %self.path.display(), "JWKS entry skipped: {reason}");
                }
                tracing::info!(file = %self.path.display(), ?kids, "JWKS reloaded");
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) =
                    Arc::new(snapshot.keys);
                JwksCheck::Reloaded { kids }
            }
            Err(reason) => {
                self.log_broken(&reason);
                JwksCheck::Broken(reason)
            }
        }
    }

    fn log_broken(&self, reason: &str) {
        let kept = self.keys_in_force().len();
        tracing::error!(
            file = %self.path.display(),
            "JWKS file unusable, keeping the {kept} key(s) loaded before: {reason}"
        );
    }
}
