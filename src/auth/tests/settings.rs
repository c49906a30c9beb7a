//! Settings: layering, flags and TOML, and validation messages that name the bad value (but
//! never a secret).

use clap::Parser;

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    auth: AuthSettings,
}

fn invalid(settings: AuthSettings) -> String {
    settings.validate().expect_err("invalid").to_string()
}

#[test]
fn without_any_key_authentication_is_off() {
    assert!(settings().validate().expect("valid").is_none());
}

#[test]
fn other_settings_without_a_key_are_a_mistake() {
    let message = invalid(AuthSettings {
        audience: Some("signalgate".into()),
        ..settings()
    });
    assert!(message.contains("no key"), "{message}");
}

#[test]
fn a_short_secret_is_refused_by_its_length_not_its_content() {
    let message = invalid(AuthSettings {
        hs256_secret: Some(SecretString::new("hunter2-hunter2")),
        ..settings()
    });
    assert!(message.contains("--auth-hs256-secret"), "{message}");
    assert!(message.contains("is 15 bytes long"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "secret", b"hunter2-hunter2\n");
    let message = invalid(AuthSettings {
        hs256_secret_file: Some(file.clone()),
        ..settings()
    });
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("is 15 bytes long"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn a_secret_file_loses_its_trailing_newline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut contents = SECRET.to_vec();
    contents.extend_from_slice(b"\r\n");
    let file = write(dir.path(), "secret", &contents);
    let config = AuthSettings {
        hs256_secret_file: Some(file),
        ..settings()
    }
    .validate()
    .expect("valid")
    .expect("on");
    verified(Authenticator::new(config).verify(&hs256(&claims("alice")), at(0)));
}

#[test]
fn secrets_do_not_show_in_debug_output() {
    let settings = AuthSettings {
        hs256_secret: Some(SecretString::new(
            std::str::from_utf8(SECRET).expect("text"),
        )),
        ..settings()
    };
    let shown = format!("{settings:?} {:?}", settings.clone().validate());
    assert!(
        !shown.contains(std::str::from_utf8(SECRET).expect("text")),
        "{shown}"
    );
    assert!(shown.contains("redacted"), "{shown}");
}

#[test]
fn both_secret_sources_are_refused() {
    let message = invalid(AuthSettings {
        hs256_secret: Some(SecretString::new(
            std::str::from_utf8(SECRET).expect("text"),
        )),
        hs256_secret_file: Some("/etc/secret".into()),
        ..settings()
    });
    assert!(
        message.contains("--auth-hs256-secret and --auth-hs256-secret-file"),
        "{message}"
    );
}

#[test]
fn missing_files_are_named() {
    let missing = PathBuf::from("/nonexistent/signalgate/issuer.pem");
    for settings in [
        AuthSettings {
            public_keys: Some(vec![missing.clone()]),
            ..settings()
        },
        AuthSettings {
            jwks: Some(missing.clone()),
            ..settings()
        },
        AuthSettings {
            hs256_secret_file: Some(missing.clone()),
            ..settings()
        },
    ] {
        let message = invalid(settings);
        assert!(
            message.contains("/nonexistent/signalgate/issuer.pem"),
            "{message}"
        );
        assert!(message.contains("cannot read"), "{message}");
    }
}

#[test]
fn a_pem_that_is_no_public_key_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let private = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cases = [
        (
            "private.pem",
            private.serialize_pem(),
            "holds a private key",
        ),
        (
            "notes.txt",
            "just some notes".to_owned(),
            "is not a PEM file",
        ),
        (
            "csr.pem",
            "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
                .to_owned(),
            "not a public key",
        ),
        (
            "broken.pem",
            "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n".to_owned(),
            "does not hold a supported public key",
        ),
    ];
    for (name, contents, expect) in cases {
        let path = write(dir.path(), name, contents.as_bytes());
        let message = invalid(AuthSettings {
            public_keys: Some(vec![path.clone()]),
            ..settings()
        });
        assert!(
            message.starts_with(&path.display().to_string()),
            "{message}"
        );
        assert!(message.contains(expect), "{message}");
    }
}

#[test]
fn audience_issuer_and_leeway_are_checked() {
    let with_secret = || AuthSettings {
        hs256_secret: Some(SecretString::new(
            std::str::from_utf8(SECRET).expect("text"),
        )),
        ..settings()
    };
    let message = invalid(AuthSettings {
        audience: Some(" ".into()),
        ..with_secret()
    });
    assert!(message.contains("auth_audience is empty"), "{message}");
    let message = invalid(AuthSettings {
        leeway: Some(Duration::from_secs(3600)),
        ..with_secret()
    });
    assert!(message.contains("auth_leeway = 3600s"), "{message}");
    let config = AuthSettings {
        issuer: Some("https://auth.example.com".into()),
        leeway: Some(Duration::from_secs(5)),
        ..with_secret()
    }
    .validate()
    .expect("valid")
    .expect("on");
    assert_eq!(config.issuer.as_deref(), Some("https://auth.example.com"));
    assert_eq!(config.leeway, Duration::from_secs(5));
    assert_eq!(config.audience, None);
}

#[test]
fn over_fills_field_by_field() {
    let upper = AuthSettings {
        audience: Some("flag".into()),
        public_keys: Some(vec!["flag.pem".into()]),
        ..settings()
    };
    let lower = AuthSettings {
        audience: Some("file".into()),
        issuer: Some("file-issuer".into()),
        leeway: Some(Duration::from_secs(5)),
        ..settings()
    };
    let merged = upper.over(lower);
    assert_eq!(merged.audience.as_deref(), Some("flag"));
    assert_eq!(merged.issuer.as_deref(), Some("file-issuer"));
    assert_eq!(merged.public_keys, Some(vec![PathBuf::from("flag.pem")]));
    assert_eq!(merged.leeway, Some(Duration::from_secs(5)));
    assert_eq!(merged.jwks, None);
}

#[test]
fn flags_parse_with_repeatable_keys_and_durations() {
    let cli = Cli::try_parse_from([
        "signalgate",
        "--auth-public-key",
        "a.pem",
        "--auth-public-key",
        "b.pem,c.pem",
        "--auth-jwks",
        "keys.json",
        "--auth-audience",
        "signalgate",
        "--auth-issuer",
        "https://auth.example.com",
        "--auth-leeway",
        "45s",
        "--auth-hs256-secret-file",
        "secret",
    ])
    .expect("parses");
    let auth = cli.auth;
    assert_eq!(
        auth.public_keys,
        Some(vec!["a.pem".into(), "b.pem".into(), "c.pem".into()])
    );
    assert_eq!(auth.jwks, Some("keys.json".into()));
    assert_eq!(auth.audience.as_deref(), Some("signalgate"));
    assert_eq!(auth.leeway, Some(Duration::from_secs(45)));
    assert_eq!(auth.hs256_secret_file, Some("secret".into()));

    let error = Cli::try_parse_from(["signalgate", "--auth-leeway", "soon"])
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("\"soon\" is not a duration"), "{error}");
}

#[test]
fn toml_keys_are_the_field_names_and_unknown_keys_are_refused() {
    let settings: AuthSettings = toml::from_str(
        r#"
        hs256_secret_file = "/run/secrets/signalgate"
        public_keys = ["issuer.pem"]
        jwks = "jwks.json"
        audience = "signalgate"
        issuer = "https://auth.example.com"
        leeway = "10s"
        "#,
    )
    .expect("parses");
    assert_eq!(settings.leeway, Some(Duration::from_secs(10)));
    assert_eq!(settings.public_keys, Some(vec!["issuer.pem".into()]));

    let error = toml::from_str::<AuthSettings>("audiences = \"x\"")
        .expect_err("refused")
        .to_string();
    assert!(error.contains("audiences"), "{error}");
}
