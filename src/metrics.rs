//! Every metric the gateway exports, in one place: names, help texts, label values, buckets.
//!
//! Labels are bounded: `transport` ∈ {websocket, webtransport}, `reason` ∈ the lower-case names
//! of `signalgate.v1.Reason` (see [`crate::core::reason_label`]), `kind` ∈ {description,
//! candidate, data}, `outcome` ∈ [`ResumeOutcome`] labels, refusal `reason` ∈ the lower-case
//! names of `signalgate.v1.ErrorCode`, handshake-failure `reason` ∈ [`HANDSHAKE_REASONS`],
//! `version` (build info) = the crate version, `direction` (cluster messages) ∈ {sent, received,
//! received_malformed}. Every combination, histograms included, is
//! registered at start with zero so that rates and ratios exist before the first event.
//!
//! The grafana/ dashboard queries these names; `tests/dashboard.rs` checks it against [`ALL`]
//! and [`LABELS`].
//!
//! `/metrics` is served here (plain HTTP/1.1, hyper): what the metrics-exporter-prometheus
//! recorder renders, followed by the standard `process_*` figures read from /proc at scrape
//! time (fresh, and CPU seconds as a float counter, which the `metrics` crate's integer
//! counters cannot carry).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tokio_util::sync::CancellationToken;

use crate::core::Transport;
use crate::core::hub::{Gauges, HubConfig, HubEvent, ResumeOutcome, SignalKind};
use crate::core::reason_label;
use crate::proto::{ErrorCode, Reason};

pub const SESSIONS: &str = "signalgate_sessions";
pub const SESSIONS_UNREACHABLE: &str = "signalgate_sessions_unreachable";
pub const SESSIONS_OPENED: &str = "signalgate_sessions_opened_total";
pub const CONNECTIONS_CLOSED: &str = "signalgate_connections_closed_total";
pub const SESSIONS_LEFT: &str = "signalgate_sessions_left_total";
pub const DISCONNECT_DETECTION: &str = "signalgate_disconnect_detection_seconds";
pub const RTT: &str = "signalgate_rtt_seconds";
pub const ROOMS: &str = "signalgate_rooms";
pub const SIGNALS_RELAYED: &str = "signalgate_signals_relayed_total";
pub const SIGNALS_DROPPED: &str = "signalgate_signals_dropped_total";
pub const RESUMES: &str = "signalgate_resumes_total";
pub const CONNECTIONS_ACCEPTED: &str = "signalgate_connections_accepted_total";
pub const HANDSHAKE_FAILURES: &str = "signalgate_handshake_failures_total";
pub const QUIC_MIGRATIONS: &str = "signalgate_quic_migrations_total";
pub const LIVENESS_STALLS: &str = "signalgate_liveness_stalls_total";
pub const BUILD_INFO: &str = "signalgate_build_info";
pub const LIVENESS_TIMEOUT: &str = "signalgate_liveness_timeout_seconds";
pub const PING_INTERVAL: &str = "signalgate_ping_interval_seconds";
pub const RESUME_WINDOW: &str = "signalgate_resume_window_seconds";
pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
pub const PROCESS_CPU_SECONDS: &str = "process_cpu_seconds_total";
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";

/// Every exported name (histograms by their base name), for checks against the dashboards.
pub const ALL: &[&str] = &[
    AUTH_REFUSALS,
    CONNECTIONS_REFUSED,
    HANDSHAKES_IN_PROGRESS,
    HANDSHAKES_WAITING,
    TRACKED_SOURCES,
    QUIC_RETRIES,
    CERTIFICATE_RELOADS,
    SESSIONS,
    SESSIONS_UNREACHABLE,
    SESSIONS_OPENED,
    CONNECTIONS_CLOSED,
    SESSIONS_LEFT,
    DISCONNECT_DETECTION,
    RTT,
    ROOMS,
    SIGNALS_RELAYED,
    SIGNALS_DROPPED,
    RESUMES,
    CONNECTIONS_ACCEPTED,
    HANDSHAKE_FAILURES,
    QUIC_MIGRATIONS,
    LIVENESS_STALLS,
    BUILD_INFO,
    LIVENESS_TIMEOUT,
    PING_INTERVAL,
    RESUME_WINDOW,
    PROCESS_RESIDENT_MEMORY,
    PROCESS_CPU_SECONDS,
    PROCESS_OPEN_FDS,
    PROCESS_MAX_FDS,
    PROCESS_START_TIME,
    CLUSTER_NODES,
    CLUSTER_NATS_CONNECTED,
    CLUSTER_MESSAGES,
    CLUSTER_NODES_LOST,
    CLUSTER_NODE_DETECTION,
    CLUSTER_FENCES,
    CLUSTER_RELAY,
    DURABLE_WRITES,
    DURABLE_WRITE_SECONDS,
    SESSIONS_RECOVERED,
];

/// The histograms of [`ALL`] (exported as `_bucket`, `_sum` and `_count`).
pub const HISTOGRAMS: &[&str] = &[
    DISCONNECT_DETECTION,
    RTT,
    CLUSTER_NODE_DETECTION,
    CLUSTER_RELAY,
    DURABLE_WRITE_SECONDS,
];

/// Every label name used, for checks against the dashboards. Values: see the module docs.
pub const LABELS: &[&str] = &[
    "transport",
    "reason",
    "kind",
    "outcome",
    "version",
    "direction",
];

/// Resolves 0.1 s to 60 s, finely around the usual liveness timeouts (2 s, 10 s) so that a
/// p99 against `liveness_timeout + 0.5 s` can be read off.
const DETECTION_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.25, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 9.0, 9.5, 10.0, 10.25, 10.5,
    11.0, 12.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];
const RTT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Reasons a connection that carried a session can end with.
const CLOSE_REASONS: &[Reason] = &[
    Reason::LivenessTimeout,
    Reason::ConnectionLost,
    Reason::ClientClosed,
    Reason::Suspended,
    Reason::Bye,
    Reason::Superseded,
    Reason::ResumeGap,
    Reason::TokenExpired,
    Reason::Disconnected,
    Reason::SlowConsumer,
    Reason::ProtocolError,
    Reason::ServerShutdown,
];
/// Reasons whose connection ends have a detection latency: those where the peer's silence or
/// its own close is what ended it. Gateway-initiated closes (superseded, slow consumer, ...)
/// have none.
const DETECTION_REASONS: &[Reason] = &[
    Reason::LivenessTimeout,
    Reason::ConnectionLost,
    Reason::ClientClosed,
];
/// Reasons a session can be gone for good with.
const LEFT_REASONS: &[Reason] = &[
    Reason::Bye,
    Reason::ResumeWindowExpired,
    Reason::ResumeGap,
    Reason::Disconnected,
    Reason::ServerShutdown,
];
const REFUSAL_REASONS: &[ErrorCode] = &[
    ErrorCode::RateLimited,
    ErrorCode::RecipientBufferFull,
    ErrorCode::SignalNotGranted,
    ErrorCode::NotJoined,
    ErrorCode::PeerNotInRoom,
    ErrorCode::InvalidArgument,
    ErrorCode::StorageUnavailable,
];

/// Why a connection never became a session, for [`handshake_failed`].
pub const HANDSHAKE_REASONS: &[&str] = &["tls", "timeout", "bad_request", "origin", "io"];

pub fn error_code_label(code: ErrorCode) -> String {
    code.as_str_name()
        .trim_start_matches("ERROR_CODE_")
        .to_ascii_lowercase()
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen on {addr} (metrics): {source}")]
    Listener {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid histogram buckets: {0}")]
    Buckets(#[from] metrics_exporter_prometheus::BuildError),
    #[error("a metrics recorder is already installed in this process")]
    AlreadyInstalled,
}

/// How often the recorder's histogram data is drained (it is on every scrape too).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// A scraper that has not sent its request headers by then is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs the global recorder and serves `/metrics` on `addr` until `stop` is cancelled;
/// returns the address bound (port 0 resolved). Call inside a tokio runtime, once per process.
pub fn serve(addr: SocketAddr, stop: CancellationToken) -> Result<SocketAddr, MetricsError> {
    let recorder = recorder()?;
    let handle = recorder.handle();
    let listen_error = |source| MetricsError::Listener { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(listen_error)?;
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
    describe_all();
    register_zeroes();
    let upkeep = handle.clone();
    let upkeep_stop = stop.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => upkeep.run_upkeep(),
                () = upkeep_stop.cancelled() => return,
            }
        }
    });
    tokio::spawn(accept_loop(listener, handle, stop));
    Ok(bound)
}

fn recorder() -> Result<PrometheusRecorder, MetricsError> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(DISCONNECT_DETECTION.into()),
            DETECTION_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Full(RTT.into()), RTT_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(CLUSTER_NODE_DETECTION.into()),
            DETECTION_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Full(CLUSTER_RELAY.into()), CLUSTER_RELAY_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(DURABLE_WRITE_SECONDS.into()),
            DURABLE_WRITE_BUCKETS,
        )?
        .build_recorder())
}

/// The configured liveness numbers, exported so that dashboards can draw the detection
/// latency against the timeout it should stay close to.
pub fn configured(hub: &HubConfig) {
    gauge!(LIVENESS_TIMEOUT).set(hub.liveness.timeout().as_secs_f64());
    gauge!(PING_INTERVAL).set(hub.liveness.ping_interval().as_secs_f64());
    gauge!(RESUME_WINDOW).set(hub.resume_window.as_secs_f64());
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors, typically: back off instead of spinning.
                tracing::warn!(%error, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&handle, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, "metrics: connection failed");
            }
        });
    }
}

fn respond<B>(handle: &PrometheusHandle, request: &Request<B>) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, body: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "metrics are at /metrics\n");
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
    }
    let mut body = handle.render();
    process::render(&mut body);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn describe_all() {
    describe_gauge!(SESSIONS, "Sessions with a live connection, by transport.");
    describe_gauge!(
        SESSIONS_UNREACHABLE,
        "Sessions whose connection is lost and that may still resume, by the transport they had."
    );
    describe_counter!(
        SESSIONS_OPENED,
        "New sessions (Hello without resume), by transport."
    );
    describe_counter!(
        CONNECTIONS_CLOSED,
        "Connections carrying a session that ended, by transport and reason (the session may resume; only reason bye means it left)."
    );
    describe_counter!(
        SESSIONS_LEFT,
        "Sessions gone for good (peers were told PeerLeft), by reason."
    );
    describe_histogram!(
        DISCONNECT_DETECTION,
        metrics::Unit::Seconds,
        "Time from the last inbound activity of a session to the gateway declaring its connection gone."
    );
    describe_histogram!(
        RTT,
        metrics::Unit::Seconds,
        "Round-trip time: WebSocket ping/pong, QUIC RTT estimate."
    );
    describe_gauge!(ROOMS, "Rooms with at least one member.");
    describe_counter!(
        SIGNALS_RELAYED,
        "Signals relayed to a peer (delivered or held for it), by kind."
    );
    describe_counter!(
        SIGNALS_DROPPED,
        "Signals refused to their sender with an Error, by reason."
    );
    describe_counter!(
        RESUMES,
        "Hellos with a resume token, by transport and outcome."
    );
    describe_counter!(
        CONNECTIONS_ACCEPTED,
        "Transport connections accepted, by transport."
    );
    describe_counter!(
        HANDSHAKE_FAILURES,
        "Connections that failed before a session could start, by transport and reason."
    );
    describe_counter!(
        QUIC_MIGRATIONS,
        "WebTransport sessions whose client address changed (QUIC migration)."
    );
    describe_counter!(
        LIVENESS_STALLS,
        "Liveness checks that ran so late (the gateway short of CPU) that the peer got a probe instead of a verdict, by transport."
    );
    describe_gauge!(BUILD_INFO, "Always 1; labels carry the version.");
    describe_gauge!(
        LIVENESS_TIMEOUT,
        metrics::Unit::Seconds,
        "Configured liveness timeout: silence after which a connection is declared dead."
    );
    describe_gauge!(
        PING_INTERVAL,
        metrics::Unit::Seconds,
        "Configured interval of liveness probes on a quiet connection."
    );
    describe_gauge!(
        RESUME_WINDOW,
        metrics::Unit::Seconds,
        "Configured time an unreachable session may be resumed before it is gone."
    );
    describe_limits();
}

fn register_zeroes() {
    describe_auth();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    gauge!(ROOMS).set(0.0);
    for transport in Transport::ALL {
        let t = transport.label();
        gauge!(SESSIONS_UNREACHABLE, "transport" => t).set(0.0);
        gauge!(SESSIONS, "transport" => t).set(0.0);
        counter!(SESSIONS_OPENED, "transport" => t).absolute(0);
        counter!(CONNECTIONS_ACCEPTED, "transport" => t).absolute(0);
        for reason in CLOSE_REASONS {
            counter!(CONNECTIONS_CLOSED, "transport" => t, "reason" => reason_label(*reason))
                .absolute(0);
        }
        // Histograms too: a series that first appears with its first observation already
        // counted hides that observation from rate() and increase(), so the first dead
        // peer after a restart would never show on the dashboard.
        for reason in DETECTION_REASONS {
            let _ = histogram!(DISCONNECT_DETECTION, "transport" => t, "reason" => reason_label(*reason));
        }
        let _ = histogram!(RTT, "transport" => t);
        for outcome in ResumeOutcome::ALL {
            counter!(RESUMES, "transport" => t, "outcome" => outcome.label()).absolute(0);
        }
        for reason in HANDSHAKE_REASONS {
            counter!(HANDSHAKE_FAILURES, "transport" => t, "reason" => *reason).absolute(0);
        }
        counter!(LIVENESS_STALLS, "transport" => t).absolute(0);
    }
    counter!(QUIC_MIGRATIONS).absolute(0);
    for reason in LEFT_REASONS {
        counter!(SESSIONS_LEFT, "reason" => reason_label(*reason)).absolute(0);
    }
    for kind in SignalKind::ALL {
        counter!(SIGNALS_RELAYED, "kind" => kind.label()).absolute(0);
    }
    for code in REFUSAL_REASONS {
        counter!(SIGNALS_DROPPED, "reason" => error_code_label(*code)).absolute(0);
    }
    register_limit_zeroes();
}

/// Translates what the hub reports into metrics.
pub fn record(event: &HubEvent) {
    match event {
        HubEvent::SessionStarted { transport } => {
            counter!(SESSIONS_OPENED, "transport" => transport.label()).increment(1);
        }
        HubEvent::Resume { transport, outcome } => {
            counter!(RESUMES, "transport" => transport.label(), "outcome" => outcome.label())
                .increment(1);
        }
        HubEvent::ConnectionEnded {
            transport,
            reason,
            silent_for,
        } => {
            let (t, r) = (transport.label(), reason_label(*reason));
            counter!(CONNECTIONS_CLOSED, "transport" => t, "reason" => r).increment(1);
            if DETECTION_REASONS.contains(reason) {
                histogram!(DISCONNECT_DETECTION, "transport" => t, "reason" => r)
                    .record(silent_for.as_secs_f64());
            }
        }
        HubEvent::SessionEnded { reason } => {
            counter!(SESSIONS_LEFT, "reason" => reason_label(*reason)).increment(1);
        }
        HubEvent::SignalRelayed { kind } => {
            counter!(SIGNALS_RELAYED, "kind" => kind.label()).increment(1);
        }
        HubEvent::SignalRefused { reason } => {
            counter!(SIGNALS_DROPPED, "reason" => error_code_label(*reason)).increment(1);
        }
        HubEvent::RemoteSignalSettled { round_trip } => {
            histogram!(CLUSTER_RELAY).record(round_trip.as_secs_f64());
        }
        // Counted where the write's outcome is known (`durable_write`).
        HubEvent::DurableWriteFailed => {}
        HubEvent::SessionRecovered => counter!(SESSIONS_RECOVERED).increment(1),
    }
}

pub fn set_gauges(gauges: &Gauges) {
    for transport in Transport::ALL {
        gauge!(SESSIONS, "transport" => transport.label()).set(gauges.online(transport) as f64);
    }
    for transport in Transport::ALL {
        gauge!(SESSIONS_UNREACHABLE, "transport" => transport.label())
            .set(gauges.unreachable(transport) as f64);
    }
    gauge!(ROOMS).set(gauges.rooms as f64);
}

pub fn observe_rtt(transport: Transport, rtt: Duration) {
    histogram!(RTT, "transport" => transport.label()).record(rtt.as_secs_f64());
}

pub fn connection_accepted(transport: Transport) {
    counter!(CONNECTIONS_ACCEPTED, "transport" => transport.label()).increment(1);
}

/// `reason` must be one of [`HANDSHAKE_REASONS`].
pub fn handshake_failed(transport: Transport, reason: &'static str) {
    debug_assert!(HANDSHAKE_REASONS.contains(&reason));
    counter!(HANDSHAKE_FAILURES, "transport" => transport.label(), "reason" => reason).increment(1);
}

pub fn quic_migration() {
    counter!(QUIC_MIGRATIONS).increment(1);
}

pub fn liveness_stall(transport: Transport) {
    counter!(LIVENESS_STALLS, "transport" => transport.label()).increment(1);
}

/// Process health from /proc (Linux), the figures operators expect next to any service,
/// under the names and help texts of the Prometheus client libraries' process collector.
/// Read at scrape time.
mod process {
    use std::fmt::Write;

    use super::{
        PROCESS_CPU_SECONDS, PROCESS_MAX_FDS, PROCESS_OPEN_FDS, PROCESS_RESIDENT_MEMORY,
        PROCESS_START_TIME,
    };

    /// USER_HZ: the unit of /proc/*/stat times on every Linux ABI.
    const TICKS_PER_SEC: f64 = 100.0;

    /// Appends the process metrics in the Prometheus text format.
    pub fn render(out: &mut String) {
        let stat = self_stat();
        let mut metric = |name: &str, kind: &str, help: &str, value: Option<f64>| {
            if let Some(value) = value {
                let _ = write!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
                );
            }
        };
        metric(
            PROCESS_CPU_SECONDS,
            "counter",
            "Total user and system CPU time spent in seconds.",
            stat.as_ref().map(|s| (s.utime + s.stime) / TICKS_PER_SEC),
        );
        metric(
            PROCESS_RESIDENT_MEMORY,
            "gauge",
            "Resident memory size in bytes.",
            resident_bytes(),
        );
        metric(
            PROCESS_OPEN_FDS,
            "gauge",
            "Number of open file descriptors.",
            open_fds(),
        );
        metric(
            PROCESS_MAX_FDS,
            "gauge",
            "Maximum number of open file descriptors.",
            max_fds(),
        );
        metric(
            PROCESS_START_TIME,
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            stat.as_ref().and_then(|s| start_time_seconds(s.starttime)),
        );
    }

    struct Stat {
        utime: f64,
        stime: f64,
        starttime: f64,
    }

    fn self_stat() -> Option<Stat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may contain spaces.
        let rest = text.get(text.rfind(')')? + 2..)?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
        })
    }

    /// From /proc/self/status (in kB there), which needs no page size.
    fn resident_bytes() -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kb * 1024.0)
    }

    fn open_fds() -> Option<f64> {
        // The directory handle itself is one of the entries while it is read.
        let count = std::fs::read_dir("/proc/self/fd").ok()?.count();
        Some(count.saturating_sub(1) as f64)
    }

    fn start_time_seconds(starttime_ticks: f64) -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let boot: f64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(boot + starttime_ticks / TICKS_PER_SEC)
    }

    fn max_fds() -> Option<f64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn proc_figures_are_read_and_rendered() {
            let stat = self_stat().expect("/proc/self/stat");
            assert!(resident_bytes().expect("VmRSS") > 0.0);
            assert!(max_fds().expect("limits") >= 64.0);
            assert!(open_fds().expect("fds") >= 3.0);
            assert!(start_time_seconds(stat.starttime).expect("start") > 1.0e9);
            let mut text = String::new();
            render(&mut text);
            for name in [
                PROCESS_CPU_SECONDS,
                PROCESS_RESIDENT_MEMORY,
                PROCESS_OPEN_FDS,
                PROCESS_MAX_FDS,
                PROCESS_START_TIME,
            ] {
                assert!(text.contains(&format!("\n{name} ")), "{name} in {text}");
            }
            assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_labels_are_lower_snake_case() {
        assert_eq!(
            error_code_label(ErrorCode::RecipientBufferFull),
            "recipient_buffer_full"
        );
    }

    /// Every name in [`ALL`] is on /metrics from the start, before any event: the dashboards
    /// have series to show and rates have a zero to start from.
    #[test]
    fn every_metric_is_exported_from_the_start() {
        let recorder = recorder().expect("valid buckets");
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe_all();
            register_zeroes();
            configured(&HubConfig::default());
        });
        // A single gateway has no cluster metrics; cluster mode has them all from its start,
        // and durable mode its own.
        let single = handle.render();
        for name in ALL.iter().filter(|n| {
            n.starts_with("signalgate_cluster_") || n.starts_with("signalgate_durable_")
        }) {
            assert!(
                !single.contains(name),
                "{name} exported outside cluster mode"
            );
        }
        metrics::with_local_recorder(&recorder, cluster_configured);
        let clustered = handle.render();
        for name in ALL.iter().filter(|n| n.starts_with("signalgate_durable_")) {
            assert!(
                !clustered.contains(name),
                "{name} exported outside durable mode"
            );
        }
        metrics::with_local_recorder(&recorder, durable_configured);
        let mut text = handle.render();
        process::render(&mut text);
        for name in ALL {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} is not exported:\n{text}"
            );
        }
        for transport in Transport::ALL {
            let series = format!(
                "{DISCONNECT_DETECTION}_count{{transport=\"{}\",reason=\"liveness_timeout\"}} 0",
                transport.label()
            );
            assert!(text.contains(&series), "{series} in\n{text}");
        }
    }

    #[test]
    fn every_name_is_prefixed_or_a_standard_process_metric() {
        for name in ALL {
            assert!(
                name.starts_with("signalgate_") || name.starts_with("process_"),
                "{name}"
            );
        }
    }
}

// --- abuse limits: connection admission, handshakes, QUIC address validation, certificate
// reloads. Labels: `transport` ∈ {websocket, webtransport} (TCP listeners count as
// websocket), refusal `reason` ∈ [`REFUSAL_REASONS_LIMITS`], reload `outcome` ∈
// [`CERTIFICATE_RELOAD_OUTCOMES`].

pub const CONNECTIONS_REFUSED: &str = "signalgate_connections_refused_total";
pub const HANDSHAKES_IN_PROGRESS: &str = "signalgate_handshakes_in_progress";
pub const HANDSHAKES_WAITING: &str = "signalgate_handshakes_waiting";
pub const TRACKED_SOURCES: &str = "signalgate_tracked_sources";
pub const QUIC_RETRIES: &str = "signalgate_quic_retries_total";
pub const CERTIFICATE_RELOADS: &str = "signalgate_certificate_reloads_total";

/// The names of this block, exported from the start like those in [`ALL`].
pub const ALL_LIMITS: &[&str] = &[
    CONNECTIONS_REFUSED,
    HANDSHAKES_IN_PROGRESS,
    HANDSHAKES_WAITING,
    TRACKED_SOURCES,
    QUIC_RETRIES,
    CERTIFICATE_RELOADS,
];

/// Why a connection was refused before its handshake, for [`connection_refused`].
pub const REFUSAL_REASONS_LIMITS: &[&str] =
    &["per_ip_limit", "per_ip_rate", "per_ip_table", "handshakes"];
/// Outcomes of a certificate reload, for [`certificate_reload`].
pub const CERTIFICATE_RELOAD_OUTCOMES: &[&str] = &["loaded", "failed"];

fn describe_limits() {
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections refused before their handshake (TCP: closed right after accept; QUIC: refused before the handshake), by transport and reason."
    );
    describe_gauge!(
        HANDSHAKES_IN_PROGRESS,
        "Connections in their handshake now (TLS + WebSocket upgrade, QUIC handshake + WebTransport session request)."
    );
    describe_gauge!(
        HANDSHAKES_WAITING,
        "TCP connections waiting, first come first served, for a handshake slot now (all --max-handshakes taken; at most --handshake-queue wait)."
    );
    describe_gauge!(
        TRACKED_SOURCES,
        "Source addresses (IPv6: /64 prefixes) the per-address connection limits track now."
    );
    describe_counter!(
        QUIC_RETRIES,
        "QUIC connection attempts answered with a Retry (address validation while half the handshake slots or more are taken)."
    );
    describe_counter!(
        CERTIFICATE_RELOADS,
        "Changes of the --cert/--key files seen, by outcome (loaded: used for new handshakes; failed: the current certificate stays)."
    );
}

fn register_limit_zeroes() {
    for transport in Transport::ALL {
        for reason in REFUSAL_REASONS_LIMITS {
            counter!(CONNECTIONS_REFUSED, "transport" => transport.label(), "reason" => *reason)
                .absolute(0);
        }
    }
    gauge!(HANDSHAKES_IN_PROGRESS).set(0.0);
    gauge!(HANDSHAKES_WAITING).set(0.0);
    gauge!(TRACKED_SOURCES).set(0.0);
    counter!(QUIC_RETRIES).absolute(0);
    for outcome in CERTIFICATE_RELOAD_OUTCOMES {
        counter!(CERTIFICATE_RELOADS, "outcome" => *outcome).absolute(0);
    }
}

/// `reason` must be one of [`REFUSAL_REASONS_LIMITS`].
pub fn connection_refused(transport: Transport, reason: &'static str) {
    debug_assert!(REFUSAL_REASONS_LIMITS.contains(&reason));
    counter!(CONNECTIONS_REFUSED, "transport" => transport.label(), "reason" => reason)
        .increment(1);
}

pub fn handshakes_in_progress(count: u32) {
    gauge!(HANDSHAKES_IN_PROGRESS).set(f64::from(count));
}

pub fn handshakes_waiting(count: u32) {
    gauge!(HANDSHAKES_WAITING).set(f64::from(count));
}

pub fn tracked_sources(count: usize) {
    gauge!(TRACKED_SOURCES).set(count as f64);
}

pub fn quic_retry() {
    counter!(QUIC_RETRIES).increment(1);
}

/// `outcome` must be one of [`CERTIFICATE_RELOAD_OUTCOMES`].
pub fn certificate_reload(outcome: &'static str) {
    debug_assert!(CERTIFICATE_RELOAD_OUTCOMES.contains(&outcome));
    counter!(CERTIFICATE_RELOADS, "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod limits_tests {
    use super::*;

    #[test]
    fn every_limit_metric_is_exported_from_the_start() {
        let recorder = recorder().expect("valid buckets");
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe_all();
            register_zeroes();
        });
        let text = handle.render();
        for name in ALL_LIMITS {
            assert!(name.starts_with("signalgate_"), "{name}");
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} is not exported:\n{text}"
            );
        }
        let series =
            format!("{CONNECTIONS_REFUSED}{{transport=\"webtransport\",reason=\"per_ip_rate\"}} 0");
        assert!(text.contains(&series), "{series} in\n{text}");
    }
}

// --- authentication

pub const AUTH_REFUSALS: &str = "signalgate_auth_refusals_total";

/// Why a token was refused (the labels of `crate::auth::AuthRefusal`).
const AUTH_REFUSAL_REASONS: &[&str] = &[
    "missing",
    "malformed",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_audience",
    "wrong_issuer",
    "revoked",
];

fn describe_auth() {
    describe_counter!(
        AUTH_REFUSALS,
        "Tokens refused (Hello or Refresh), by reason."
    );
    for reason in AUTH_REFUSAL_REASONS {
        counter!(AUTH_REFUSALS, "reason" => *reason).absolute(0);
    }
}

pub fn auth_refused(reason: &'static str) {
    counter!(AUTH_REFUSALS, "reason" => reason).increment(1);
}

// ------------------------------------------------------------------------------------------
// Cluster mode
// ------------------------------------------------------------------------------------------

pub const CLUSTER_NODES: &str = "signalgate_cluster_nodes";
pub const CLUSTER_NATS_CONNECTED: &str = "signalgate_cluster_nats_connected";
pub const CLUSTER_MESSAGES: &str = "signalgate_cluster_messages_total";
pub const CLUSTER_NODES_LOST: &str = "signalgate_cluster_nodes_lost_total";
pub const CLUSTER_NODE_DETECTION: &str = "signalgate_cluster_node_detection_seconds";
pub const CLUSTER_FENCES: &str = "signalgate_cluster_fences_total";
pub const CLUSTER_RELAY: &str = "signalgate_cluster_relay_seconds";

/// `direction` of [`CLUSTER_MESSAGES`].
const CLUSTER_DIRECTIONS: &[&str] = &["sent", "received", "received_malformed"];
/// A signal's round trip to another gateway and back with its settlement (the link's ack, up
/// to 1 ms late, or a refusal): about a millisecond on loopback, a few across a data centre.
const CLUSTER_RELAY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Cluster mode: the metrics exist (at zero) from the start.
pub fn cluster_configured() {
    describe_gauge!(
        CLUSTER_NODES,
        "Gateways of the cluster that answer, this one included."
    );
    describe_gauge!(
        CLUSTER_NATS_CONNECTED,
        "1 while this gateway's NATS connection is up."
    );
    describe_counter!(
        CLUSTER_MESSAGES,
        "Envelopes between gateways, by direction (sent, received, received_malformed)."
    );
    describe_counter!(
        CLUSTER_NODES_LOST,
        "Gateways declared lost (nothing arrived from them for the liveness timeout, or they left)."
    );
    describe_histogram!(
        CLUSTER_NODE_DETECTION,
        "How long a lost gateway had been silent when it was declared lost."
    );
    describe_counter!(
        CLUSTER_FENCES,
        "Times this gateway let go of its clients because the cluster had declared it lost."
    );
    describe_histogram!(
        CLUSTER_RELAY,
        "Signals to a peer on another gateway: from relay to its settlement by that gateway (acknowledged, or refused)."
    );
    gauge!(CLUSTER_NODES).set(1.0);
    gauge!(CLUSTER_NATS_CONNECTED).set(0.0);
    for direction in CLUSTER_DIRECTIONS {
        counter!(CLUSTER_MESSAGES, "direction" => *direction).absolute(0);
    }
    counter!(CLUSTER_NODES_LOST).absolute(0);
    counter!(CLUSTER_FENCES).absolute(0);
    let _ = histogram!(CLUSTER_NODE_DETECTION);
    let _ = histogram!(CLUSTER_RELAY);
}

pub fn cluster_nodes(live: usize) {
    gauge!(CLUSTER_NODES).set(live as f64);
}

pub fn cluster_connected(up: bool) {
    gauge!(CLUSTER_NATS_CONNECTED).set(if up { 1.0 } else { 0.0 });
}

pub fn cluster_message(direction: &'static str) {
    counter!(CLUSTER_MESSAGES, "direction" => direction).increment(1);
}

pub fn cluster_node_lost(silent_for: Duration) {
    counter!(CLUSTER_NODES_LOST).increment(1);
    histogram!(CLUSTER_NODE_DETECTION).record(silent_for.as_secs_f64());
}

pub fn cluster_fenced() {
    counter!(CLUSTER_FENCES).increment(1);
}

// ------------------------------------------------------------------------------------------
// Durable mode
// ------------------------------------------------------------------------------------------

pub const DURABLE_WRITES: &str = "signalgate_durable_writes_total";
pub const DURABLE_WRITE_SECONDS: &str = "signalgate_durable_write_seconds";
pub const SESSIONS_RECOVERED: &str = "signalgate_durable_sessions_recovered_total";

/// `outcome` of [`DURABLE_WRITES`].
pub const DURABLE_OUTCOMES: &[&str] = &["stored", "unavailable", "conflict"];
/// A record stored by a JetStream quorum: a fraction of a millisecond on loopback, a few
/// across a data centre, seconds during a leader election.
const DURABLE_WRITE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5,
];

/// Durable mode: the metrics exist (at zero) from the start.
pub fn durable_configured() {
    describe_counter!(
        DURABLE_WRITES,
        "Records appended to session logs in JetStream, by outcome (stored, unavailable: its signals were refused with STORAGE_UNAVAILABLE, conflict: another gateway holds the log)."
    );
    describe_histogram!(
        DURABLE_WRITE_SECONDS,
        "How long a stored record took, from its append to JetStream's acknowledgement (a frame reaches its client only after)."
    );
    describe_counter!(
        SESSIONS_RECOVERED,
        "Sessions taken up here from their durable log after their gateway was lost."
    );
    for outcome in DURABLE_OUTCOMES {
        counter!(DURABLE_WRITES, "outcome" => *outcome).absolute(0);
    }
    counter!(SESSIONS_RECOVERED).absolute(0);
    let _ = histogram!(DURABLE_WRITE_SECONDS);
}

/// A record's append ended (`outcome` one of [`DURABLE_OUTCOMES`]) after `took`.
pub fn durable_write(outcome: &'static str, took: Duration) {
    counter!(DURABLE_WRITES, "outcome" => outcome).increment(1);
    if outcome == "stored" {
        histogram!(DURABLE_WRITE_SECONDS).record(took.as_secs_f64());
    }
}
