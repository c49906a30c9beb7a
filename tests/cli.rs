//! The binary's edge: bad configuration fails at start with a message naming the value.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn serve(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_signalgate"));
    cmd.arg("serve")
        .args(["--http-listen", "off", "--metrics-listen", "off"])
        .arg("--dev-cert-dir")
        .arg(dir.path())
        .args(args)
        .env("SIGNALGATE_LISTEN", "127.0.0.1:0");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // Every case here must fail fast; a gateway that starts instead would run forever.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway started instead of refusing {args:?} {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    (status.success(), stderr)
}

#[test]
fn a_ping_interval_not_below_half_the_liveness_timeout_is_refused() {
    let (ok, stderr) = serve(&["--liveness-timeout", "10s", "--ping-interval", "5s"], &[]);
    assert!(!ok);
    assert!(stderr.contains("5s") && stderr.contains("10s"), "{stderr}");
    assert!(stderr.contains("ping interval"), "{stderr}");
}

#[test]
fn a_bad_duration_in_the_environment_is_named() {
    let (ok, stderr) = serve(&[], &[("SIGNALGATE_LIVENESS_TIMEOUT", "ten")]);
    assert!(!ok);
    assert!(
        stderr.contains("\"ten\"") && stderr.contains("liveness-timeout"),
        "{stderr}"
    );
}

#[test]
fn a_typo_in_the_config_file_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, "liveness_timout = \"3s\"\n").expect("write");
    let (ok, stderr) = serve(&["--config", path.to_str().expect("utf-8")], &[]);
    assert!(!ok);
    assert!(
        stderr.contains("liveness_timout") && stderr.contains("gateway.toml"),
        "{stderr}"
    );
}

#[test]
fn flags_override_the_environment_which_overrides_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        "liveness_timeout = \"1s\"\nping_interval = \"900ms\"\n",
    )
    .expect("write");
    // The file alone is invalid (900ms is not below half of 1s)...
    let file = ["--config", path.to_str().expect("utf-8")];
    let (ok, stderr) = serve(&file, &[]);
    assert!(!ok && stderr.contains("900ms"), "{stderr}");
    // ...the environment fixes the ping interval, a flag then breaks the timeout again.
    let env = [("SIGNALGATE_PING_INTERVAL", "300ms")];
    let (ok, stderr) = serve(
        &[&file[..], &["--liveness-timeout", "500ms"]].concat(),
        &env,
    );
    assert!(
        !ok && stderr.contains("300ms") && stderr.contains("500ms"),
        "{stderr}"
    );
}

#[test]
fn an_address_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (ok, stderr) = serve(&["--listen", &addr], &[]);
    assert!(!ok);
    assert!(stderr.contains(&addr), "{stderr}");
}

#[test]
fn missing_certificate_files_are_named() {
    let (ok, stderr) = serve(
        &[
            "--cert",
            "/nonexistent/cert.pem",
            "--key",
            "/nonexistent/key.pem",
        ],
        &[],
    );
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/cert.pem"), "{stderr}");
}
