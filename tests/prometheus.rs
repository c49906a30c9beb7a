//! The dashboard against a real Prometheus: the gateway binary runs with short liveness
//! numbers, a real `prometheus` (Debian package `prometheus`) scrapes it every second with
//! the example config of grafana/prometheus/, and scripted clients connect over WebSocket and
//! WebTransport, signal, get refused, vanish (blackholed), resume, take over, close and leave.
//! Then every PromQL expression of grafana/dashboards/signalgate.json is evaluated through
//! Prometheus' HTTP API and must return data, and the p99 of the detection latency of silent
//! peers must be within the liveness timeout + 1 s.
//!
//! Needs `prometheus` and `promtool` on PATH; fails (does not skip) without them.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use signalgate::client::{ClientError, ConnectOptions, Connection, ResumeState, Session, Trust};
use signalgate::metrics;
use signalgate::proto::{ErrorCode, PresenceState, Reason, server_frame};

const LIVENESS_TIMEOUT: Duration = Duration::from_secs(2);
const PING_INTERVAL: Duration = Duration::from_millis(600);
const RESUME_WINDOW: Duration = Duration::from_secs(3);
/// What the example config names the gateway's job; the dashboard's `$job`.
const JOB: &str = "signalgate";
/// Grafana's `$__rate_interval` for a data source scraped every second (the test's scrape
/// interval): max($__interval + scrape interval, 4 × scrape interval) at a 1 s step.
const GRAFANA_RATE_INTERVAL: &str = "4s";

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus_scraping_a_real_gateway() {
    let prometheus_bin = require("prometheus");
    let promtool = require("promtool");
    let dir = tempfile::tempdir().expect("temp dir");

    // In cluster mode (with a real nats-server), so that the cluster panels have data too: a
    // second gateway joins, relays signals with the scraped one, and is killed. Both keep
    // their sessions in JetStream (durable mode), so that the durable panels have data too.
    let nats = common::cluster::NatsCluster::start(1);
    let cluster_args = [
        "--cluster".to_string(),
        nats.urls(),
        "--node-id".into(),
        "scraped".into(),
        "--durable".into(),
        "true".into(),
        "--durable-replicas".into(),
        "1".into(),
    ];
    let gateway = GatewayProcess::start(dir.path(), &cluster_args);
    let prometheus = Prometheus::start(&prometheus_bin, dir.path(), gateway.metrics);
    let started = Instant::now();
    let started_unix = unix_now();
    // As in production, Prometheus has scraped the gateway before anything happens: a counter
    // that a first scrape finds already incremented shows no increase.
    prometheus.wait_for_value(
        &format!(r#"count_over_time(up{{job="{JOB}"}}[1m])"#),
        2.0,
        Duration::from_secs(30),
    );

    // The scripted clients. Sessions that must stay connected for the queries are kept.
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (report, _alive) = runtime.block_on(scenario(&gateway));
    runtime.block_on(cluster_scenario(&gateway, &nats));

    // Prometheus has scraped the end of the scenario once the last events are visible.
    let expected = [
        (
            r#"sum(signalgate_disconnect_detection_seconds_count{reason="liveness_timeout"})"#,
            4.0,
        ),
        (
            r#"sum(signalgate_sessions_left_total{reason="resume_window_expired"})"#,
            2.0,
        ),
        (r#"sum(signalgate_sessions_left_total{reason="bye"})"#, 2.0),
        (r#"sum(signalgate_resumes_total{outcome="resumed"})"#, 2.0),
        (
            r#"sum(signalgate_signals_dropped_total{reason="not_joined"})"#,
            1.0,
        ),
        (r#"sum(signalgate_cluster_relay_seconds_count{})"#, 3.0),
        (
            r#"sum(signalgate_cluster_node_detection_seconds_count{})"#,
            1.0,
        ),
        (
            r#"sum(signalgate_durable_writes_total{outcome="stored"})"#,
            1.0,
        ),
    ];
    for (query, at_least) in expected {
        let query = query.replace('{', &format!("{{job=\"{JOB}\","));
        prometheus.wait_for_value(&query, at_least, Duration::from_secs(30));
    }
    // A few more scrapes, so that every rate has points after the last change.
    std::thread::sleep(Duration::from_secs(3));
    // For instant queries at the end: $__rate_interval stretched over the whole run, so that
    // every event counts. Range queries (as Grafana draws panels) use Grafana's own interval.
    let window = format!("{}s", started.elapsed().as_secs() + 30);
    let range = (started_unix, unix_now());

    every_metric_is_exported_with_data(&prometheus);
    every_dashboard_query_returns_data(&prometheus, &window, range, &gateway);
    let numbers =
        detection_latency_is_within_the_timeout_plus_one_second(&prometheus, &window, range);
    scenario_counts_are_visible(&prometheus);
    gateway_metrics_pass_promtool_lint(&promtool, gateway.metrics);

    eprintln!(
        "observed by a peer, cut -> UNREACHABLE: {:?}",
        report.noticed
    );
    eprintln!("{numbers}");
    drop(prometheus);
    drop(gateway);
}

// ---------------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------------

/// A second gateway joins the scraped one's cluster; a session on each, in one room, relay
/// signals across; then the second gateway is killed (SIGKILL) and the scraped one notices.
async fn cluster_scenario(gateway: &GatewayProcess, nats: &common::cluster::NatsCluster) {
    let mut peer = common::cluster::GatewayProcess::spawn(&[
        "--cluster".into(),
        nats.urls(),
        "--node-id".into(),
        "peer".into(),
        "--liveness-timeout".into(),
        humantime(LIVENESS_TIMEOUT),
        "--ping-interval".into(),
        humantime(PING_INTERVAL),
        "--durable".into(),
        "true".into(),
        "--durable-replicas".into(),
        "1".into(),
    ]);
    let joined = eventually(Duration::from_secs(15), || async {
        let (_, body) = http_get(gateway.metrics, "/metrics").await;
        body.lines()
            .any(|l| l.trim() == "signalgate_cluster_nodes 2")
            .then_some(())
    })
    .await;
    assert!(
        joined.is_some(),
        "the second gateway did not join: {}",
        peer.log_tail()
    );
    let options = ConnectOptions::new(Trust::sha256_hex(&gateway.cert_sha256_hex).expect("hash"));
    let conn = Connection::websocket(&format!("wss://{}/ws", gateway.listen), &options)
        .await
        .expect("connects");
    let mut here = Session::start(conn).await.expect("welcome");
    let mut there = peer.ws_session().await;
    here.join("span").await.expect("joins");
    there.join("span").await.expect("joins");
    here.wait_for(WAIT, "PeerJoined", |f| {
        matches!(f.msg, Some(server_frame::Msg::PeerJoined(_))).then_some(())
    })
    .await
    .expect("the member on the other gateway is announced");
    let there_id = there.peer_id().to_string();
    for _ in 0..3 {
        here.signal("span", &there_id, data(b"across"))
            .expect("sent");
        next_signal(&mut there)
            .await
            .expect("relayed across gateways");
    }
    peer.kill9();
    let state = next_peer_state(&mut here, LIVENESS_TIMEOUT + Duration::from_secs(5))
        .await
        .expect("the killed gateway's member is unreachable");
    assert_eq!(state.reason(), Reason::GatewayLost, "{state:?}");
}

struct Report {
    /// Time from each cut to the observer being told UNREACHABLE, by transport.
    noticed: Vec<(&'static str, Duration)>,
}

async fn scenario(gateway: &GatewayProcess) -> (Report, Vec<Session>) {
    let options = ConnectOptions::new(Trust::sha256_hex(&gateway.cert_sha256_hex).expect("hash"));
    let wss = format!("wss://{}/ws", gateway.listen);
    let wt = format!("https://{}/wt", gateway.listen);
    let ws_session = |url: String| {
        let options = options.clone();
        async move {
            let conn = Connection::websocket(&url, &options)
                .await
                .expect("WebSocket connects");
            Session::start(conn).await.expect("welcome over WebSocket")
        }
    };
    let wt_session = |url: String| {
        let options = options.clone();
        async move {
            let conn = Connection::webtransport(&url, &options)
                .await
                .expect("WebTransport connects");
            Session::start(conn)
                .await
                .expect("welcome over WebTransport")
        }
    };

    // Two peers, one per transport, negotiate: descriptions, candidates, data.
    let mut alice = ws_session(wss.clone()).await;
    let mut bob = wt_session(wt.clone()).await;
    alice.join("call").await.expect("alice joins");
    bob.join("call").await.expect("bob joins");
    let (a, b) = (alice.peer_id().to_string(), bob.peer_id().to_string());
    alice.signal("call", &b, offer("v=0 offer")).expect("send");
    bob.signal("call", &a, answer("v=0 answer")).expect("send");
    for i in 0..2 {
        let text = format!("candidate:{i} 1 udp 2122260223 127.0.0.1 5000{i} typ host");
        alice.signal("call", &b, candidate(&text)).expect("send");
        bob.signal("call", &a, candidate(&text)).expect("send");
    }
    alice.signal("call", &b, data(b"hello bob")).expect("send");
    bob.signal("call", &a, data(b"hello alice")).expect("send");
    for session in [&mut alice, &mut bob] {
        for _ in 0..4 {
            next_signal(session).await.expect("a relayed signal");
        }
    }

    // Refused signals: to a peer not in the room, into a room that does not exist (answered
    // like a room the sender is not in: no existence leak).
    let to_nobody = alice.signal("call", "nobody", data(b"?")).expect("send");
    let no_room = alice.signal("nowhere", &b, data(b"?")).expect("send");
    for (id, code) in [
        (to_nobody, ErrorCode::PeerNotInRoom),
        (no_room, ErrorCode::NotJoined),
    ] {
        let error = alice
            .wait_for(WAIT, "an Error", |f| {
                error_of(f).filter(|e| e.in_reply_to == id)
            })
            .await
            .expect("the signal is refused");
        assert_eq!(error.code(), code, "{}", error.message);
    }

    // Four peers vanish: two WebSocket sessions behind one TCP proxy, two WebTransport
    // sessions behind a UDP relay each. Nothing is closed; the packets just stop.
    let proxy = TcpProxy::start(gateway.listen).await;
    let relays = [
        UdpRelay::start(gateway.listen).await,
        UdpRelay::start(gateway.listen).await,
    ];
    let mut victims = vec![
        ("websocket", ws_session(proxy.wss_url()).await),
        ("websocket", ws_session(proxy.wss_url()).await),
        ("webtransport", wt_session(relays[0].wt_url()).await),
        ("webtransport", wt_session(relays[1].wt_url()).await),
    ];
    for (_, victim) in &mut victims {
        victim.join("call").await.expect("victim joins");
    }
    // Alice hears of them joining before the cut, so that what follows is only presence.
    for _ in 0..victims.len() {
        alice
            .wait_for(WAIT, "PeerJoined", |f| match &f.msg {
                Some(server_frame::Msg::PeerJoined(p)) => Some(p.clone()),
                _ => None,
            })
            .await
            .expect("alice hears a victim join");
    }
    let cut_at = Instant::now();
    proxy.blackhole.cut();
    for relay in &relays {
        relay.blackhole.cut();
    }
    let mut noticed = Vec::new();
    let bound = LIVENESS_TIMEOUT + Duration::from_secs(5);
    while noticed.len() < victims.len() {
        let state = next_peer_state(&mut alice, bound)
            .await
            .expect("alice is told each victim is unreachable");
        assert_eq!(state.state(), PresenceState::Unreachable, "{state:?}");
        assert_eq!(state.reason(), Reason::LivenessTimeout, "{state:?}");
        let transport = victims
            .iter()
            .find(|(_, v)| v.peer_id() == state.peer_id)
            .map(|(t, _)| *t)
            .expect("a victim");
        noticed.push((transport, cut_at.elapsed()));
    }

    // The first victim of each transport comes back on a new connection and resumes; the
    // second stays away until the resume window ends.
    let mut alive = Vec::new();
    let mut gone = 0;
    for (i, (transport, victim)) in victims.into_iter().enumerate() {
        let state = victim.resume_state();
        drop(victim);
        if i % 2 == 1 {
            gone += 1;
            continue;
        }
        let conn = match transport {
            "websocket" => Connection::websocket(&wss, &options).await,
            _ => Connection::webtransport(&wt, &options).await,
        }
        .expect("reconnects");
        let session = Session::resume(conn, &state).await.expect("resumes");
        assert!(session.welcome().resumed, "{:?}", session.welcome());
        alive.push(session);
    }
    let mut left = 0;
    while left < gone {
        let peer_left = next_peer_left(&mut alice, RESUME_WINDOW + Duration::from_secs(10))
            .await
            .expect("alice is told the others left");
        if peer_left.reason() == Reason::ResumeWindowExpired {
            left += 1;
        }
    }

    // A resume while the old connection is still open takes it over; an unknown token is
    // refused as expired.
    let carol = ws_session(wss.clone()).await;
    let state = carol.resume_state();
    let conn = Connection::websocket(&wss, &options)
        .await
        .expect("connects");
    let carol2 = Session::resume(conn, &state).await.expect("takes over");
    assert!(carol2.welcome().resumed);
    drop(carol);
    alive.push(carol2);
    let bogus = ResumeState {
        resume_token: "no-such-token".into(),
        ..ResumeState::default()
    };
    let conn = Connection::webtransport(&wt, &options)
        .await
        .expect("connects");
    match Session::resume(conn, &bogus).await {
        Err(ClientError::Refused(e)) => assert_eq!(e.code(), ErrorCode::ResumeExpired),
        other => panic!("an unknown resume token must be refused: {other:?}"),
    }

    // Goodbyes (Bye) on both transports, and a peer that leaves a room.
    let dave = wt_session(wt.clone()).await;
    let erin = ws_session(wss.clone()).await;
    dave.close().await;
    erin.close().await;
    bob.leave("call").await.expect("bob leaves the room");
    let peer_left = next_peer_left(&mut alice, WAIT)
        .await
        .expect("alice hears bob left");
    assert_eq!(peer_left.reason(), Reason::LeftRoom);

    // Quiet sessions are probed: let a few probes (and RTT samples) happen.
    tokio::time::sleep(PING_INTERVAL * 3).await;
    alive.push(alice);
    alive.push(bob);
    // The proxy's and relays' tasks keep the cut connections open (silent) until the end.
    (Report { noticed }, alive)
}

// ---------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------

/// Every name in `signalgate::metrics::ALL` reached Prometheus from the gateway.
fn every_metric_is_exported_with_data(prometheus: &Prometheus) {
    let target = format!(
        "/api/v1/label/__name__/values?match[]={}",
        encode(&format!("{{job=\"{JOB}\"}}"))
    );
    let names: Vec<String> = prometheus.api(&target)["data"]
        .as_array()
        .expect("names")
        .iter()
        .map(|n| n.as_str().expect("name").to_string())
        .collect();
    for name in metrics::ALL {
        let histogram = metrics::HISTOGRAMS.contains(name);
        let wanted: Vec<String> = if histogram {
            ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{name}{s}"))
                .collect()
        } else {
            vec![name.to_string()]
        };
        for series in wanted {
            assert!(
                names.contains(&series),
                "{series} was not scraped from the gateway; scraped: {names:?}"
            );
        }
    }
}

fn every_dashboard_query_returns_data(
    prometheus: &Prometheus,
    window: &str,
    range: (f64, f64),
    gateway: &GatewayProcess,
) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/dashboards/signalgate.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    let substitute_with = |expr: &str, window: &str| {
        let out = expr
            .replace("$__rate_interval", window)
            .replace("$job", JOB)
            .replace("$instance", ".*");
        assert!(!out.contains('$'), "a template variable is left in {out}");
        out
    };
    let substitute = |expr: &str| substitute_with(expr, window);

    // The template variables' label_values(...) queries, as Grafana runs them.
    for variable in dashboard["templating"]["list"].as_array().expect("list") {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .expect("variable query");
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("not label_values(...): {query}"));
        let (selector, label) = inner
            .rsplit_once(',')
            .expect("label_values(selector, label)");
        let target = format!(
            "/api/v1/label/{}/values?match[]={}",
            label.trim(),
            encode(&substitute(selector.trim()))
        );
        let values = prometheus.api(&target)["data"].clone();
        let expected = match label.trim() {
            "job" => JOB.to_string(),
            "instance" => gateway.metrics.to_string(),
            other => panic!("unexpected variable label {other}"),
        };
        assert!(
            values
                .as_array()
                .expect("values")
                .iter()
                .any(|v| v == &Value::String(expected.clone())),
            "variable {} = {query}: {values} lacks {expected}",
            variable["name"]
        );
    }

    let mut panels_checked = 0;
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(panel) = stack.pop() {
        stack.extend(panel["panels"].as_array().into_iter().flatten());
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let raw = target["expr"].as_str().expect("expr");
            // As Grafana draws the panel: over the run, a point a second.
            let drawn = substitute_with(raw, GRAFANA_RATE_INTERVAL);
            let series = prometheus.query_range(&drawn, range);
            assert!(
                series
                    .iter()
                    .any(|s| s.values.iter().any(|v| v.is_finite())),
                "panel {title:?}: no finite point over the run for {drawn}: {series:?}"
            );
            // And an instant query now, over the whole run.
            let expr = substitute(raw);
            let result = prometheus.query(&expr);
            assert!(!result.is_empty(), "panel {title:?}: no data for {expr}");
            assert!(
                result.iter().any(|s| s.value.is_finite()),
                "panel {title:?}: only NaN/Inf for {expr}: {result:?}"
            );
            let legend = target["legendFormat"].as_str().unwrap_or("");
            for series in &result {
                if let Some(job) = series.labels.get("job") {
                    assert_eq!(job, JOB, "panel {title:?} picks up another job: {expr}");
                }
                for part in legend.split("{{").skip(1) {
                    let label = part.split("}}").next().unwrap_or("").trim();
                    assert!(
                        series.labels.contains_key(label),
                        "panel {title:?}: legend {legend:?} needs label {label:?}, \
                         missing from {series:?} of {expr}"
                    );
                }
            }
            panels_checked += 1;
        }
    }
    assert!(panels_checked >= 20, "only {panels_checked} queries found");
}

fn detection_latency_is_within_the_timeout_plus_one_second(
    prometheus: &Prometheus,
    window: &str,
    range: (f64, f64),
) -> String {
    let timeout = LIVENESS_TIMEOUT.as_secs_f64();
    let bound = timeout + 1.0;
    let within = |what: &str, value: f64| {
        assert!(
            (timeout..=bound).contains(&value),
            "{what} = {value} s: not within [liveness timeout {timeout} s, + 1 s]"
        );
    };
    let mut numbers = String::new();
    for transport in ["all", "websocket", "webtransport"] {
        let selector = match transport {
            "all" => format!(r#"job="{JOB}", reason="liveness_timeout""#),
            t => format!(r#"job="{JOB}", reason="liveness_timeout", transport="{t}""#),
        };
        let series = |suffix: &str, window: &str| {
            format!("signalgate_disconnect_detection_seconds_{suffix}{{{selector}}}[{window}]")
        };
        let quantile = |q: f64, window: &str| {
            format!(
                "histogram_quantile({q}, sum by (le) (rate({})))",
                series("bucket", window)
            )
        };
        for q in [0.5, 0.95, 0.99] {
            let expr = quantile(q, window);
            let value = prometheus.single(&expr);
            numbers += &format!("detection p{} {transport}: {value:.3} s\n", q * 100.0);
            within(&expr, value);
        }
        // As the dashboard draws it over time: every point of the p99 line.
        let expr = quantile(0.99, GRAFANA_RATE_INTERVAL);
        let points: Vec<f64> = prometheus
            .query_range(&expr, range)
            .iter()
            .flat_map(|s| s.values.clone())
            .filter(|v| v.is_finite())
            .collect();
        assert!(!points.is_empty(), "{expr}: no point over the run");
        for point in &points {
            within(&expr, *point);
        }
        let mean = prometheus.single(&format!(
            "sum(increase({})) / sum(increase({}))",
            series("sum", window),
            series("count", window)
        ));
        numbers += &format!("detection mean {transport}: {mean:.3} s (exact, _sum / _count)\n");
        within("the mean detection latency", mean);
    }
    for transport in ["websocket", "webtransport"] {
        let p50 = prometheus.single(&format!(
            r#"histogram_quantile(0.5, sum by (le) (rate(signalgate_rtt_seconds_bucket{{job="{JOB}", transport="{transport}"}}[{window}])))"#
        ));
        numbers += &format!("rtt p50 {transport}: {:.2} ms\n", p50 * 1000.0);
    }
    numbers
}

/// What the scenario did shows in the counters, per label value.
fn scenario_counts_are_visible(prometheus: &Prometheus) {
    let at_least = |selector: &str, n: f64| {
        let expr = format!(
            "sum({})",
            selector.replace('{', &format!("{{job=\"{JOB}\","))
        );
        let value = prometheus.single(&expr);
        assert!(value >= n, "{expr} = {value}, expected at least {n}");
    };
    for transport in ["websocket", "webtransport"] {
        let t = format!(r#"transport="{transport}""#);
        at_least(&format!("signalgate_sessions{{{t}}}"), 2.0);
        at_least(&format!("signalgate_sessions_opened_total{{{t}}}"), 3.0);
        at_least(
            &format!("signalgate_connections_accepted_total{{{t}}}"),
            4.0,
        );
        for reason in ["liveness_timeout", "bye"] {
            at_least(
                &format!(r#"signalgate_connections_closed_total{{{t}, reason="{reason}"}}"#),
                1.0,
            );
        }
        at_least(
            &format!(
                r#"signalgate_disconnect_detection_seconds_count{{{t}, reason="liveness_timeout"}}"#
            ),
            2.0,
        );
        at_least(
            &format!(r#"signalgate_resumes_total{{{t}, outcome="resumed"}}"#),
            1.0,
        );
        at_least(&format!("signalgate_rtt_seconds_count{{{t}}}"), 1.0);
    }
    at_least(
        r#"signalgate_connections_closed_total{reason="superseded"}"#,
        1.0,
    );
    at_least(r#"signalgate_resumes_total{outcome="took_over"}"#, 1.0);
    at_least(r#"signalgate_resumes_total{outcome="expired"}"#, 1.0);
    for kind in ["description", "candidate", "data"] {
        at_least(
            &format!(r#"signalgate_signals_relayed_total{{kind="{kind}"}}"#),
            2.0,
        );
    }
    for reason in ["peer_not_in_room", "not_joined"] {
        at_least(
            &format!(r#"signalgate_signals_dropped_total{{reason="{reason}"}}"#),
            1.0,
        );
    }
    at_least(
        r#"signalgate_sessions_left_total{reason="resume_window_expired"}"#,
        2.0,
    );
    at_least(r#"signalgate_sessions_left_total{reason="bye"}"#, 2.0);
    at_least("signalgate_rooms{}", 1.0);
    at_least(
        r#"signalgate_liveness_timeout_seconds{}"#,
        LIVENESS_TIMEOUT.as_secs_f64(),
    );
    at_least("process_resident_memory_bytes{}", 1.0e6);
    at_least("process_open_fds{}", 5.0);
}

/// `promtool check metrics`: the exposition follows Prometheus' naming conventions.
fn gateway_metrics_pass_promtool_lint(promtool: &Path, metrics_addr: SocketAddr) {
    let (status, body) = fetch(metrics_addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool output");
    assert!(
        output.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// The path of a program that must be installed; fails the test clearly when it is not.
fn require(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is not installed. This test runs a real Prometheus: install the \
                 Debian package with `apt-get install -y --no-install-recommends prometheus` \
                 (it brings prometheus and promtool)."
            )
        })
}

/// A child process killed (and reaped) on drop; its output goes to a log file whose tail
/// is printed if the test is failing.
struct Guard {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Guard {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of {} ({}):\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

struct GatewayProcess {
    _process: Guard,
    listen: SocketAddr,
    metrics: SocketAddr,
    cert_sha256_hex: String,
}

impl GatewayProcess {
    /// The real binary on free ports, read back from its banner. Retries the rare clash of
    /// the TCP port (chosen by the kernel) with a UDP port in use.
    fn start(dir: &Path, extra: &[String]) -> GatewayProcess {
        let mut failures = Vec::new();
        for attempt in 0..5 {
            let log = dir.join(format!("gateway-{attempt}.log"));
            let child = Command::new(env!("CARGO_BIN_EXE_signalgate"))
                .arg("serve")
                .args(["--listen", "127.0.0.1:0"])
                .args(["--metrics-listen", "127.0.0.1:0"])
                .args(["--http-listen", "off"])
                .args(["--liveness-timeout", &humantime(LIVENESS_TIMEOUT)])
                .args(["--ping-interval", &humantime(PING_INTERVAL)])
                .args(["--resume-window", &humantime(RESUME_WINDOW)])
                .arg("--dev-cert-dir")
                .arg(dir.join("certs"))
                .args(["--log", "info"])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("start the signalgate binary");
            let mut process = Guard {
                name: "signalgate",
                child,
                log,
            };
            let stdout = process.child.stdout.take().expect("stdout");
            let (tx, lines) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            let mut banner = BTreeMap::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                match lines.recv_timeout(Duration::from_millis(100)) {
                    Ok(line) => {
                        parse_banner_line(&line, &mut banner);
                        if line.trim_start().starts_with("liveness:") {
                            break;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) if process.exited().is_none() => {}
                    Err(_) => break,
                }
            }
            match (
                banner.get("listen"),
                banner.get("metrics"),
                banner.get("sha256"),
            ) {
                (Some(listen), Some(metrics), Some(hash)) => {
                    return GatewayProcess {
                        listen: listen.parse().expect("listen address"),
                        metrics: metrics.parse().expect("metrics address"),
                        cert_sha256_hex: hash.clone(),
                        _process: process,
                    };
                }
                _ => failures.push(process.log_tail()),
            }
        }
        panic!("the gateway did not start:\n{}", failures.join("\n---\n"));
    }
}

fn parse_banner_line(line: &str, banner: &mut BTreeMap<&'static str, String>) {
    if let Some(rest) = line.split("wss://").nth(1) {
        banner.insert("listen", rest.trim_end_matches("/ws").to_string());
    } else if line.trim_start().starts_with("metrics")
        && let Some(rest) = line.split("http://").nth(1)
    {
        banner.insert("metrics", rest.trim_end_matches("/metrics").to_string());
    } else if let Some(rest) = line.split("sha256 ").nth(1) {
        banner.insert("sha256", rest.trim().to_string());
    }
}

fn humantime(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

struct Prometheus {
    _process: Guard,
    addr: SocketAddr,
}

/// One series of an instant query.
#[derive(Debug)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One series of a range query.
#[derive(Debug)]
struct Series {
    #[allow(dead_code)] // Shown in failure messages.
    labels: BTreeMap<String, String>,
    values: Vec<f64>,
}

/// The value of a `[time, "value"]` pair.
fn sample_value(pair: &Value) -> f64 {
    match pair[1].as_str().expect("sample value") {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        number => number.parse().expect("number"),
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

impl Prometheus {
    /// Runs Prometheus with the example config of grafana/prometheus/, pointed at the
    /// gateway and at itself and scraping every second.
    fn start(binary: &Path, dir: &Path, gateway_metrics: SocketAddr) -> Prometheus {
        let example_path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/prometheus/prometheus.yml");
        let example = std::fs::read_to_string(&example_path).expect("example config");
        let mut failures = Vec::new();
        for attempt in 0..5 {
            let addr = free_port();
            let mut config = example.clone();
            for (from, to) in [
                ("127.0.0.1:9464", gateway_metrics.to_string()),
                ("localhost:9090", addr.to_string()),
                ("scrape_interval: 5s", "scrape_interval: 1s".to_string()),
                ("scrape_timeout: 5s", "scrape_timeout: 1s".to_string()),
            ] {
                assert!(
                    config.contains(from),
                    "{} no longer contains {from:?}; update this test",
                    example_path.display()
                );
                config = config.replace(from, &to);
            }
            let config_path = dir.join(format!("prometheus-{attempt}.yml"));
            std::fs::write(&config_path, config).expect("write config");
            let log = dir.join(format!("prometheus-{attempt}.log"));
            let out = std::fs::File::create(&log).expect("log file");
            let err = out.try_clone().expect("log file");
            let child = Command::new(binary)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join(format!("tsdb-{attempt}")).display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("start prometheus");
            let mut process = Guard {
                name: "prometheus",
                child,
                log,
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline && process.exited().is_none() {
                if matches!(fetch(addr, "/-/ready"), Ok((200, _))) {
                    return Prometheus {
                        _process: process,
                        addr,
                    };
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            failures.push(process.log_tail());
        }
        panic!(
            "prometheus did not become ready:\n{}",
            failures.join("\n---\n")
        );
    }

    /// A successful API response, or a failure that names the request.
    fn api(&self, target: &str) -> Value {
        let (status, body) = fetch(self.addr, target)
            .unwrap_or_else(|e| panic!("GET {target} from prometheus: {e}"));
        let json: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {target}: {status}, not JSON ({e}): {body}"));
        assert_eq!(
            (status, &json["status"]),
            (200, &Value::String("success".into())),
            "GET {target}: {body}"
        );
        json
    }

    /// An instant query at the current time.
    fn query(&self, expr: &str) -> Vec<Sample> {
        let json = self.api(&format!("/api/v1/query?query={}", encode(expr)));
        let data = &json["data"];
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .expect("result")
                .iter()
                .map(|series| Sample {
                    labels: serde_json::from_value(series["metric"].clone()).expect("labels"),
                    value: sample_value(&series["value"]),
                })
                .collect(),
            Some("scalar") => vec![Sample {
                labels: BTreeMap::new(),
                value: sample_value(&data["result"]),
            }],
            other => panic!("{expr}: unexpected result type {other:?}"),
        }
    }

    /// A range query over `(start, end)` (Unix seconds), one point a second, as Grafana runs
    /// a panel's query.
    fn query_range(&self, expr: &str, (start, end): (f64, f64)) -> Vec<Series> {
        let json = self.api(&format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step=1",
            encode(expr)
        ));
        assert_eq!(json["data"]["resultType"], "matrix", "{expr}");
        json["data"]["result"]
            .as_array()
            .expect("result")
            .iter()
            .map(|series| Series {
                labels: serde_json::from_value(series["metric"].clone()).expect("labels"),
                values: series["values"]
                    .as_array()
                    .expect("values")
                    .iter()
                    .map(sample_value)
                    .collect(),
            })
            .collect()
    }

    /// The value of a query that must return exactly one series.
    fn single(&self, expr: &str) -> f64 {
        let result = self.query(expr);
        assert_eq!(result.len(), 1, "{expr}: {result:?}");
        result[0].value
    }

    /// Waits until `expr` (one series) reaches `at_least`.
    fn wait_for_value(&self, expr: &str, at_least: f64, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = Vec::new();
        while Instant::now() < deadline {
            last = self.query(expr);
            if last.iter().any(|s| s.value >= at_least) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("{expr} did not reach {at_least} within {within:?}: {last:?}");
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Percent-encoding of everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A GET over HTTP/1.0 (so no chunked encoding and the server closes), bounded in time.
fn fetch(addr: SocketAddr, target: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(5))))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(format!("unexpected chunked response: {head}"));
    }
    Ok((status, body.to_string()))
}
