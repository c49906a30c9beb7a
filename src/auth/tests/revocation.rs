//! Revocation: an identity's tokens issued up to a moment are refused; its next token works.

use super::*;

fn issued(sub: &str, iat: Option<SystemTime>) -> String {
    let iat = iat.map_or(Value::Null, |t| json!(unix(t)));
    hs256(&claims_with(sub, json!({ "iat": iat })))
}

#[test]
fn revoked_until_the_next_token() {
    let auth = hs_auth();
    let before = issued("alice", Some(at(0)));
    let same_second = issued("alice", Some(at(100)));
    let after = issued("alice", Some(at(101)));
    let without_iat = issued("alice", None);
    let bob = issued("bob", Some(at(0)));
    for token in [&before, &same_second, &after, &without_iat, &bob] {
        verified(auth.verify(token, at(200)));
    }

    auth.revoke("alice", at(100));
    assert_eq!(refused(auth.verify(&before, at(200))), AuthRefusal::Revoked);
    // `iat` at the revocation moment is "at or before": revoked.
    assert_eq!(
        refused(auth.verify(&same_second, at(200))),
        AuthRefusal::Revoked
    );
    // Without `iat` a token cannot prove it is newer.
    assert_eq!(
        refused(auth.verify(&without_iat, at(200))),
        AuthRefusal::Revoked
    );
    // Issued later: works again.
    verified(auth.verify(&after, at(200)));
    // Other identities are not touched.
    verified(auth.verify(&bob, at(200)));
}

#[test]
fn a_later_revocation_never_moves_the_moment_back() {
    let auth = hs_auth();
    let token = issued("alice", Some(at(50)));
    auth.revoke("alice", at(100));
    auth.revoke("alice", at(10));
    assert_eq!(refused(auth.verify(&token, at(200))), AuthRefusal::Revoked);
    auth.revoke("alice", at(300));
    assert_eq!(
        refused(auth.verify(&issued("alice", Some(at(200))), at(400))),
        AuthRefusal::Revoked
    );
    verified(auth.verify(&issued("alice", Some(at(301))), at(400)));
}

#[test]
fn a_forged_token_of_a_revoked_identity_is_a_bad_signature_not_a_revocation() {
    // Signature first: a refusal never confirms facts about identities to a forger.
    let auth = hs_auth();
    auth.revoke("alice", at(100));
    let forger = EncodingKey::from_secret(b"a forger's own secret, 32 bytes long").expect("key");
    let token = sign_with(&forger, Algorithm::HS256, None, &claims("alice"));
    assert!(matches!(
        refused(auth.verify(&token, at(200))),
        AuthRefusal::BadSignature(_)
    ));
}

#[test]
fn revocation_is_shared_by_every_clone_of_the_arc() {
    let auth = Arc::new(hs_auth());
    let token = issued("alice", Some(at(0)));
    let revoker = Arc::clone(&auth);
    std::thread::spawn(move || revoker.revoke("alice", at(5)))
        .join()
        .expect("no panic");
    assert_eq!(refused(auth.verify(&token, at(10))), AuthRefusal::Revoked);
}
