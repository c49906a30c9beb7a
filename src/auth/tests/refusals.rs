//! Every refusal reason, its label and code, and messages that never carry the token.

use super::*;
use crate::proto::ErrorCode;

/// Asserts the refusal, and that neither its message nor its Debug form contains the token
/// (nor its signature, nor the secret).
fn assert_refusal(token: &str, refusal: &AuthRefusal, label: &str) {
    assert_eq!(refusal.label(), label, "{refusal}");
    let shown = format!("{refusal} / {refusal:?}");
    if !token.trim().is_empty() {
        assert!(!shown.contains(token), "the token leaks into {shown}");
    }
    if let Some(signature) = token.rsplit('.').next().filter(|s| s.len() > 8) {
        assert!(
            !shown.contains(signature),
            "the signature leaks into {shown}"
        );
    }
    assert!(!shown.contains(std::str::from_utf8(SECRET).expect("text")));
}

#[test]
fn an_empty_token_is_missing() {
    let auth = hs_auth();
    for token in ["", "   "] {
        let refusal = refused(auth.verify(token, at(0)));
        assert_eq!(refusal, AuthRefusal::Missing);
        assert_refusal(token, &refusal, "missing");
    }
}

#[test]
fn garbage_is_malformed_and_never_quoted() {
    let auth = hs_auth();
    let garbage = [
        "garbage-that-is-no-jwt-at-all",
        "a.b.c",
        "eyJhbGciOiJIUzI1NiJ9.e30",
        "eyJhbGciOiJIUzI1NiJ9.e30.sig.extra",
        // alg none: not a signature algorithm this gateway (or jsonwebtoken) knows.
        &raw_hs256(
            r#"{"alg":"none"}"#,
            br#"{"sub":"mallory","exp":9999999999}"#,
        ),
    ];
    for token in garbage {
        let refusal = refused(auth.verify(token, at(0)));
        assert!(
            matches!(refusal, AuthRefusal::Malformed(_)),
            "{token}: {refusal}"
        );
        assert_refusal(token, &refusal, "malformed");
    }
}

#[test]
fn an_oversized_token_is_malformed() {
    let token = "x".repeat(MAX_TOKEN_BYTES + 1);
    let refusal = refused(hs_auth().verify(&token, at(0)));
    assert!(refusal.to_string().contains("16385 bytes"), "{refusal}");
}

#[test]
fn a_signed_payload_that_is_no_claims_object_is_malformed() {
    let auth = hs_auth();
    for payload in [&b"not json"[..], b"[1,2,3]", b"\"sub\""] {
        let token = raw_hs256(r#"{"alg":"HS256","typ":"JWT"}"#, payload);
        let refusal = refused(auth.verify(&token, at(0)));
        assert_eq!(
            refusal,
            AuthRefusal::Malformed("the payload is not a JSON object of claims".into())
        );
        assert_refusal(&token, &refusal, "malformed");
    }
}

#[test]
fn critical_header_extensions_are_refused() {
    let token = raw_hs256(
        r#"{"alg":"HS256","crit":["exp-ext"],"exp-ext":1}"#,
        claims("alice").to_string().as_bytes(),
    );
    let refusal = refused(hs_auth().verify(&token, at(0)));
    assert!(refusal.to_string().contains("crit"), "{refusal}");
    assert_refusal(&token, &refusal, "malformed");
}

#[test]
fn missing_sub_or_exp_is_malformed_naming_the_claim() {
    let auth = hs_auth();
    for (claim, expect) in [("sub", "sub (the identity) is missing"), ("exp", "exp")] {
        let token = hs256(&claims_with("alice", json!({ claim: null })));
        let refusal = refused(auth.verify(&token, at(0)));
        assert!(
            matches!(&refusal, AuthRefusal::Malformed(m) if m.contains(expect)),
            "{refusal}"
        );
        assert_refusal(&token, &refusal, "malformed");
    }
}

#[test]
fn a_token_signed_with_another_secret_has_a_bad_signature() {
    let other = EncodingKey::from_secret(b"another secret of at least 32 bytes!!").expect("key");
    let token = sign_with(&other, Algorithm::HS256, None, &claims("alice"));
    let refusal = refused(hs_auth().verify(&token, at(0)));
    assert_eq!(
        refusal,
        AuthRefusal::BadSignature(
            "the HS256 signature does not verify with the HS256 secret".into()
        )
    );
    assert_refusal(&token, &refusal, "bad_signature");
}

#[test]
fn a_tampered_payload_or_signature_has_a_bad_signature() {
    let auth = hs_auth();
    let token = hs256(&claims("alice"));
    verified(auth.verify(&token, at(0)));
    let parts: Vec<&str> = token.split('.').collect();
    // Payload of another identity under the original signature.
    let forged_payload = URL_SAFE_NO_PAD.encode(claims("mallory").to_string());
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    // One signature character changed (still base64url).
    let mut signature = parts[2].to_owned();
    let last = signature.pop().expect("non-empty");
    signature.push(if last == 'A' { 'B' } else { 'A' });
    let flipped = format!("{}.{}.{}", parts[0], parts[1], signature);
    for token in [forged, flipped] {
        let refusal = refused(auth.verify(&token, at(0)));
        assert!(matches!(refusal, AuthRefusal::BadSignature(_)), "{refusal}");
        assert_refusal(&token, &refusal, "bad_signature");
    }
}

#[test]
fn an_algorithm_without_a_configured_key_has_a_bad_signature() {
    let key = FreshKey::new(Algorithm::ES256);
    let token = key.sign(Some("key-1"), &claims("alice"));
    let refusal = refused(hs_auth().verify(&token, at(0)));
    assert_eq!(
        refusal,
        AuthRefusal::BadSignature("no configured key takes alg ES256 with kid \"key-1\"".into())
    );
    assert_refusal(&token, &refusal, "bad_signature");
}

#[test]
fn expired_not_yet_valid_wrong_audience_wrong_issuer_and_revoked() {
    let mut config = hs_config();
    config.audience = Some("signalgate".into());
    config.issuer = Some("https://auth.example.com".into());
    let auth = Authenticator::new(config);
    let good = json!({"aud": "signalgate", "iss": "https://auth.example.com"});
    let with = |changes: Value| {
        let mut claims = claims_with("alice", good.clone());
        let (Some(map), Value::Object(changes)) = (claims.as_object_mut(), changes) else {
            panic!("objects");
        };
        map.extend(changes);
        hs256(&claims)
    };
    verified(auth.verify(&with(json!({})), at(0)));

    let cases = [
        (
            with(json!({"exp": unix(at(-60))})),
            AuthRefusal::Expired,
            "expired",
        ),
        (
            with(json!({"nbf": unix(at(60))})),
            AuthRefusal::NotYetValid,
            "not_yet_valid",
        ),
        (
            with(json!({"aud": "another-app"})),
            AuthRefusal::WrongAudience,
            "wrong_audience",
        ),
        (
            with(json!({"iss": "https://evil.example.com"})),
            AuthRefusal::WrongIssuer,
            "wrong_issuer",
        ),
    ];
    for (token, expect, label) in cases {
        let refusal = refused(auth.verify(&token, at(0)));
        assert_eq!(refusal, expect);
        assert_refusal(&token, &refusal, label);
    }

    let token = with(json!({}));
    auth.revoke("alice", at(10));
    let refusal = refused(auth.verify(&token, at(20)));
    assert_eq!(refusal, AuthRefusal::Revoked);
    assert_refusal(&token, &refusal, "revoked");
}

#[test]
fn every_refusal_has_its_wire_code() {
    let cases = [
        (AuthRefusal::Missing, ErrorCode::TokenMissing),
        (
            AuthRefusal::Malformed("x".into()),
            ErrorCode::TokenMalformed,
        ),
        (
            AuthRefusal::BadSignature("x".into()),
            ErrorCode::TokenBadSignature,
        ),
        (AuthRefusal::Expired, ErrorCode::TokenExpired),
        (AuthRefusal::NotYetValid, ErrorCode::TokenNotYetValid),
        (AuthRefusal::WrongAudience, ErrorCode::TokenWrongAudience),
        (AuthRefusal::WrongIssuer, ErrorCode::TokenWrongIssuer),
        (AuthRefusal::Revoked, ErrorCode::TokenRevoked),
    ];
    for (refusal, code) in cases {
        assert_eq!(refusal.code(), code, "{refusal}");
    }
}

#[test]
fn verifying_logs_nothing_of_the_token() {
    let auth = hs_auth();
    let good = hs256(&claims("alice"));
    let bad = format!("{}x", &good[..good.len() - 1]);
    let (_, logs) = capture_logs(|| {
        let _ = auth.verify(&good, at(0));
        let _ = auth.verify(&bad, at(0));
        let _ = auth.verify("garbage", at(0));
    });
    let signature = good.rsplit('.').next().expect("three parts");
    assert!(!logs.contains(signature), "{logs}");
}
