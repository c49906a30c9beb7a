//! The gateway's TLS identity, shared by the HTTPS/WebSocket and the WebTransport listeners.
//!
//! Loaded from PEM files, or for development generated with rcgen so that Chromium accepts it
//! by hash (`serverCertificateHashes`): ECDSA P-256, whole validity span ≤ 14 days including
//! any backdating. The development certificate is kept on disk and renewed when it nears
//! expiry, so a page that pinned its hash keeps working across restarts.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::digest::{SHA256, digest};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsSource;

/// Chromium refuses `serverCertificateHashes` certificates valid for longer than this.
pub const CHROMIUM_MAX_VALIDITY: Duration = Duration::from_secs(14 * 24 * 3600);
/// Our development certificates: 13 days, backdated by one hour for clock skew.
const DEV_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);
const DEV_BACKDATE: Duration = Duration::from_secs(3600);
/// Renew the development certificate when less than this is left.
const DEV_RENEW_BEFORE: Duration = Duration::from_secs(3 * 24 * 3600);

const DEV_CERT_FILE: &str = "dev-cert.pem";
const DEV_KEY_FILE: &str = "dev-key.pem";
/// Unix seconds of the development certificate's notAfter (rcgen cannot parse certificates).
const DEV_EXPIRY_FILE: &str = "dev-cert.not-after";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate the development certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key do not form a usable TLS identity: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{cert} and {key} do not form a usable TLS identity: {source}")]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("{path} is a symbolic link: the development certificate is not written through one")]
    Symlink { path: PathBuf },
}

#[derive(Debug)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// When known (development certificates): the end of validity.
    not_after: Option<SystemTime>,
    generated: bool,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            not_after: self.not_after,
            generated: self.generated,
        }
    }
}

impl Identity {
    pub fn load(source: &TlsSource) -> Result<Identity, TlsError> {
        match source {
            TlsSource::Files { cert, key } => Self::from_pem_files(cert, key),
            TlsSource::Development { dir } => Self::development(dir, SystemTime::now()),
        }
    }

    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let read_err = |path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::Read { path, source }
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(read_err(cert))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read_err(cert))?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: cert.to_owned(),
            });
        }
        let key_path = key;
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(read_err(key_path))?;
        let identity = Identity {
            chain,
            key,
            not_after: None,
            generated: false,
        };
        // Fail now, naming the files, if they do not match.
        identity.certified_key().map_err(|error| match error {
            TlsError::Rustls(source) => TlsError::Unusable {
                cert: cert.to_owned(),
                key: key_path.to_owned(),
                source,
            },
            other => other,
        })?;
        Ok(identity)
    }

    /// The development certificate in `dir`: reused while valid for a while, else renewed.
    ///
    /// The key is only ever readable by its owner: an existing key file readable by others is
    /// tightened to 0600 (and logged); a new one is written to a temporary file created 0600
    /// in the same directory, flushed to disk and renamed over the old one, so a crash never
    /// leaves half a key. Nothing is written through a symbolic link.
    pub fn development(dir: &Path, now: SystemTime) -> Result<Identity, TlsError> {
        tighten_key_file(&dir.join(DEV_KEY_FILE));
        if let Some(identity) = Self::stored_development(dir, now) {
            return Ok(identity);
        }
        let (cert_pem, key_pem, not_after) = generate_development(now)?;
        fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.to_owned(),
            source,
        })?;
        for file in [DEV_CERT_FILE, DEV_KEY_FILE, DEV_EXPIRY_FILE] {
            refuse_symlink(&dir.join(file))?;
        }
        write_file(&dir.join(DEV_CERT_FILE), cert_pem.as_bytes(), 0o644)?;
        write_file(&dir.join(DEV_KEY_FILE), key_pem.as_bytes(), 0o600)?;
        let expiry = unix_secs(not_after).to_string();
        write_file(&dir.join(DEV_EXPIRY_FILE), expiry.as_bytes(), 0o644)?;
        let mut identity = Self::from_pem_files(&dir.join(DEV_CERT_FILE), &dir.join(DEV_KEY_FILE))?;
        identity.not_after = Some(not_after);
        identity.generated = true;
        Ok(identity)
    }

    fn stored_development(dir: &Path, now: SystemTime) -> Option<Identity> {
        let expiry = fs::read_to_string(dir.join(DEV_EXPIRY_FILE)).ok()?;
        let not_after = UNIX_EPOCH + Duration::from_secs(expiry.trim().parse().ok()?);
        if not_after.duration_since(now).ok()? < DEV_RENEW_BEFORE {
            return None;
        }
        let mut identity =
            Self::from_pem_files(&dir.join(DEV_CERT_FILE), &dir.join(DEV_KEY_FILE)).ok()?;
        identity.not_after = Some(not_after);
        Some(identity)
    }

    /// SHA-256 of the leaf certificate (what `serverCertificateHashes` pins).
    pub fn leaf_sha256(&self) -> [u8; 32] {
        let hash = digest(&SHA256, self.chain[0].as_ref());
        let mut out = [0u8; 32];
        out.copy_from_slice(hash.as_ref());
        out
    }

    pub fn leaf_sha256_hex(&self) -> String {
        self.leaf_sha256()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn not_after(&self) -> Option<SystemTime> {
        self.not_after
    }

    /// Whether this run generated a new development certificate.
    pub fn was_generated(&self) -> bool {
        self.generated
    }

    pub fn leaf_der(&self) -> &[u8] {
        self.chain[0].as_ref()
    }

    /// Checks that certificate and key belong together (and that rustls can use the key).
    fn certified_key(&self) -> Result<CertifiedKey, TlsError> {
        let provider = rustls::crypto::ring::default_provider();
        Ok(CertifiedKey::from_der(
            self.chain.clone(),
            self.key.clone_key(),
            &provider,
        )?)
    }
}

/// The certificate both listeners present. It can be replaced while the gateway runs (the
/// development certificate is renewed before it expires) without dropping any session:
/// every new handshake picks the current one.
#[derive(Debug)]
pub struct LiveCertificate {
    current: RwLock<Current>,
}

#[derive(Debug, Clone)]
struct Current {
    key: Arc<CertifiedKey>,
    sha256: [u8; 32],
}

impl LiveCertificate {
    pub fn new(identity: &Identity) -> Result<Arc<LiveCertificate>, TlsError> {
        Ok(Arc::new(LiveCertificate {
            current: RwLock::new(Current {
                key: Arc::new(identity.certified_key()?),
                sha256: identity.leaf_sha256(),
            }),
        }))
    }

    pub fn replace(&self, identity: &Identity) -> Result<(), TlsError> {
        let next = Current {
            key: Arc::new(identity.certified_key()?),
            sha256: identity.leaf_sha256(),
        };
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = next;
        Ok(())
    }

    fn current(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// SHA-256 of the current leaf certificate (what `serverCertificateHashes` pins).
    pub fn sha256(&self) -> [u8; 32] {
        self.current().sha256
    }

    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256())
    }

    /// A rustls server configuration presenting this certificate and offering `alpn`.
    pub fn server_config(
        self: &Arc<Self>,
        alpn: Vec<Vec<u8>>,
    ) -> Result<rustls::ServerConfig, TlsError> {
        self.config_for(rustls::DEFAULT_VERSIONS, alpn)
    }

    /// TLS 1.3 only, as QUIC requires.
    pub fn quic_server_config(
        self: &Arc<Self>,
        alpn: Vec<Vec<u8>>,
    ) -> Result<rustls::ServerConfig, TlsError> {
        self.config_for(&[&rustls::version::TLS13], alpn)
    }

    fn config_for(
        self: &Arc<Self>,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: Vec<Vec<u8>>,
    ) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn;
        Ok(config)
    }
}

impl ResolvesServerCert for LiveCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key)
    }
}

/// The `--cert/--key` files as last seen, to notice when they are replaced (a CA's
/// certificate is renewed in place, by a rename, or by a symbolic link moved to new files).
///
/// [`CertificateFiles::check`] is called every few seconds. A change is loaded once the files
/// have stayed the same for one check (so a pair caught half-written is not even tried); a
/// pair that does not load is reported once, and tried again when the files change again.
#[derive(Debug)]
pub struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
    /// What the current certificate was loaded from, or what last failed to load.
    settled: Stamp,
    /// A change seen at the last check, loaded if it is still the same at the next.
    pending: Option<Stamp>,
}

/// What a check found.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    /// The files changed since the last check: wait for them to settle.
    Changing,
    Loaded(Identity),
    Failed(TlsError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    cert: Option<FileStamp>,
    key: Option<FileStamp>,
}

/// Enough of a file's metadata to see it was rewritten, replaced or re-linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// `None` when the file cannot be looked at (missing, say).
    fn read(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(path).ok()?; // Follows links: the file they point to now.
        Some(FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

impl CertificateFiles {
    /// Takes the files' state now: call it before loading them for the first time, so that
    /// a change in between is seen by the first check.
    pub fn new(cert: &Path, key: &Path) -> CertificateFiles {
        let mut files = CertificateFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            settled: Stamp {
                cert: None,
                key: None,
            },
            pending: None,
        };
        files.settled = files.stamp();
        files
    }

    fn stamp(&self) -> Stamp {
        Stamp {
            cert: FileStamp::read(&self.cert),
            key: FileStamp::read(&self.key),
        }
    }

    pub fn check(&mut self) -> Reload {
        let now = self.stamp();
        if now == self.settled {
            self.pending = None;
            return Reload::Unchanged;
        }
        if self.pending != Some(now) {
            self.pending = Some(now);
            return Reload::Changing;
        }
        self.pending = None;
        self.settled = now;
        match Identity::from_pem_files(&self.cert, &self.key) {
            Ok(identity) => Reload::Loaded(identity),
            Err(error) => Reload::Failed(error),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Refuses `path` if it is a symbolic link (a missing file is fine).
fn refuse_symlink(path: &Path) -> Result<(), TlsError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(TlsError::Symlink {
            path: path.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Writes `path` whole or not at all: a temporary file in the same directory, created with
/// `mode` (exactly, whatever the umask), flushed to disk, then renamed over `path` (a rename
/// replaces a link at `path` rather than following it); the directory is flushed too.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);

    refuse_symlink(path)?;
    let write_error = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy());
    let temp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&temp);
        return Err(write_error(error));
    }
    // The rename itself is durable once the directory is.
    if let Err(error) = fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(%error, dir = %dir.display(), "cannot flush the directory");
    }
    Ok(())
}

/// An existing development key readable or writable by anyone but its owner is set to 0600.
fn tighten_key_file(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return; // Not there yet.
    };
    if meta.file_type().is_symlink() {
        tracing::warn!(
            path = %path.display(),
            "the development key is a symbolic link: its mode is left alone, and it will not be rewritten through the link"
        );
        return;
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return;
    }
    match fs::set_permissions(path, fs::Permissions::from_mode(0o600)) {
        Ok(()) => tracing::warn!(
            path = %path.display(),
            was = format!("{mode:o}"),
            "the development key was readable by others: mode set to 600"
        ),
        Err(error) => tracing::error!(
            path = %path.display(),
            %error,
            "the development key is readable by others and its mode cannot be changed"
        ),
    }
}

/// (certificate PEM, key PEM, notAfter) of a new development certificate.
fn generate_development(now: SystemTime) -> Result<(String, String, SystemTime), TlsError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "signalgate development certificate",
    );
    let not_before = now - DEV_BACKDATE;
    let not_after = not_before + DEV_VALIDITY;
    params.not_before = time::OffsetDateTime::from(not_before);
    params.not_after = time::OffsetDateTime::from(not_after);
    let cert = params.self_signed(&key)?;
    // The certificate stores whole seconds; round down like it does.
    let not_after = UNIX_EPOCH + Duration::from_secs(unix_secs(not_after));
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("signalgate-tls-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn development_certificate_fits_chromiums_hash_rules_and_is_reused() {
        let dir = temp_dir("reuse");
        let now = SystemTime::now();
        let first = Identity::development(&dir, now).expect("generated");
        assert!(first.was_generated());
        let not_after = first.not_after().expect("known");
        // Whole span, backdating included, within Chromium's 14 days.
        let span = not_after.duration_since(now - DEV_BACKDATE).expect("after");
        assert!(span <= CHROMIUM_MAX_VALIDITY, "{span:?}");
        // ECDSA P-256: the SPKI algorithm OID 1.2.840.10045.2.1 and curve 1.2.840.10045.3.1.7.
        let der = first.leaf_der();
        let p256_oid = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        assert!(der.windows(p256_oid.len()).any(|w| w == p256_oid));
        let live = LiveCertificate::new(&first).expect("usable");
        live.server_config(vec![b"http/1.1".to_vec()])
            .expect("usable");
        assert_eq!(live.sha256(), first.leaf_sha256());

        let again = Identity::development(&dir, now + Duration::from_secs(3600)).expect("loaded");
        assert!(!again.was_generated());
        assert_eq!(
            again.leaf_sha256(),
            first.leaf_sha256(),
            "same hash across restarts"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn development_certificate_is_renewed_when_it_nears_expiry() {
        let dir = temp_dir("renew");
        let now = SystemTime::now();
        let first = Identity::development(&dir, now).expect("generated");
        let later = now + Duration::from_secs(11 * 24 * 3600);
        let renewed = Identity::development(&dir, later).expect("renewed");
        assert!(renewed.was_generated());
        assert_ne!(renewed.leaf_sha256(), first.leaf_sha256());
        // A running gateway swaps it in for new handshakes.
        let live = LiveCertificate::new(&first).expect("usable");
        live.replace(&renewed).expect("usable");
        assert_eq!(live.sha256(), renewed.leaf_sha256());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_files_are_named() {
        let err = Identity::from_pem_files(
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
    }
}
