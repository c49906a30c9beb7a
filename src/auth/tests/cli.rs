//! `signalgate token create` and `mint_hs256`: what is minted verifies with the same secret,
//! and bad values are refused by name.

use clap::Parser;

use super::*;
use crate::auth::token_cli::{TokenArgs, TokenCliError, run};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    token: TokenArgs,
}

fn create(args: &[&str]) -> Result<String, TokenCliError> {
    let mut argv = vec!["signalgate-token", "create"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("parses");
    run(cli.token, at(0))
}

fn secret_file(dir: &Path) -> String {
    let mut contents = SECRET.to_vec();
    contents.push(b'\n');
    write(dir, "secret", &contents).display().to_string()
}

#[test]
fn token_create_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_file(dir.path());
    let token = create(&[
        "--sub",
        "alice",
        "--room",
        "demo",
        "--room",
        "team-*",
        "--ttl",
        "2h",
        "--device",
        "phone",
        "--name",
        "Alice",
        "--metadata",
        r#"{ "role": "host" }"#,
        "--no-signal",
        "--audience",
        "signalgate",
        "--issuer",
        "dev",
        "--secret-file",
        &secret,
    ])
    .expect("creates");
    let mut config = hs_config();
    config.audience = Some("signalgate".into());
    config.issuer = Some("dev".into());
    let verified = verified(Authenticator::new(config).verify(&token, at(1)));
    assert_eq!(
        verified,
        VerifiedToken {
            sub: "alice".into(),
            device: Some("phone".into()),
            expires_at: at(7200),
            issued_at: Some(at(0)),
            rooms: vec![
                RoomGrant::Exact("demo".into()),
                RoomGrant::Prefix("team-".into())
            ],
            signal: false,
            name: "Alice".into(),
            metadata: r#"{"role":"host"}"#.into(),
        }
    );
    // Valid for the ttl, and no longer.
    assert_eq!(
        refused(hs_auth().verify(&token, at(7200 + 30))),
        AuthRefusal::Expired
    );
}

#[test]
fn token_create_defaults() {
    let token = create(&[
        "--sub",
        "bob",
        "--room",
        "*",
        "--secret",
        std::str::from_utf8(SECRET).expect("text"),
    ])
    .expect("creates");
    let verified = verified(hs_auth().verify(&token, at(0)));
    assert_eq!(verified.rooms, vec![RoomGrant::Any]);
    assert!(verified.signal);
    assert_eq!(verified.expires_at, at(3600));
    assert_eq!(
        (verified.name, verified.metadata),
        (String::new(), String::new())
    );
}

#[test]
fn token_create_refuses_bad_values_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_file(dir.path());
    let cases: [(&[&str], &str); 6] = [
        (&["--metadata", "{role: host}"], "--metadata is not JSON"),
        (
            &["--room", "te*am"],
            "rooms[1] has a '*' that is not its last character",
        ),
        (&["--device", ""], "device is empty"),
        (&["--ttl", "0s"], "ttl 0ns is out of range"),
        (&["--ttl", "400days"], "is out of range (1s to 366 days)"),
        (
            &["--name", &"n".repeat(129)],
            "name is 129 bytes long, more than 128",
        ),
    ];
    for (extra, expect) in cases {
        let mut args = vec!["--sub", "alice", "--room", "demo", "--secret-file", &secret];
        args.extend_from_slice(extra);
        let message = create(&args).expect_err("refused").to_string();
        assert!(message.contains(expect), "{expect:?} not in {message}");
    }
    let short = write(dir.path(), "short", b"tiny");
    let message = create(&[
        "--sub",
        "a",
        "--room",
        "r",
        "--secret-file",
        &short.display().to_string(),
    ])
    .expect_err("refused")
    .to_string();
    assert!(message.contains("is 4 bytes long"), "{message}");
    assert!(!message.contains("tiny"), "{message}");

    let message = create(&["--sub", "", "--room", "r", "--secret-file", &secret])
        .expect_err("refused")
        .to_string();
    assert!(message.contains("sub is empty"), "{message}");
}

#[test]
fn token_create_needs_a_secret_and_a_room() {
    // (Unless SIGNALGATE_AUTH_HS256_SECRET(_FILE) is set in the test's environment.)
    if std::env::var_os("SIGNALGATE_AUTH_HS256_SECRET").is_none()
        && std::env::var_os("SIGNALGATE_AUTH_HS256_SECRET_FILE").is_none()
    {
        let message = create(&["--sub", "alice", "--room", "demo"])
            .expect_err("no secret")
            .to_string();
        assert!(message.contains("no secret"), "{message}");
    }
    let error = Cli::try_parse_from(["signalgate-token", "create", "--sub", "alice"])
        .err()
        .expect("no room")
        .to_string();
    assert!(error.contains("--room"), "{error}");
}

#[test]
fn mint_hs256_checks_the_secret_and_the_spec() {
    let spec = TokenSpec::new("alice", ["demo"]);
    let error = mint_hs256(b"short", &spec, at(0)).expect_err("short secret");
    assert!(matches!(error, MintError::SecretTooShort(5)), "{error}");

    let spec = TokenSpec {
        metadata: Some(json!("m".repeat(MAX_METADATA_BYTES))),
        ..TokenSpec::new("alice", ["demo"])
    };
    let error = mint_hs256(SECRET, &spec, at(0)).expect_err("too large");
    assert!(
        error.to_string().contains("metadata is 1026 bytes"),
        "{error}"
    );

    let spec = TokenSpec {
        ttl: Duration::from_secs(60),
        ..TokenSpec::new("carol", ["demo"])
    };
    let token = mint_hs256(SECRET, &spec, at(0) + Duration::from_millis(900)).expect("mints");
    let verified = verified(hs_auth().verify(&token, at(1)));
    // iat is the whole second; exp is iat + ttl.
    assert_eq!(verified.issued_at, Some(at(0)));
    assert_eq!(verified.expires_at, at(60));
}

#[test]
fn the_authenticator_mints_with_its_own_secret_only() {
    let spec = TokenSpec::new("dave", ["demo"]);
    let token = hs_auth().mint_hs256(&spec, at(0)).expect("has a secret");
    assert_eq!(verified(hs_auth().verify(&token, at(0))).sub, "dave");

    let settings = AuthSettings {
        public_keys: Some(vec![testdata("es256-public.pem")]),
        ..settings()
    };
    let auth = Authenticator::new(settings.validate().expect("valid").expect("on"));
    let error = auth.mint_hs256(&spec, at(0)).expect_err("no secret");
    assert!(matches!(error, MintError::NoSecret), "{error}");
}
