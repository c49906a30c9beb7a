//! Test support for what runs out of process: a real NATS cluster (`nats-server`, installed by
//! scripts/install-test-deps) and the real `signalgate` binary. Unlike the in-process
//! [`super::Gateway`], these can be SIGKILLed and restarted, which is what cluster fail-over
//! tests are about.
//!
//! Everything here is synchronous std::process with polling, so it works the same from a plain
//! `#[test]` and from inside a tokio test (the waits are short sleeps; the gateway's output is
//! drained by its own threads, never by the runtime).
#![allow(dead_code)] // Each test binary uses a different part.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signalgate::client::{ConnectOptions, Connection, Session, Trust};

/// How long a cluster (or one restarted node) may take to be ready.
const NATS_READY: Duration = Duration::from_secs(20);
/// How long the gateway may take to print its banner (generating the dev certificate included).
const GATEWAY_READY: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
const CLUSTER_NAME: &str = "sgtest";
/// Lines of a log shown in a failure message.
const TAIL_LINES: usize = 40;

// ---------------------------------------------------------------------------------------------
// NATS
// ---------------------------------------------------------------------------------------------

/// One `nats-server` of a [`NatsCluster`]. Its ports and store dir outlive the process, so a
/// restart comes back as the same member (same route URL, same JetStream state).
struct NatsNode {
    name: String,
    client_port: u16,
    cluster_port: u16,
    monitor_port: u16,
    store_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// `n` clustered `nats-server` processes on 127.0.0.1, with JetStream, each with its own store
/// dir and log in a temp dir. Killed when dropped.
pub struct NatsCluster {
    nodes: Vec<NatsNode>,
    // Declared last so it is removed after Drop has printed the logs.
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` nodes and waits until every one serves clients, is routed to all `n - 1`
    /// others, and reports healthy (JetStream current). Panics with the servers' logs if that
    /// takes longer than 20 s.
    pub fn start(n: usize) -> NatsCluster {
        assert!(n > 0, "a cluster needs at least one node");
        let binary = nats_server_binary();
        let mut cluster = NatsCluster {
            nodes: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir for the NATS cluster"),
        };
        // The ports are free when chosen but not reserved: another test may take one before
        // nats-server binds it. Such a clash shows as a node that exits, so choose again.
        let mut failures = Vec::new();
        for attempt in 0..3 {
            let ports = free_ports(3 * n);
            // Fresh names per attempt keep a failed attempt's logs for the final message.
            let dir = cluster.dir.path().to_owned();
            cluster.nodes = (0..n)
                .map(|i| NatsNode {
                    name: format!("n{i}"),
                    client_port: ports[3 * i],
                    cluster_port: ports[3 * i + 1],
                    monitor_port: ports[3 * i + 2],
                    store_dir: dir.join(format!("a{attempt}-n{i}-store")),
                    log: dir.join(format!("a{attempt}-n{i}.log")),
                    child: None,
                })
                .collect();
            for i in 0..n {
                cluster.spawn_node(&binary, i);
            }
            match cluster.wait_ready(Instant::now() + NATS_READY) {
                Ok(()) => return cluster,
                Err(Failure::Exited(why)) if attempt < 2 => {
                    failures.push(format!("attempt {attempt}: {why}\n{}", cluster.all_logs()));
                    cluster.kill_all();
                }
                Err(failure) => panic!(
                    "the {n}-node NATS cluster is not ready: {}\n{}{}",
                    failure.text(),
                    failures.join("\n"),
                    cluster.all_logs()
                ),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Every node's client URL, comma-separated (what NATS clients take as a server list).
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// Node `i`'s monitoring address (HTTP: /varz, /routez, /jsz, /healthz).
    pub fn monitor_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.nodes[i].monitor_port))
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        match &mut self.nodes[i].child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// How many other nodes node `i` has a route to now (None if its monitoring port does
    /// not answer, e.g. while it is down).
    pub fn routes(&self, i: usize) -> Option<usize> {
        let (_, routez) = monitor_get(self.nodes[i].monitor_port, "/routez")?;
        Some(distinct_remotes(&routez))
    }

    /// The node that leads the JetStream stream whose name starts with `prefix`, as the
    /// running nodes' /jsz says (None while it has no leader).
    pub fn stream_leader(&self, prefix: &str) -> Option<usize> {
        let leader = self.nodes.iter().find_map(|node| {
            let (_, jsz) = monitor_get(node.monitor_port, "/jsz?accounts=true&streams=true")?;
            let accounts = jsz.get("account_details")?.as_array()?;
            accounts.iter().find_map(|account| {
                let streams = account.get("stream_detail")?.as_array()?;
                streams.iter().find_map(|stream| {
                    let name = stream.get("name")?.as_str()?;
                    let leader = stream.get("cluster")?.get("leader")?.as_str()?;
                    name.starts_with(prefix).then(|| leader.to_string())
                })
            })
        })?;
        self.nodes.iter().position(|node| node.name == leader)
    }

    /// SIGKILLs node `i` (no goodbye to its routes or clients: a crashed host) and reaps it.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(mut child) = node.child.take() else {
            panic!("NATS node {} is not running", node.name);
        };
        // Err only if it already exited, which is what we want anyway.
        let _ = child.kill();
        child.wait().expect("reap the killed nats-server");
    }

    /// Starts node `i` again, on the same ports with the same store dir, and waits until it
    /// and every other running node are routed to each other (and healthy, see `wait_ready`).
    pub fn restart(&mut self, i: usize) {
        // A node that died by itself is reaped here; one still running is a mistake in the test.
        if let Some(mut child) = self.nodes[i].child.take() {
            let exited = child.try_wait().expect("wait for nats-server");
            assert!(
                exited.is_some(),
                "NATS node {} is still running; kill it first",
                self.nodes[i].name
            );
        }
        self.spawn_node(&nats_server_binary(), i);
        // The others must have re-established their route to it too, not just it to them.
        if let Err(failure) = self.wait_ready(Instant::now() + NATS_READY) {
            panic!(
                "NATS node {} did not rejoin the cluster: {}\n{}",
                self.nodes[i].name,
                failure.text(),
                self.all_logs()
            );
        }
    }

    /// Everything node `i` logged, over all of its runs (each starts with a marker line).
    pub fn log(&self, i: usize) -> String {
        // A missing log only means the node never started; the caller is showing or searching it.
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// The last lines node `i` logged.
    pub fn log_tail(&self, i: usize) -> String {
        tail(&self.log(i), TAIL_LINES)
    }

    fn spawn_node(&mut self, binary: &Path, i: usize) {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, other)| format!("nats://127.0.0.1:{}", other.cluster_port))
            .collect();
        let node = &mut self.nodes[i];
        // Appending keeps the log of a killed run for the failure message of a later one.
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("NATS log file");
        writeln!(log, "--- {} started by the test harness ---", node.name).expect("write log");
        let mut command = Command::new(binary);
        command
            .args(["-a", "127.0.0.1", "-p", &node.client_port.to_string()])
            .args(["-m", &node.monitor_port.to_string()])
            .args(["--server_name", &node.name])
            .arg("-js")
            .arg("-sd")
            .arg(&node.store_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("NATS log file"))
            .stderr(log);
        // Clustered JetStream refuses to start without routes, so one node runs standalone.
        if !routes.is_empty() {
            command
                .args(["--cluster_name", CLUSTER_NAME])
                .args([
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", node.cluster_port),
                ])
                .args(["--routes", &routes.join(",")]);
        }
        node.child = Some(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display())),
        );
    }

    /// Polls until every running node (killed ones are left out) accepts clients, has a route
    /// to every other running node and, while they are a majority, answers /healthz with 200.
    /// Without the health check a JetStream test could start before the meta group has a
    /// leader and fail with "JetStream not available"; a minority never gets one, so it is
    /// not asked.
    fn wait_ready(&mut self, deadline: Instant) -> Result<(), Failure> {
        let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
        let others = running.saturating_sub(1);
        let quorum = 2 * running > self.nodes.len();
        loop {
            let mut waiting_for = None;
            for node in &mut self.nodes {
                match node.child.as_mut().map(Child::try_wait) {
                    Some(Ok(None)) => {}
                    Some(Ok(Some(status))) => {
                        return Err(Failure::Exited(format!("{} exited: {status}", node.name)));
                    }
                    Some(Err(e)) => panic!("cannot wait for nats-server {}: {e}", node.name),
                    None => continue,
                }
                let client = SocketAddr::from(([127, 0, 0, 1], node.client_port));
                if TcpStream::connect_timeout(&client, POLL * 4).is_err() {
                    waiting_for = Some(format!("{} to accept clients on {client}", node.name));
                    break;
                }
                let routes = monitor_get(node.monitor_port, "/routez")
                    .map(|(_, routez)| distinct_remotes(&routez));
                if routes != Some(others) {
                    waiting_for = Some(format!(
                        "{} to have {others} routes (has {routes:?})",
                        node.name
                    ));
                    break;
                }
                let health = monitor_get(node.monitor_port, "/healthz");
                if quorum && !matches!(health, Some((200, _))) {
                    waiting_for = Some(format!(
                        "{} to be healthy (/healthz: {health:?})",
                        node.name
                    ));
                    break;
                }
            }
            let Some(waiting_for) = waiting_for else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(Failure::Timeout(format!("still waiting for {waiting_for}")));
            }
            std::thread::sleep(POLL);
        }
    }

    fn all_logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                format!(
                    "--- last lines of {} ({}):\n{}\n",
                    node.name,
                    node.log.display(),
                    self.log_tail(i)
                )
            })
            .collect()
    }

    fn kill_all(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.kill_all();
        if std::thread::panicking() {
            eprintln!("{}", self.all_logs());
        }
    }
}

enum Failure {
    /// A node exited (a port taken meanwhile, or a bad flag).
    Exited(String),
    Timeout(String),
}

impl Failure {
    fn text(&self) -> &str {
        match self {
            Failure::Exited(text) | Failure::Timeout(text) => text,
        }
    }
}

/// nats-server lives in /usr/sbin on Debian, which is not on every user's PATH.
fn nats_server_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    let fallback = PathBuf::from("/usr/sbin/nats-server");
    on_path
        .or_else(|| fallback.is_file().then_some(fallback))
        .expect("nats-server is not installed (sudo scripts/install-test-deps)")
}

/// Ports that were free a moment ago. All are held until all are chosen, so they differ.
fn free_ports(count: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    held.iter()
        .map(|listener| listener.local_addr().expect("bound port").port())
        .collect()
}

/// GET on a NATS monitoring port: status and JSON body; None if it does not answer (yet).
fn monitor_get(port: u16, path: &str) -> Option<(u16, serde_json::Value)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    // HTTP/1.0: the server closes after answering, so reading to the end gives the whole body
    // without parsing lengths or chunks.
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some((status, serde_json::from_str(body).ok()?))
}

/// The number of distinct servers in a /routez answer. Two nodes that solicit each other at
/// once briefly hold two routes before one is dropped; counting servers ignores that.
fn distinct_remotes(routez: &serde_json::Value) -> usize {
    let mut remotes: Vec<&str> = routez["routes"]
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .filter_map(|r| r["remote_id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    remotes.sort_unstable();
    remotes.dedup();
    remotes.len()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// The gateway binary
// ---------------------------------------------------------------------------------------------

/// The real `signalgate serve` on free ports, with its own development certificate. Its
/// addresses are read back from the banner it prints. Killed when dropped.
pub struct GatewayProcess {
    child: Child,
    /// stdout and stderr as they arrive (drained by threads, so the pipes never fill).
    output: Arc<Mutex<String>>,
    listen: SocketAddr,
    metrics: Option<SocketAddr>,
    cert_sha256_hex: String,
    _certs: tempfile::TempDir,
}

impl GatewayProcess {
    /// Starts `signalgate serve` with test defaults (TLS listener and metrics on free ports of
    /// 127.0.0.1, no plain HTTP, a fresh dev certificate) and then `args`. A default is left
    /// out when `args` names the same flag, so e.g. `--metrics-listen off` replaces it (the
    /// binary refuses a flag given twice). Waits for the banner; panics with the output if the
    /// gateway exits or is silent for 20 s.
    pub fn spawn(args: &[String]) -> GatewayProcess {
        let certs = tempfile::tempdir().expect("temp dir for the dev certificate");
        let cert_dir = certs.path().to_str().expect("UTF-8 temp dir").to_string();
        let defaults = [
            ("--listen", "127.0.0.1:0"),
            ("--http-listen", "off"),
            ("--metrics-listen", "127.0.0.1:0"),
            ("--dev-cert-dir", cert_dir.as_str()),
        ];
        let given = |flag: &str| {
            args.iter().any(|a| {
                a == flag
                    || a.strip_prefix(flag)
                        .is_some_and(|rest| rest.starts_with('='))
            })
        };
        let mut full: Vec<String> = vec!["serve".into()];
        for (flag, value) in defaults {
            if !given(flag) {
                full.extend([flag.to_string(), value.to_string()]);
            }
        }
        full.extend(args.iter().cloned());

        // The kernel picks the TCP port; WebTransport then needs the same UDP port, which is
        // rarely taken already. The gateway exits naming the address then: try again.
        let mut failures = Vec::new();
        for _ in 0..5 {
            match Self::try_spawn(&full) {
                Ok((child, output, banner)) => {
                    return GatewayProcess {
                        child,
                        output,
                        listen: banner.listen,
                        metrics: banner.metrics,
                        cert_sha256_hex: banner.sha256_hex,
                        _certs: certs,
                    };
                }
                Err(log) if log.contains("cannot listen on") => failures.push(log),
                Err(log) => panic!("signalgate {full:?} did not start:\n{log}"),
            }
        }
        panic!(
            "signalgate {full:?} found no free port in 5 attempts:\n{}",
            failures.join("\n---\n")
        );
    }

    fn try_spawn(args: &[String]) -> Result<(Child, Arc<Mutex<String>>, Banner), String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_signalgate"));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Settings from the developer's shell would change what is tested; the log filter only
        // changes what is shown, so SIGNALGATE_LOG=debug still helps debugging.
        for (key, _) in std::env::vars_os() {
            if let Some(key) = key.to_str()
                && key.starts_with("SIGNALGATE_")
                && key != "SIGNALGATE_LOG"
            {
                command.env_remove(key);
            }
        }
        let mut child = command.spawn().expect("run the signalgate binary");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        drain(stdout, output.clone());
        drain(stderr, output.clone());

        let deadline = Instant::now() + GATEWAY_READY;
        loop {
            let text = output.lock().expect("output lock").clone();
            // The liveness line is the banner's last.
            if text
                .lines()
                .any(|line| line.trim_start().starts_with("liveness:"))
            {
                return match Banner::parse(&text) {
                    Some(banner) => Ok((child, output, banner)),
                    None => {
                        let _ = child.kill();
                        let _ = child.wait();
                        Err(format!("unexpected banner:\n{text}"))
                    }
                };
            }
            let exited = child.try_wait().expect("wait for the gateway");
            if exited.is_some() || Instant::now() >= deadline {
                let _ = child.kill();
                let status = child.wait().expect("reap the gateway");
                // Give the drain threads a moment to pick up the last words.
                std::thread::sleep(POLL);
                let text = output.lock().expect("output lock").clone();
                let why = if exited.is_some() {
                    "exited"
                } else {
                    "printed no banner in 20 s"
                };
                return Err(format!("({why}: {status})\n{}", tail(&text, TAIL_LINES)));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The TLS listener (WebSocket over TLS; WebTransport on the same UDP port).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The /metrics listener; None if `--metrics-listen off` was passed.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    pub fn wss_url(&self) -> String {
        format!("wss://{}/ws", self.listen)
    }

    pub fn wt_url(&self) -> String {
        format!("https://{}/wt", self.listen)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The SHA-256 of the certificate it started with, as printed (64 hex characters).
    pub fn cert_sha256_hex(&self) -> &str {
        &self.cert_sha256_hex
    }

    /// Client options trusting exactly this gateway's development certificate.
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions::new(
            Trust::sha256_hex(&self.cert_sha256_hex).expect("the banner prints a SHA-256"),
        )
    }

    pub async fn ws(&self) -> Connection {
        Connection::websocket(&self.wss_url(), &self.options())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "WebSocket to {} fails: {e}\n{}",
                    self.wss_url(),
                    self.log_tail()
                )
            })
    }

    pub async fn ws_session(&self) -> Session {
        let conn = self.ws().await;
        Session::start(conn)
            .await
            .unwrap_or_else(|e| panic!("no welcome over WebSocket: {e}\n{}", self.log_tail()))
    }

    /// SIGKILL: no GoAway, no close; sessions learn only from liveness (a crashed host).
    pub fn kill9(&mut self) {
        // Err only if it already exited.
        let _ = self.child.kill();
    }

    /// SIGTERM: the graceful shutdown (GoAway to every session, drain). Panics if the
    /// gateway has already exited.
    pub fn terminate(&mut self) {
        // Once reaped, its pid may belong to another process; until then it cannot.
        if let Some(status) = self.child.try_wait().expect("wait for the gateway") {
            panic!(
                "SIGTERM to a gateway that already exited ({status}):\n{}",
                self.log_tail()
            );
        }
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory effects; the pid is our unreaped child (checked above),
        // so it cannot have been reused by another process.
        let result = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(
            result,
            0,
            "SIGTERM to the gateway: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Its exit status, once it has exited within `timeout` (None: still running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the gateway") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it printed so far (stdout and stderr interleaved by line).
    pub fn log(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log(), TAIL_LINES)
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of signalgate {}:\n{}",
                self.listen,
                self.log_tail()
            );
        }
    }
}

/// Appends every line of `pipe` to `output` until the process closes it.
fn drain(pipe: impl Read + Send + 'static, output: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let Ok(mut output) = output.lock() else { break };
            output.push_str(&line);
            output.push('\n');
        }
    });
}

/// What the gateway prints on start (see `print_banner` in src/main.rs).
struct Banner {
    listen: SocketAddr,
    metrics: Option<SocketAddr>,
    sha256_hex: String,
}

impl Banner {
    fn parse(text: &str) -> Option<Banner> {
        let mut listen = None;
        let mut metrics = None;
        let mut sha256_hex = None;
        // Lines that look like none of these (tracing output on stderr) are skipped.
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("WebSocket/TLS")
                && let Some(addr) = rest.trim().strip_prefix("wss://")
                && let Some(addr) = addr.strip_suffix("/ws")
            {
                listen = addr.parse().ok();
            } else if let Some(rest) = line.strip_prefix("metrics")
                && let Some(addr) = rest.trim().strip_prefix("http://")
                && let Some(addr) = addr.strip_suffix("/metrics")
            {
                metrics = addr.parse().ok();
            } else if line.contains("certificate sha256 ")
                && let Some((_, hash)) = line.split_once("sha256 ")
            {
                sha256_hex = Some(hash.trim().to_string());
            }
        }
        Some(Banner {
            listen: listen?,
            metrics,
            sha256_hex: sha256_hex?,
        })
    }
}

/// Waits until every gateway counts `n` live gateways (itself included), up to 20 s.
pub async fn wait_for_cluster(gateways: &[&GatewayProcess], n: usize) {
    let wanted = format!("signalgate_cluster_nodes {n}");
    for gw in gateways {
        let addr = gw.metrics_addr().expect("metrics on");
        let formed = super::eventually(super::ms(20_000), || {
            let wanted = wanted.clone();
            async move {
                let (_, body) = super::http_get(addr, "/metrics").await;
                body.lines().any(|l| l.trim() == wanted).then_some(())
            }
        })
        .await;
        assert!(
            formed.is_some(),
            "gateway did not see {n} gateways: {}",
            gw.log_tail()
        );
    }
}
