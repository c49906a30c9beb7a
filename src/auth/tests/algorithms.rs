//! Each algorithm, with tokens signed by OpenSSL (testdata/generate.py) and with fresh keys;
//! key types are detected from the PEM; a token cannot choose how a key is used.

use super::*;

fn pem_auth(files: &[&str]) -> Authenticator {
    let settings = AuthSettings {
        public_keys: Some(files.iter().map(|f| testdata(f)).collect()),
        ..settings()
    };
    Authenticator::new(settings.validate().expect("valid").expect("auth on"))
}

fn assert_fixture_claims(token: &VerifiedToken) {
    assert_eq!(token.sub, "openssl-alice");
    assert_eq!(
        token.rooms,
        vec![
            RoomGrant::Exact("demo".into()),
            RoomGrant::Prefix("team-".into())
        ]
    );
    assert_eq!(token.name, "Alice");
    assert_eq!(token.metadata, r#"{"role":"host"}"#);
    assert!(token.signal);
    assert_eq!(token.device, None);
    assert_eq!(
        token.issued_at,
        Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    );
    assert_eq!(
        token.expires_at,
        UNIX_EPOCH + Duration::from_secs(1_700_003_600)
    );
}

#[test]
fn openssl_tokens_verify_with_pem_keys_of_each_type() {
    let cases = [
        ("es256", "es256-public.pem"),
        ("eddsa", "ed25519-public.pem"),
        ("rs256", "rsa-public.pem"),
        ("rs256", "rsa-public-pkcs1.pem"),
    ];
    for (token, pem) in cases {
        let auth = pem_auth(&[pem]);
        let token = verified(auth.verify(&fixture(token), fixture_now()));
        assert_fixture_claims(&token);
    }
}

#[test]
fn an_openssl_hs256_token_verifies_with_the_secret() {
    let secret = fixtures()["hs256_secret"]
        .as_str()
        .expect("text")
        .to_owned();
    let auth = Authenticator::new(AuthConfig::with_hs256_secret(secret.as_bytes()).expect("ok"));
    assert_fixture_claims(&verified(auth.verify(&fixture("hs256"), fixture_now())));
}

#[test]
fn a_token_verifies_against_any_of_several_keys_and_not_against_the_wrong_type() {
    let auth = pem_auth(&["es256-public.pem", "ed25519-public.pem", "rsa-public.pem"]);
    for token in ["es256", "eddsa", "rs256"] {
        verified(auth.verify(&fixture(token), fixture_now()));
    }
    // An RS256 token against EC and Ed keys only: no key takes RS256.
    let auth = pem_auth(&["es256-public.pem", "ed25519-public.pem"]);
    let refusal = refused(auth.verify(&fixture("rs256"), fixture_now()));
    assert_eq!(
        refusal,
        AuthRefusal::BadSignature("no configured key takes alg RS256".into())
    );
}

#[test]
fn fresh_keys_of_each_curve_sign_and_verify() {
    for alg in [Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA] {
        let key = FreshKey::new(alg);
        let other = FreshKey::new(alg);
        let dir = tempfile::tempdir().expect("tempdir");
        let pem = write(dir.path(), "issuer.pem", key.public_pem.as_bytes());
        let settings = AuthSettings {
            public_keys: Some(vec![pem]),
            ..settings()
        };
        let auth = Authenticator::new(settings.validate().expect("valid").expect("on"));
        let token = verified(auth.verify(&key.sign(None, &claims("alice")), at(0)));
        assert_eq!(token.sub, "alice");
        let refusal = refused(auth.verify(&other.sign(None, &claims("alice")), at(0)));
        assert_eq!(
            refusal,
            AuthRefusal::BadSignature(format!(
                "the {alg:?} signature does not verify with public key file issuer.pem"
            ))
        );
    }
}

#[test]
fn a_public_key_cannot_be_used_as_an_hmac_secret() {
    // The classic confusion: sign HS256 with the issuer's public key bytes as the secret.
    let pem = std::fs::read(testdata("rsa-public.pem")).expect("pem");
    let forger = EncodingKey::from_secret(&pem).expect("key");
    let token = sign_with(&forger, Algorithm::HS256, None, &claims("mallory"));
    let refusal = refused(pem_auth(&["rsa-public.pem"]).verify(&token, at(0)));
    assert_eq!(
        refusal,
        AuthRefusal::BadSignature("no configured key takes alg HS256".into())
    );
}

#[test]
fn a_key_embedded_in_the_header_is_never_used() {
    // The attacker's own key in the `jwk` header: the gateway only uses configured keys.
    let attacker = FreshKey::new(Algorithm::ES256);
    let issuer = FreshKey::new(Algorithm::ES256);
    provider::ensure_installed();
    let mut header = Header::new(Algorithm::ES256);
    header.jwk = Some(serde_json::from_value(attacker.jwk("attacker")).expect("jwk"));
    let token = jsonwebtoken::encode(&header, &claims("mallory"), &attacker.encoding).expect("ok");
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = write(dir.path(), "issuer.pem", issuer.public_pem.as_bytes());
    let settings = AuthSettings {
        public_keys: Some(vec![pem]),
        ..settings()
    };
    let auth = Authenticator::new(settings.validate().expect("valid").expect("on"));
    assert!(matches!(
        refused(auth.verify(&token, at(0))),
        AuthRefusal::BadSignature(_)
    ));
}

#[test]
fn a_certificate_is_taken_for_its_public_key() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = rcgen::CertificateParams::new(vec!["issuer.example".to_owned()])
        .expect("params")
        .self_signed(&pair)
        .expect("cert");
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = write(dir.path(), "issuer.crt", cert.pem().as_bytes());
    let settings = AuthSettings {
        public_keys: Some(vec![pem]),
        ..settings()
    };
    let auth = Authenticator::new(settings.validate().expect("valid").expect("on"));
    let encoding = EncodingKey::from_ec_der(&pair.serialize_der());
    let token = sign_with(&encoding, Algorithm::ES256, None, &claims("alice"));
    verified(auth.verify(&token, at(0)));
}

#[test]
fn describe_keys_names_sources_and_algorithms_without_material() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = write(dir.path(), "secret", SECRET);
    let settings = AuthSettings {
        hs256_secret_file: Some(secret),
        public_keys: Some(vec![testdata("es256-public.pem")]),
        jwks: Some(testdata("jwks.json")),
        ..settings()
    };
    let auth = Authenticator::new(settings.validate().expect("valid").expect("on"));
    let described = auth.describe_keys().join("\n");
    assert!(
        described.contains("the HS256 secret ([HS256])"),
        "{described}"
    );
    assert!(
        described.contains("es256-public.pem ([ES256])"),
        "{described}"
    );
    assert!(described.contains("kid \"openssl-ed25519\""), "{described}");
    assert!(!described.contains(std::str::from_utf8(SECRET).expect("text")));
}
