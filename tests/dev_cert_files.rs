//! The development key on disk is its owner's alone: an existing key readable by others is
//! tightened to 0600, a new one is written whole (temporary file created 0600, flushed,
//! renamed over the old), and never through a symbolic link.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use signalgate::tls::{Identity, TlsError};

const KEY: &str = "dev-key.pem";
const CERT: &str = "dev-cert.pem";

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_new_key_is_created_0600_with_nothing_left_behind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let identity = Identity::development(dir.path(), SystemTime::now()).expect("generated");
    assert!(identity.was_generated());
    assert_eq!(mode(&dir.path().join(KEY)), 0o600);
    assert_eq!(
        names(dir.path()),
        ["dev-cert.not-after", CERT, KEY],
        "no temporary file left"
    );
}

#[test]
fn an_existing_key_readable_by_others_is_tightened_to_0600() {
    let dir = tempfile::tempdir().expect("temp dir");
    let now = SystemTime::now();
    let first = Identity::development(dir.path(), now).expect("generated");
    let key = dir.path().join(KEY);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
    let again = Identity::development(dir.path(), now).expect("reused");
    assert!(!again.was_generated());
    assert_eq!(
        again.leaf_sha256(),
        first.leaf_sha256(),
        "the same certificate"
    );
    assert_eq!(mode(&key), 0o600);
}

#[test]
fn a_renewed_key_replaces_the_old_file_instead_of_rewriting_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let now = SystemTime::now();
    Identity::development(dir.path(), now).expect("generated");
    let key = dir.path().join(KEY);
    let old_key = fs::read(&key).expect("read");
    // A second name for the old key's file: a rewrite in place would change it, a rename of
    // a new file over the name does not.
    let witness = dir.path().join("witness");
    fs::hard_link(&key, &witness).expect("hard link");
    let later = now + Duration::from_secs(11 * 24 * 3600);
    let renewed = Identity::development(dir.path(), later).expect("renewed");
    assert!(renewed.was_generated());
    assert_ne!(fs::read(&key).expect("read"), old_key, "a new key");
    assert_eq!(
        fs::read(&witness).expect("read"),
        old_key,
        "the old file untouched"
    );
    assert_eq!(mode(&key), 0o600);
}

#[test]
fn nothing_is_written_through_a_symbolic_link() {
    let dir = tempfile::tempdir().expect("temp dir");
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let target = elsewhere.path().join("precious");
    fs::write(&target, "not yours").expect("write");
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).expect("chmod");
    let key = dir.path().join(KEY);
    std::os::unix::fs::symlink(&target, &key).expect("symlink");

    let error = Identity::development(dir.path(), SystemTime::now()).expect_err("refused");
    assert!(matches!(error, TlsError::Symlink { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&key.display().to_string()),
        "names the link: {error}"
    );
    assert_eq!(fs::read_to_string(&target).expect("read"), "not yours");
    assert_eq!(mode(&target), 0o644, "not chmod-ed through the link either");
    assert!(
        !dir.path().join(CERT).exists(),
        "refused before anything was written"
    );
}
