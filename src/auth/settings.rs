//! Authentication settings (flags, `SIGNALGATE_AUTH_*` environment variables, TOML) and their
//! validation into an [`AuthConfig`]: every key file is read and checked here, once, with a
//! message that names the file or the value (never a secret's content).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::keys::{self, KeyError, VerifyingKey};

/// Shortest accepted HS256 secret, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;
/// Clock leeway for `exp`, `nbf` and `iat` when none is configured.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Largest accepted `--auth-leeway`.
pub const MAX_LEEWAY: Duration = Duration::from_secs(600);
/// How often (at most) a verification looks at the JWKS file's modification time.
pub const DEFAULT_JWKS_POLL_INTERVAL: Duration = Duration::from_secs(1);

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 10s or 300ms: {e}"))
}

/// A secret from the command line, the environment or a config file: its `Debug` shows its
/// length only, so that printing the settings never prints it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A secret kept in a file (`--…-secret-file`): its bytes without the trailing newlines an
/// editor or `echo` leaves.
pub fn read_secret_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = std::fs::read(path)?;
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    Ok(bytes)
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretString(<{} bytes, redacted>)", self.0.len())
    }
}

impl FromStr for SecretString {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

/// Token authentication. With any key (an HS256 secret, public key files or a JWKS file)
/// every Hello must carry a JWT that verifies against one of them; without a key,
/// authentication is off. TOML keys are the field names (e.g. in an `[auth]` table).
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 shared secret (at least 32 bytes, used as given). Prefer
    /// --auth-hs256-secret-file: a command line is visible to other users.
    #[arg(
        long = "auth-hs256-secret",
        env = "SIGNALGATE_AUTH_HS256_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub hs256_secret: Option<SecretString>,

    /// File holding the HS256 shared secret (at least 32 bytes; trailing newlines are
    /// ignored).
    #[arg(
        long = "auth-hs256-secret-file",
        env = "SIGNALGATE_AUTH_HS256_SECRET_FILE",
        value_name = "FILE"
    )]
    pub hs256_secret_file: Option<PathBuf>,

    /// PEM public key (or certificate) of a token issuer: EC P-256/P-384 (ES256/ES384),
    /// Ed25519 (EdDSA) or RSA (RS256/384/512, PS256/384/512), detected from the file.
    /// Repeatable, or comma separated.
    #[arg(
        long = "auth-public-key",
        env = "SIGNALGATE_AUTH_PUBLIC_KEY",
        value_name = "FILE",
        value_delimiter = ','
    )]
    #[serde(alias = "public_key")]
    pub public_keys: Option<Vec<PathBuf>>,

    /// JWKS file (`{"keys": [...]}`); tokens are matched to its keys by their header `kid`.
    /// Reloaded when the file changes (replace it by renaming a new file into place); a
    /// broken file keeps the keys loaded before.
    #[arg(long = "auth-jwks", env = "SIGNALGATE_AUTH_JWKS", value_name = "FILE")]
    pub jwks: Option<PathBuf>,

    /// Required audience: tokens must list this value in their `aud` claim.
    #[arg(
        long = "auth-audience",
        env = "SIGNALGATE_AUTH_AUDIENCE",
        value_name = "AUD"
    )]
    pub audience: Option<String>,

    /// Required issuer: tokens must carry this `iss` claim.
    #[arg(
        long = "auth-issuer",
        env = "SIGNALGATE_AUTH_ISSUER",
        value_name = "ISS"
    )]
    pub issuer: Option<String>,

    /// Clock skew tolerated when checking `exp`, `nbf` and `iat` (default 30s).
    #[arg(long = "auth-leeway", env = "SIGNALGATE_AUTH_LEEWAY", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "humantime_serde::option")]
    pub leeway: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSettingsError {
    #[error("give the HS256 secret once: {0} and {1} are both set")]
    SecretTwice(&'static str, &'static str),
    #[error(
        "the HS256 secret ({origin}) is {len} bytes long; at least {MIN_SECRET_BYTES} are \
         required (e.g. `openssl rand -base64 48`)"
    )]
    SecretTooShort { origin: String, len: usize },
    /// A file that cannot be read, or is not a key (PEM, JWKS).
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("invalid authentication setting: {0}")]
    Invalid(String),
}

/// The validated authentication configuration: keys loaded and checked.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The HS256 secret and the public key files.
    pub(crate) static_keys: Vec<VerifyingKey>,
    /// The JWKS file and the keys it held when the configuration was validated.
    pub(crate) jwks: Option<keys::JwksSnapshot>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    pub leeway: Duration,
    /// How often (at most) a verification looks for a changed JWKS file.
    pub jwks_poll_interval: Duration,
}

impl AuthConfig {
    /// A configuration with one HS256 secret and the defaults (for tests and development).
    pub fn with_hs256_secret(secret: &[u8]) -> Result<Self, AuthSettingsError> {
        check_secret_len(secret, "given".to_owned())?;
        Ok(Self {
            static_keys: vec![VerifyingKey::hs256(secret)?],
            jwks: None,
            audience: None,
            issuer: None,
            leeway: DEFAULT_LEEWAY,
            jwks_poll_interval: DEFAULT_JWKS_POLL_INTERVAL,
        })
    }
}

fn check_secret_len(secret: &[u8], origin: String) -> Result<(), AuthSettingsError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(AuthSettingsError::SecretTooShort {
            origin,
            len: secret.len(),
        });
    }
    Ok(())
}

/// The HS256 secret from either an inline value or a file (not both), checked for length.
/// `flags` name the two sources in messages.
pub(crate) fn load_secret(
    inline: Option<&SecretString>,
    file: Option<&Path>,
    flags: (&'static str, &'static str),
) -> Result<Option<Vec<u8>>, AuthSettingsError> {
    let (secret, origin) = match (inline, file) {
        (Some(_), Some(_)) => return Err(AuthSettingsError::SecretTwice(flags.0, flags.1)),
        (None, None) => return Ok(None),
        (Some(inline), None) => (inline.expose().as_bytes().to_vec(), flags.0.to_owned()),
        (None, Some(path)) => {
            let bytes = read_secret_file(path).map_err(|source| KeyError::Read {
                what: "the HS256 secret file",
                path: path.to_owned(),
                source,
            })?;
            (bytes, format!("file {}", path.display()))
        }
    };
    check_secret_len(&secret, origin)?;
    Ok(Some(secret))
}

fn check_claim_value(
    name: &str,
    value: Option<String>,
) -> Result<Option<String>, AuthSettingsError> {
    match value {
        Some(v) if v.trim().is_empty() => Err(AuthSettingsError::Invalid(format!(
            "{name} is empty; leave it out to not check it"
        ))),
        Some(v) if v.len() > 256 => Err(AuthSettingsError::Invalid(format!(
            "{name} is {} bytes long, more than 256",
            v.len()
        ))),
        other => Ok(other),
    }
}

macro_rules! layer_fields {
    ($($field:ident),* $(,)?) => {
        impl AuthSettings {
            /// `self` wins where it has a value; `lower` fills the rest.
            pub fn over(self, lower: AuthSettings) -> AuthSettings {
                AuthSettings { $($field: self.$field.or(lower.$field),)* }
            }

            /// Whether any setting is given at all.
            fn is_empty(&self) -> bool {
                true $(&& self.$field.is_none())*
            }
        }
    };
}

layer_fields!(
    hs256_secret,
    hs256_secret_file,
    public_keys,
    jwks,
    audience,
    issuer,
    leeway,
);

impl AuthSettings {
    /// Reads and checks every key. `Ok(None)`: no key is given, authentication is off (then
    /// no other authentication setting may be given either: an audience without a key is a
    /// configuration mistake, not a reason to let everyone in).
    pub fn validate(self) -> Result<Option<AuthConfig>, AuthSettingsError> {
        if self.is_empty() {
            return Ok(None);
        }
        let mut static_keys = Vec::new();
        let secret = load_secret(
            self.hs256_secret.as_ref(),
            self.hs256_secret_file.as_deref(),
            ("--auth-hs256-secret", "--auth-hs256-secret-file"),
        )?;
        if let Some(secret) = secret {
            static_keys.push(VerifyingKey::hs256(&secret)?);
        }
        for path in self.public_keys.unwrap_or_default() {
            static_keys.push(keys::load_public_key_file(&path)?);
        }
        let jwks = self
            .jwks
            .map(|path| keys::JwksSnapshot::load(&path))
            .transpose()?;
        let audience = check_claim_value("auth_audience", self.audience)?;
        let issuer = check_claim_value("auth_issuer", self.issuer)?;
        let leeway = self.leeway.unwrap_or(DEFAULT_LEEWAY);
        if leeway > MAX_LEEWAY {
            return Err(AuthSettingsError::Invalid(format!(
                "auth_leeway = {leeway:?} is longer than {MAX_LEEWAY:?}"
            )));
        }
        if static_keys.is_empty() && jwks.is_none() {
            return Err(AuthSettingsError::Invalid(
                "authentication settings are given but no key: set --auth-hs256-secret(-file), \
                 --auth-public-key or --auth-jwks"
                    .to_owned(),
            ));
        }
        Ok(Some(AuthConfig {
            static_keys,
            jwks,
            audience,
            issuer,
            leeway,
            jwks_poll_interval: DEFAULT_JWKS_POLL_INTERVAL,
        }))
    }
}
