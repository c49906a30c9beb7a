//! Claims: room grants, sizes and types (a malformed claim is named), defaults, and the
//! clock leeway for `exp`, `nbf` and `iat`.

use super::*;

fn check(changes: Value) -> Result<VerifiedToken, AuthRefusal> {
    hs_auth().verify(&hs256(&claims_with("alice", changes)), at(0))
}

fn malformed(changes: Value) -> String {
    match refused(check(changes)) {
        AuthRefusal::Malformed(message) => message,
        other => panic!("not malformed: {other}"),
    }
}

#[test]
fn room_grants_exact_prefix_and_everything() {
    let token = verified(check(json!({"rooms": ["lobby", "team-*", "*"]})));
    assert_eq!(
        token.rooms,
        vec![
            RoomGrant::Exact("lobby".into()),
            RoomGrant::Prefix("team-".into()),
            RoomGrant::Any,
        ]
    );
}

#[test]
fn a_token_without_rooms_grants_no_room() {
    let token = verified(check(json!({"rooms": null})));
    assert!(token.rooms.is_empty());
    let token = verified(check(json!({"rooms": []})));
    assert!(token.rooms.is_empty());
}

#[test]
fn bad_room_grants_are_malformed_naming_the_entry() {
    assert_eq!(
        malformed(json!({"rooms": "lobby"})),
        "rooms must be an array of strings, not a string"
    );
    assert_eq!(
        malformed(json!({"rooms": ["lobby", 7]})),
        "rooms[1] must be a string, not a number"
    );
    assert_eq!(malformed(json!({"rooms": ["a", ""]})), "rooms[1] is empty");
    assert_eq!(
        malformed(json!({"rooms": ["te*am"]})),
        "rooms[0] has a '*' that is not its last character"
    );
    assert_eq!(
        malformed(json!({"rooms": ["x".repeat(65)]})),
        "rooms[0] is 65 bytes long, more than 64"
    );
    let many: Vec<String> = (0..=MAX_ROOM_GRANTS).map(|i| format!("r{i}")).collect();
    assert_eq!(
        malformed(json!({ "rooms": many })),
        "rooms has 257 entries, more than 256"
    );
    // At the limits: accepted.
    let prefix = format!("{}*", "p".repeat(MAX_ROOM_GRANT_BYTES));
    verified(check(json!({"rooms": ["x".repeat(64), prefix]})));
}

#[test]
fn identity_profile_and_signal_claims() {
    let token = verified(check(json!({
        "device": "phone",
        "name": "Alice A.",
        "metadata": {"role": "host", "tags": [1, 2]},
        "signal": false,
    })));
    assert_eq!(token.sub, "alice");
    assert_eq!(token.device.as_deref(), Some("phone"));
    assert_eq!(token.name, "Alice A.");
    assert_eq!(token.metadata, r#"{"role":"host","tags":[1,2]}"#);
    assert!(!token.signal);
    assert_eq!(token.expires_at, at(3600));
    assert_eq!(token.issued_at, Some(at(0)));
    assert_eq!(token.expires_in(at(600)), Duration::from_secs(3000));
    assert_eq!(token.expires_in(at(7200)), Duration::ZERO);

    // Defaults: may signal, no device, empty profile.
    let token = verified(check(json!({})));
    assert!(token.signal);
    assert_eq!(
        (token.device, token.name, token.metadata),
        (None, String::new(), String::new())
    );
    // Any JSON value is metadata.
    assert_eq!(
        verified(check(json!({"metadata": "vip"}))).metadata,
        "\"vip\""
    );
    assert_eq!(verified(check(json!({"metadata": 42}))).metadata, "42");
}

#[test]
fn sizes_are_limited_and_named() {
    let at_limit = verified(check(json!({
        "sub": "s".repeat(MAX_SUB_BYTES),
        "device": "d".repeat(MAX_DEVICE_BYTES),
        "name": "n".repeat(MAX_NAME_BYTES),
        "metadata": "m".repeat(MAX_METADATA_BYTES - 2),
    })));
    assert_eq!(at_limit.metadata.len(), MAX_METADATA_BYTES);

    assert_eq!(
        malformed(json!({"sub": "s".repeat(129)})),
        "sub is 129 bytes long, more than 128"
    );
    assert_eq!(
        malformed(json!({"device": "d".repeat(65)})),
        "device is 65 bytes long, more than 64"
    );
    assert_eq!(
        malformed(json!({"name": "é".repeat(65)})),
        "name is 130 bytes long, more than 128"
    );
    assert_eq!(
        malformed(json!({"metadata": "m".repeat(MAX_METADATA_BYTES - 1)})),
        "metadata is 1025 bytes long as compact JSON, more than 1024"
    );
}

#[test]
fn bad_types_are_malformed_naming_the_claim() {
    let cases = [
        (json!({"sub": 42}), "sub must be a string, not a number"),
        (json!({"sub": ""}), "sub is empty"),
        (json!({"sub": "al\nice"}), "sub contains control characters"),
        (
            json!({"exp": "tomorrow"}),
            "exp must be a NumericDate (seconds since 1970), not a string",
        ),
        (json!({"exp": -5}), "exp is negative or not a finite number"),
        (
            json!({"nbf": [1]}),
            "nbf must be a NumericDate (seconds since 1970), not an array",
        ),
        (
            json!({"iat": true}),
            "iat must be a NumericDate (seconds since 1970), not a boolean",
        ),
        (
            json!({"signal": "yes"}),
            "signal must be a boolean, not a string",
        ),
        (json!({"device": ""}), "device is empty"),
        (
            json!({"device": {"id": 1}}),
            "device must be a string, not an object",
        ),
        (json!({"name": 1}), "name must be a string, not a number"),
        (
            json!({"aud": 1}),
            "aud must be a string or an array of strings, not a number",
        ),
        (
            json!({"aud": ["a", 1]}),
            "aud must be a string or an array of strings; it holds a number",
        ),
        (json!({"iss": ["a"]}), "iss must be a string, not an array"),
    ];
    for (changes, expect) in cases {
        assert_eq!(malformed(changes.clone()), expect, "{changes}");
    }
}

#[test]
fn numeric_dates_may_be_fractional() {
    let exp = unix(at(3600)) as f64 + 0.5;
    let token = verified(check(json!({ "exp": exp })));
    assert_eq!(token.expires_at, at(3600) + Duration::from_millis(500));
}

#[test]
fn exp_nbf_and_iat_tolerate_the_leeway_and_no_more() {
    // Default leeway: 30 s.
    verified(check(json!({"exp": unix(at(-29))})));
    assert_eq!(
        refused(check(json!({"exp": unix(at(-30))}))),
        AuthRefusal::Expired
    );
    verified(check(json!({"nbf": unix(at(30))})));
    assert_eq!(
        refused(check(json!({"nbf": unix(at(31))}))),
        AuthRefusal::NotYetValid
    );
    verified(check(json!({"iat": unix(at(30))})));
    assert_eq!(
        refused(check(json!({"iat": unix(at(31))}))),
        AuthRefusal::NotYetValid
    );

    // Configured leeway: none.
    let mut config = hs_config();
    config.leeway = Duration::ZERO;
    let strict = Authenticator::new(config);
    let verify = |changes: Value| strict.verify(&hs256(&claims_with("alice", changes)), at(0));
    assert_eq!(
        refused(verify(json!({"exp": unix(at(0))}))),
        AuthRefusal::Expired
    );
    verified(verify(json!({"exp": unix(at(1))})));
    assert_eq!(
        refused(verify(json!({"iat": unix(at(1))}))),
        AuthRefusal::NotYetValid
    );
    verified(verify(json!({"nbf": unix(at(0))})));
}

#[test]
fn audience_and_issuer_are_checked_only_when_configured() {
    // Not configured: whatever the token says is fine.
    verified(check(json!({"aud": "someone", "iss": "anyone"})));

    let mut config = hs_config();
    config.audience = Some("signalgate".into());
    config.issuer = Some("https://auth.example.com".into());
    let auth = Authenticator::new(config);
    let verify = |changes: Value| auth.verify(&hs256(&claims_with("alice", changes)), at(0));
    let iss = json!("https://auth.example.com");
    verified(verify(json!({"aud": "signalgate", "iss": iss})));
    verified(verify(json!({"aud": ["other", "signalgate"], "iss": iss})));
    assert_eq!(
        refused(verify(json!({"aud": ["other"], "iss": iss}))),
        AuthRefusal::WrongAudience
    );
    assert_eq!(
        refused(verify(json!({"iss": iss}))),
        AuthRefusal::WrongAudience
    );
    assert_eq!(
        refused(verify(json!({"aud": "signalgate"}))),
        AuthRefusal::WrongIssuer
    );
    assert_eq!(
        refused(verify(
            json!({"aud": "signalgate", "iss": "https://auth.example.com/"})
        )),
        AuthRefusal::WrongIssuer
    );
}
