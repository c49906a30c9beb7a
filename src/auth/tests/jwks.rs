//! JWKS: keys matched by `kid`, unusable entries skipped, and rotation without a restart —
//! the file is looked at again at most once per poll interval; a broken file keeps the last
//! good keys.

use super::*;

fn jwks_auth(path: &Path) -> Authenticator {
    let settings = AuthSettings {
        jwks: Some(path.to_owned()),
        ..settings()
    };
    Authenticator::new(settings.validate().expect("valid").expect("on"))
}

#[test]
fn openssl_tokens_are_matched_by_kid() {
    let auth = jwks_auth(&testdata("jwks.json"));
    for token in ["es256_kid", "rs256_kid", "ps256_kid", "eddsa_kid"] {
        let token = verified(auth.verify(&fixture(token), fixture_now()));
        assert_eq!(token.sub, "openssl-alice");
    }
    // A token without kid is tried against the JWKS keys of its algorithm.
    verified(auth.verify(&fixture("es256"), fixture_now()));
}

#[test]
fn a_kid_names_exactly_one_key() {
    let auth = jwks_auth(&testdata("jwks.json"));
    let es256 = fixture("es256_kid");
    // The same ES256 token under another kid: that key is RSA, so nothing takes it.
    let mut header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(es256.split('.').next().expect("header"))
            .expect("base64"),
    )
    .expect("json");
    header["kid"] = json!("openssl-rsa");
    let rest = es256.split_once('.').expect("parts").1;
    let relabeled = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()));
    let refusal = refused(auth.verify(&relabeled, fixture_now()));
    let AuthRefusal::BadSignature(message) = refusal else {
        panic!("{refusal}");
    };
    assert!(
        message.starts_with("no configured key takes alg ES256 with kid \"openssl-rsa\""),
        "{message}"
    );
    // The message lists the kids the developer can use; the encryption key is not one.
    assert!(message.contains("\"openssl-es256\""), "{message}");
    assert!(!message.contains("for-encryption"), "{message}");
}

#[test]
fn unusable_entries_are_skipped_and_a_file_without_usable_keys_is_refused() {
    let key = FreshKey::new(Algorithm::ES256);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut no_kid = key.jwk("x");
    no_kid
        .as_object_mut()
        .expect("object")
        .remove("kid")
        .expect("had one");
    let oct = json!({"kty": "oct", "kid": "shared", "k": URL_SAFE_NO_PAD.encode(SECRET)});
    let small_rsa = json!({"kty": "RSA", "kid": "rsa-1024", "n": URL_SAFE_NO_PAD.encode([0xc5u8; 128]), "e": "AQAB"});
    let p521 = json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"});
    let unusable = [no_kid, oct, small_rsa, p521];

    let path = write(dir.path(), "bad.json", &jwks_doc(&unusable));
    let settings = AuthSettings {
        jwks: Some(path.clone()),
        ..settings()
    };
    let error = settings.validate().expect_err("no usable key").to_string();
    for expect in [
        path.display().to_string(),
        "no \"kid\"".into(),
        "symmetric".into(),
        "RSA modulus of 1024 bits".into(),
        "P-521".into(),
    ] {
        assert!(error.contains(&expect), "{expect:?} not in {error}");
    }

    let mut keys = unusable.to_vec();
    keys.push(key.jwk("good"));
    let path = write(dir.path(), "mixed.json", &jwks_doc(&keys));
    let auth = jwks_auth(&path);
    verified(auth.verify(&key.sign(Some("good"), &claims("alice")), at(0)));
}

#[test]
fn a_declared_alg_restricts_the_key() {
    let key = FreshKey::new(Algorithm::ES256);
    let mut jwk = key.jwk("k");
    jwk["alg"] = json!("ES384");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "jwks.json",
        &jwks_doc(&[jwk, FreshKey::new(Algorithm::EdDSA).jwk("ed")]),
    );
    let settings = AuthSettings {
        jwks: Some(path),
        ..settings()
    };
    let config = settings.validate().expect("ed is usable").expect("on");
    let auth = Authenticator::new(config);
    assert!(matches!(
        refused(auth.verify(&key.sign(Some("k"), &claims("alice")), at(0))),
        AuthRefusal::BadSignature(_)
    ));
}

#[test]
fn keys_rotate_without_a_restart() {
    let old = FreshKey::new(Algorithm::ES256);
    let new = FreshKey::new(Algorithm::EdDSA);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "jwks.json", &jwks_doc(&[old.jwk("2026-01")]));
    let auth = Arc::new(jwks_auth(&path));
    let old_token = old.sign(Some("2026-01"), &claims("alice"));
    let new_token = new.sign(Some("2026-02"), &claims("alice"));
    verified(auth.verify(&old_token, at(0)));
    refused(auth.verify(&new_token, at(0)));

    // The issuer publishes the new key next to the old one, then drops the old one.
    replace(&path, &jwks_doc(&[old.jwk("2026-01"), new.jwk("2026-02")]));
    // Looked at again only once the poll interval (1 s) has passed.
    refused(auth.verify(&new_token, at(0)));
    verified(auth.verify(&new_token, at(1)));
    verified(auth.verify(&old_token, at(1)));

    replace(&path, &jwks_doc(&[new.jwk("2026-02")]));
    verified(auth.verify(&new_token, at(2)));
    let refusal = refused(auth.verify(&old_token, at(2)));
    let AuthRefusal::BadSignature(message) = refusal else {
        panic!("{refusal}");
    };
    assert!(message.contains("[\"2026-02\"]"), "{message}");
}

#[test]
fn a_file_rewritten_in_place_is_reloaded_too() {
    let old = FreshKey::new(Algorithm::ES256);
    let new = FreshKey::new(Algorithm::ES256);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "jwks.json", &jwks_doc(&[old.jwk("a")]));
    let auth = jwks_auth(&path);
    verified(auth.verify(&old.sign(Some("a"), &claims("alice")), at(0)));

    let file = std::fs::File::options()
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("opens");
    (&file)
        .write_all(&jwks_doc(&[new.jwk("a")]))
        .expect("writes");
    // Same inode, same length: the modification time tells (set it apart explicitly, as
    // some file systems count it in coarse ticks).
    file.set_modified(SystemTime::now() + Duration::from_secs(5))
        .expect("sets mtime");
    drop(file);

    assert_eq!(auth.check_jwks().as_deref(), Some("reloaded, kids [\"a\"]"));
    verified(auth.verify(&new.sign(Some("a"), &claims("alice")), at(0)));
    refused(auth.verify(&old.sign(Some("a"), &claims("alice")), at(0)));
}

#[test]
fn a_broken_or_missing_file_keeps_the_last_good_keys_and_logs_the_file() {
    let key = FreshKey::new(Algorithm::ES256);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "jwks.json", &jwks_doc(&[key.jwk("k")]));
    let auth = jwks_auth(&path);
    let token = key.sign(Some("k"), &claims("alice"));
    verified(auth.verify(&token, at(0)));

    replace(&path, b"{\"keys\": [ truncated");
    let (result, logs) = capture_logs(|| auth.verify(&token, at(1)));
    verified(result);
    assert!(logs.contains("ERROR"), "{logs}");
    assert!(logs.contains(&path.display().to_string()), "{logs}");
    assert!(
        logs.contains("keeping the 1 key(s) loaded before"),
        "{logs}"
    );
    assert!(logs.contains("is not JSON"), "{logs}");

    // Logged once per change, not on every poll.
    let (result, logs) = capture_logs(|| auth.verify(&token, at(2)));
    verified(result);
    assert!(!logs.contains("ERROR"), "{logs}");

    std::fs::remove_file(&path).expect("removes");
    let (result, logs) = capture_logs(|| auth.verify(&token, at(3)));
    verified(result);
    assert!(logs.contains("cannot read it"), "{logs}");

    // Back with a good file: reloaded.
    let next = FreshKey::new(Algorithm::ES256);
    write(dir.path(), "jwks.json", &jwks_doc(&[next.jwk("k2")]));
    verified(auth.verify(&next.sign(Some("k2"), &claims("alice")), at(4)));
}

#[test]
fn concurrent_verifications_during_rotation_see_one_key_set_or_the_other() {
    let old = FreshKey::new(Algorithm::ES256);
    let new = FreshKey::new(Algorithm::ES256);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "jwks.json", &jwks_doc(&[old.jwk("old")]));
    let mut config = AuthSettings {
        jwks: Some(path.clone()),
        ..settings()
    }
    .validate()
    .expect("valid")
    .expect("on");
    config.jwks_poll_interval = Duration::ZERO;
    let auth = Arc::new(Authenticator::new(config));
    let token = old.sign(Some("old"), &claims("alice"));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let auth = Arc::clone(&auth);
            let token = token.clone();
            std::thread::spawn(move || {
                (0..200)
                    .filter(|_| auth.verify(&token, at(0)).is_ok())
                    .count()
            })
        })
        .collect();
    replace(&path, &jwks_doc(&[old.jwk("old"), new.jwk("new")]));
    for worker in workers {
        // The old key is in both sets: every verification succeeds.
        assert_eq!(worker.join().expect("no panic"), 200);
    }
}
