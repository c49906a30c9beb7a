#!/usr/bin/env python3
"""The network-cut benchmark: how fast is a vanished peer noticed?

Builds a small network out of namespaces (root needed), puts signalgate (and the usual
alternatives) on one side and quiet clients on the other, then cuts the clients off with a
silent DROP in the router in the middle — no FIN, no RST, no ICMP, as when a phone's network
disappears — and measures how long each server takes to notice.

    sgb-phone  (clients, 198.18.1.x) --\
                                        sgb-router (nft forward chain: the cut, the loss)
    sgb-phone2 (clients, 198.18.2.x) --/      |
                                           sgb-gw (198.18.0.1: the gateway, the observer,
                                                   the baseline servers)

Addresses come from 198.18.0.0/15, the range RFC 2544 reserves for benchmarking; no packet
leaves the namespaces this script creates, and it removes them on every exit path.

    sudo python3 bench/run.py                # the full benchmark (~30 min), results in bench/results/
    sudo python3 bench/run.py --smoke        # N=1, 2 s liveness, both transports (< 1 min); CI
    sudo python3 bench/run.py --only detection --transports ws --settings aggressive --sizes 1,100

python3 stdlib only; the baselines need node/npm (socket.io) and pip `websockets`, the chart
needs matplotlib (bench/plot.py). See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procs import BenchError, interrupt_on_signals, Proc, Procs, read_jsonl  # bench/procs.py

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"

NS_PHONE, NS_PHONE2, NS_ROUTER, NS_GW = "sgb-phone", "sgb-phone2", "sgb-router", "sgb-gw"
ALL_NS = (NS_PHONE, NS_PHONE2, NS_ROUTER, NS_GW)
GW_IP = "198.18.0.1"
# phone namespace -> (its /24, the router's interface towards it)
PHONES = {NS_PHONE: ("198.18.1", "rp1"), NS_PHONE2: ("198.18.2", "rp2")}
SOURCES_PER_PHONE = 16  # source addresses, to spread ephemeral ports
DELAY_DEV = "sgbdelay"
CLIENTS_PER_PROCESS = 5000  # far below the 20,000 descriptors a process may hold
ROOMS_PER_OBSERVER_SESSION = 1000

SETTINGS = {
    # name: (liveness_timeout s, ping_interval s); both keep ping/timeout = 0.4
    "default": (10.0, 4.0),
    "aggressive": (2.0, 0.8),
}
BASELINE_BOUND_S = 120.0
KERNEL_MODEL_S = 924.6  # tcp_retries2 = 15, RTO 200 ms doubling up to 120 s

GW_BIN = ROOT / "target" / "release" / "signalgate"
BENCH_BIN = ROOT / "target" / "release" / "signalgate-bench"

# WebSocket clients through a real nginx (transport "wsn"): nginx runs in the gateway's
# namespace, terminates TLS with the gateway's certificate and proxies /ws to the gateway's
# plain-HTTP listener. The cut and the loss are between the clients and nginx.
NGINX_PORT = 8443  # + i for the i-th gateway of a run
GW_HTTP_PORT = 4480  # + i
# nginx connects to the gateway from one loopback address per phone namespace, so the
# gateway's log (which sees nginx as the peer) still tells the phones apart.
NGINX_SOURCE = {NS_PHONE: "127.0.0.11", NS_PHONE2: "127.0.0.12"}
TRANSPORT_LABEL = {"ws": "WebSocket", "wt": "WebTransport", "wsn": "WebSocket via nginx"}
GATEWAY_TRANSPORT = {"ws": "websocket", "wt": "webtransport", "wsn": "websocket"}

LOG_LINE = re.compile(
    # `connection lost` names its connection itself; with debug logs the `conn{..}` span's
    # prefix comes before it.
    r"^(?P<ts>\S+)\s+INFO .*?connection lost conn=(?P<id>\S+) transport=(?P<transport>\w+) "
    r"peer=(?P<peer>\S+) reason=\"?(?P<reason>\w+)\"? "
    r"silent_for_ms=(?P<silent>\d+)"
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)




def sh(*cmd: str, check: bool = True, stdin: str | None = None) -> str:
    done = subprocess.run(list(cmd), input=stdin, text=True, capture_output=True)
    if check and done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


# --------------------------------------------------------------------------------------------
# Processes and the topology
# --------------------------------------------------------------------------------------------


class Lab(Procs):
    """The namespaces and every process started in them; `down()` removes all of it."""

    def __init__(self, workdir: Path, gateway_cc: str | None = None, phone_cc: str | None = None):
        super().__init__(workdir)
        # TCP congestion control per namespace (None: the machine's default, which a new
        # namespace inherits).
        self.gateway_cc, self.phone_cc = gateway_cc, phone_cc

    # -- processes --
    def spawn(self, name: str, argv: list[str], ns: str | None = None, env: dict | None = None) -> Proc:
        return super().spawn(name, in_ns(ns, *argv) if ns else argv, env)

    # -- topology --
    def up(self) -> None:
        self.down_namespaces()
        for ns in ALL_NS:
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "rg0", "netns", NS_ROUTER, "type", "veth", "peer", "name", "gw0", "netns", NS_GW)
        sh("ip", "-n", NS_ROUTER, "addr", "add", "198.18.0.254/24", "dev", "rg0")
        sh("ip", "-n", NS_ROUTER, "link", "set", "rg0", "up")
        sh("ip", "-n", NS_GW, "addr", "add", f"{GW_IP}/24", "dev", "gw0")
        sh("ip", "-n", NS_GW, "link", "set", "gw0", "up")
        sh("ip", "-n", NS_GW, "route", "add", "default", "via", "198.18.0.254")
        for ns, (net, rif) in PHONES.items():
            sh("ip", "link", "add", rif, "netns", NS_ROUTER, "type", "veth", "peer", "name", "ph0", "netns", ns)
            sh("ip", "-n", NS_ROUTER, "addr", "add", f"{net}.254/24", "dev", rif)
            sh("ip", "-n", NS_ROUTER, "link", "set", rif, "up")
            batch = "".join(f"addr add {a}/24 dev ph0\n" for a in phone_sources(ns))
            sh("ip", "-n", ns, "-batch", "-", stdin=batch)
            sh("ip", "-n", ns, "link", "set", "ph0", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", f"{net}.254")
            # Plenty of ephemeral ports for thousands of connections per source address.
            sh(*in_ns(ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"))
        sh(*in_ns(NS_ROUTER, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
        sh(*in_ns(NS_ROUTER, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"))
        sh(*in_ns(NS_ROUTER, "sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0"))
        # The gateway side keeps the kernel's defaults (tcp_retries2 = 15): the baselines
        # are measured as deployed.
        sh(*in_ns(NS_GW, "sysctl", "-qw", "net.core.somaxconn=65535"))
        if self.gateway_cc:
            sh(*in_ns(NS_GW, "sysctl", "-qw", f"net.ipv4.tcp_congestion_control={self.gateway_cc}"))
        if self.phone_cc:
            for ns in PHONES:
                sh(*in_ns(ns, "sysctl", "-qw", f"net.ipv4.tcp_congestion_control={self.phone_cc}"))
        sh(*in_ns(NS_GW, "sysctl", "-qw", "net.ipv4.tcp_max_syn_backlog=65535"))
        nft(
            "table inet sgb {\n"
            "  chain sgbfwd { type filter hook forward priority 0; policy accept; }\n"
            "}\n"
        )

    def down_namespaces(self) -> None:
        existing = sh("ip", "netns", "list", check=False)
        for ns in ALL_NS:
            if re.search(rf"^{re.escape(ns)}(\s|$)", existing, re.M):
                # Whatever still runs in our namespaces was started by this benchmark.
                for pid in sh("ip", "netns", "pids", ns, check=False).split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                sh("ip", "netns", "del", ns, check=False)

    def down(self) -> None:
        self.stop_all()
        self.down_namespaces()

    # -- network conditions --
    def cut(self, ns: str) -> dict:
        """Silent DROP of everything to and from one phone namespace, in one transaction."""
        net = PHONES[ns][0]
        rules = (
            f"add rule inet sgb sgbfwd ip saddr {net}.0/24 drop\n"
            f"add rule inet sgb sgbfwd ip daddr {net}.0/24 drop\n"
        )
        before = time.time()
        nft(rules)
        after = time.time()
        return {"t_cut": before, "nft_seconds": after - before}

    def count_traffic(self) -> None:
        """nft counters in the router's forward chain for every packet between a phone
        namespace and the gateway, per direction (IP packets: IP + TCP/UDP headers + payload)."""
        rules = ""
        for ns, (net, _) in PHONES.items():
            rules += (f'add rule inet sgb sgbfwd ip saddr {net}.0/24 ip daddr {GW_IP} counter comment "up {ns}"\n'
                      f'add rule inet sgb sgbfwd ip saddr {GW_IP} ip daddr {net}.0/24 counter comment "down {ns}"\n')
        nft(rules)

    def traffic(self) -> dict:
        """{(direction, ns): (packets, bytes)} from the counters, plus the router's veth
        statistics (Ethernet frames: 14 bytes more per packet), as {("veth", ns): {...}}."""
        out: dict = {}
        data = json.loads(sh(*in_ns(NS_ROUTER, "nft", "-j", "list", "chain", "inet", "sgb", "sgbfwd")))
        for item in data.get("nftables", []):
            rule = item.get("rule")
            if not rule or "comment" not in rule:
                continue
            for expr in rule.get("expr", []):
                if "counter" in expr:
                    direction, ns = rule["comment"].split()
                    out[(direction, ns)] = (expr["counter"]["packets"], expr["counter"]["bytes"])
        dev = sh(*in_ns(NS_ROUTER, "cat", "/proc/net/dev"))
        for ns, (_, rif) in PHONES.items():
            for line in dev.splitlines():
                if line.strip().startswith(rif + ":"):
                    f = line.split(":", 1)[1].split()
                    # Seen from the router: received from the phone = up, sent to it = down.
                    out[("veth", ns)] = {"up_bytes": int(f[0]), "up_packets": int(f[1]),
                                         "down_bytes": int(f[8]), "down_packets": int(f[9])}
        return out

    def loss(self, ns: str, percent: int) -> None:
        rif = PHONES[ns][1]
        nft(
            f'add rule inet sgb sgbfwd iifname "{rif}" numgen random mod 100 < {percent} drop\n'
            f'add rule inet sgb sgbfwd oifname "{rif}" numgen random mod 100 < {percent} drop\n'
        )

    def delay(self, delay_ms: float, max_secs: float) -> Proc:
        """Every packet forwarded between the phones and the gateway waits delay_ms in the
        router, each way (see netdelay.py for why not tbf)."""
        sh("ip", "-n", NS_ROUTER, "tuntap", "add", "dev", DELAY_DEV, "mode", "tun")
        sh("ip", "-n", NS_ROUTER, "link", "set", DELAY_DEV, "up")
        sh(*in_ns(NS_ROUTER, "sysctl", "-qw", f"net.ipv4.conf.{DELAY_DEV}.rp_filter=0"))
        proc = self.spawn(
            "netdelay",
            [sys.executable, str(HERE / "netdelay.py"), "--dev", DELAY_DEV, "--delay-ms", str(delay_ms), "--max-secs", str(max_secs)],
            ns=NS_ROUTER,
        )
        deadline = time.time() + 10
        while "ready" not in proc.lines():
            if time.time() > deadline or not proc.alive():
                raise BenchError(f"netdelay did not start: {proc.err.read_text()}")
            time.sleep(0.05)
        sh("ip", "-n", NS_ROUTER, "route", "add", "default", "dev", DELAY_DEV, "table", "100")
        for rif in ["rg0", *(rif for _, rif in PHONES.values())]:
            sh("ip", "-n", NS_ROUTER, "rule", "add", "iif", rif, "table", "100", "priority", "100")
        return proc


def nft(script: str) -> None:
    sh(*in_ns(NS_ROUTER, "nft", "-f", "-"), stdin=script)


def phone_sources(ns: str) -> list[str]:
    net = PHONES[ns][0]
    return [f"{net}.{i}" for i in range(1, SOURCES_PER_PHONE + 1)]


# --------------------------------------------------------------------------------------------
# signalgate processes
# --------------------------------------------------------------------------------------------


class Gateway:
    def __init__(self, proc: Proc, port: int, sha256: str, setting: str, certs: Path, http_port: int | None):
        self.proc, self.port, self.sha256, self.setting = proc, port, sha256, setting
        self.certs, self.http_port = certs, http_port
        self.nginx_port: int | None = None

    def url(self, transport: str) -> str:
        if transport == "wsn":
            if self.nginx_port is None:
                raise BenchError("no nginx in front of this gateway")
            return f"wss://{GW_IP}:{self.nginx_port}/ws"
        return f"wss://{GW_IP}:{self.port}/ws" if transport == "ws" else f"https://{GW_IP}:{self.port}/wt"

    def fds(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return -1


_HELP: dict[str, str] = {}


def gateway_supports(flag: str, binary: Path | None = None) -> bool:
    """Whether this gateway binary knows a flag (an older build may not: the per-source
    limits came later)."""
    binary = binary or GW_BIN
    key = str(binary)
    if key not in _HELP:
        done = subprocess.run([key, "serve", "--help"], capture_output=True, text=True)
        _HELP[key] = done.stdout + done.stderr
    return re.search(rf"(^|\s){re.escape(flag)}[\s=,]", _HELP[key]) is not None


def binary_info(path: Path) -> dict:
    """Which source a binary was built from: the commit of the checkout it sits in, and
    whether that checkout's gateway sources had uncommitted changes."""
    where = str(Path(path).resolve().parent)
    commit = sh("git", "-C", where, "rev-parse", "--short", "HEAD", check=False).strip()
    dirty = sh("git", "-C", where, "status", "--porcelain", "--", ":/src", ":/proto", ":/build.rs", ":/Cargo.toml", ":/Cargo.lock", check=False).strip()
    try:
        built = dt.datetime.fromtimestamp(Path(path).stat().st_mtime, dt.timezone.utc).isoformat()[:19]
    except OSError:
        built = None
    return {"path": str(path), "commit": commit or None, "uncommitted_source_changes": bool(dirty), "built": built}


def start_gateway(lab: Lab, setting: str, port: int = 4433, http_port: int | None = None, binary: Path | None = None) -> Gateway:
    timeout, ping = SETTINGS[setting]
    binary = binary or GW_BIN
    certs = lab.workdir / f"certs-{port}"
    argv = [
        str(binary), "serve",
        "--listen", f"{GW_IP}:{port}",
        # Plain HTTP only for nginx in front (loopback of the gateway's namespace).
        "--http-listen", f"127.0.0.1:{http_port}" if http_port else "off",
        "--metrics-listen", "off",
        "--dev-cert-dir", str(certs),
        "--liveness-timeout", f"{int(timeout * 1000)}ms",
        "--ping-interval", f"{int(ping * 1000)}ms",
        # One observer session watches up to 1,000 rooms and receives a burst of PeerState
        # frames at the cut: room, rate and queue limits sized for that (not for clients).
        "--max-rooms-per-session", str(ROOMS_PER_OBSERVER_SESSION),
        "--rate-limit", "100000",
        "--rate-burst", "100000",
        "--outbound-queue", "65536",
        # Thousands of clients come from 16 source addresses: no per-source limits here, and
        # room for the reconnect bursts (the limits are tested in tests/limits.rs).
        "--log", "info",
    ]
    # (Older builds lack these flags and these limits: then there is nothing to lift.)
    for flag, value in (("--max-connections-per-ip", "0"), ("--new-connections-per-ip-per-sec", "0"),
                        ("--max-handshakes", "8192"), ("--max-pending-hellos", "65536")):
        if gateway_supports(flag, binary):
            argv[-2:-2] = [flag, value]
    proc = lab.spawn(f"gateway-{setting}-{port}", argv, ns=NS_GW, env={"NO_COLOR": "1"})
    deadline = time.time() + 30
    while True:
        found = [l for l in proc.lines() if " sha256 " in l]
        if found:
            return Gateway(proc, port, found[0].split()[-1], setting, certs, http_port)
        if not proc.alive() or time.time() > deadline:
            raise BenchError(f"gateway did not start: {proc.err.read_text()[-2000:]}")
        time.sleep(0.1)


def start_nginx(lab: Lab, gw: Gateway, port: int) -> Proc:
    """A real nginx in the gateway's namespace in front of `gw` (transport "wsn"): TLS with
    the gateway's own certificate (so the clients' pin still matches), WebSocket proxying to
    the gateway's plain-HTTP listener, as in tests/behind_nginx.rs. Two workers, no limits
    below the benchmark's connection counts."""
    if gw.http_port is None:
        raise BenchError("nginx needs the gateway's --http-listen")
    d = lab.workdir / f"nginx-{port}"
    d.mkdir(parents=True, exist_ok=True)
    sources = "".join(f"        ~^{re.escape(PHONES[ns][0])}\\. {src};\n" for ns, src in NGINX_SOURCE.items())
    conf = f"""
daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log notice;
events {{ worker_connections 16000; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    map $remote_addr $upstream_source {{
        default 127.0.0.13;
{sources}    }}
    server {{
        listen {GW_IP}:{port} ssl backlog=8192;
        ssl_certificate {gw.certs}/dev-cert.pem;
        ssl_certificate_key {gw.certs}/dev-key.pem;
        location /ws {{
            proxy_pass http://127.0.0.1:{gw.http_port};
            proxy_bind $upstream_source;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"""
    (d / "nginx.conf").write_text(conf)
    proc = lab.spawn(f"nginx-{port}", ["nginx", "-p", str(d), "-c", str(d / "nginx.conf")], ns=NS_GW)
    deadline = time.time() + 15
    while f":{port} " not in sh(*in_ns(NS_GW, "ss", "-Hltn"), check=False):
        if not proc.alive() or time.time() > deadline:
            log_text = (d / "error.log").read_text(errors="replace") if (d / "error.log").exists() else ""
            raise BenchError(f"nginx did not listen on {port}: {proc.err.read_text()[-1000:]} {log_text[-1000:]}")
        time.sleep(0.1)
    gw.nginx_port = port
    return proc


def nginx_version() -> str | None:
    done = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
    return (done.stderr or done.stdout).strip().split("/")[-1] or None


def peer_of(ns: str, transport: str):
    """Whether a gateway log event is about a connection from this phone namespace (behind
    nginx the gateway's peer is nginx, from that namespace's loopback source)."""
    if transport == "wsn":
        src = NGINX_SOURCE[ns]
        return lambda e: e["peer_ip"] == src
    net = PHONES[ns][0] + "."
    return lambda e: e["peer_ip"].startswith(net)


def start_observer(lab: Lab, gw: Gateway, rooms: list[tuple[str, int]], max_secs: float) -> Proc:
    out = lab.workdir / f"observer-{gw.port}-{lab.seq + 1}.jsonl"
    argv = [
        str(BENCH_BIN), "observer",
        "--url", gw.url("ws"),
        "--cert-sha256", gw.sha256,
        "--rooms-per-session", str(ROOMS_PER_OBSERVER_SESSION),
        "--out", str(out),
        "--max-secs", str(int(max_secs)),
    ]
    for prefix, count in rooms:
        argv += ["--rooms", f"{prefix}:0:{count}"]
    # The measuring instrument gets the CPU first: its own sessions must not be starved.
    proc = lab.spawn(f"observer-{gw.port}", ["nice", "-n", "-10", *argv], ns=NS_GW)
    proc.events_path = out  # type: ignore[attr-defined]
    total = sum(c for _, c in rooms)
    lab.wait_ready([proc], 60 + total / 200, "observer")
    return proc


def start_clients(lab: Lab, gw: Gateway, ns: str, transport: str, prefix: str, n: int, max_secs: float, spread_s: float = 0.0) -> list[Proc]:
    procs = []
    sources = phone_sources(ns)
    for first in range(0, n, CLIENTS_PER_PROCESS):
        count = min(CLIENTS_PER_PROCESS, n - first)
        argv = [
            str(BENCH_BIN), "clients",
            "--url", gw.url(transport),
            "--cert-sha256", gw.sha256,
            "--count", str(count),
            "--first", str(first),
            "--room-prefix", prefix,
            "--bind", ",".join(sources),
            "--max-secs", str(int(max_secs)),
            "--spread-ms", str(int(spread_s * 1000)),
        ]
        procs.append(lab.spawn(f"clients-{prefix}{first}", argv, ns=ns))
    readies = lab.wait_ready(procs, 90 + spread_s + n / 40, f"{n} {transport} clients")
    connected = sum(r["connected"] for r in readies)
    if connected < n:
        errors = [j for p in procs for j in p.json_lines() if j.get("event") == "connect_failed"]
        log(f"  only {connected}/{n} {transport} clients connected; e.g. {errors[:2]}")
    return procs


def cpu_seconds(procs: list[Proc]) -> float:
    """User + system CPU time of these processes so far."""
    total = 0
    for proc in procs:
        try:
            data = Path(f"/proc/{proc.pid}/stat").read_text()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# The counters of a namespace that show packets dropped before the application saw them.
DROP_COUNTERS = ("Udp.InDatagrams", "Udp.RcvbufErrors", "Udp.InErrors", "TcpExt.ListenOverflows", "TcpExt.ListenDrops")


def net_counters(ns: str) -> dict:
    """Kernel counters of a namespace that show packets dropped before the application saw
    them (UDP receive-buffer overflows, accept-queue overflows)."""
    every = kernel_counters(ns)
    return {name: every[name] for name in DROP_COUNTERS if name in every}


def parse_gateway_log(path: Path) -> list[dict]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        m = LOG_LINE.match(line)
        if not m:
            continue
        ts = dt.datetime.fromisoformat(m["ts"].replace("Z", "+00:00")).timestamp()
        events.append({
            "t": ts,
            "transport": m["transport"],
            "peer_ip": m["peer"].rsplit(":", 1)[0],
            "reason": m["reason"],
            "silent_for_ms": int(m["silent"]),
        })
    return events


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def stats(values: list[float]) -> dict:
    v = sorted(values)
    if not v:
        return {"count": 0}
    return {
        "count": len(v),
        "min": round(v[0], 3),
        "p50": round(percentile(v, 50), 3),
        "p95": round(percentile(v, 95), 3),
        "p99": round(percentile(v, 99), 3),
        "max": round(v[-1], 3),
    }


# --------------------------------------------------------------------------------------------
# Scenario 1: detection latency
# --------------------------------------------------------------------------------------------


def detection_run(lab: Lab, transport: str, setting: str, n: int, margin: float) -> dict:
    timeout, ping = SETTINGS[setting]
    log(f"detection: signalgate {transport} {setting} (liveness {timeout:g} s) N={n}")
    lab.up()
    mine = peer_of(NS_PHONE, transport)
    try:
        gw = start_gateway(lab, setting, http_port=GW_HTTP_PORT if transport == "wsn" else None)
        nginx = start_nginx(lab, gw, NGINX_PORT) if transport == "wsn" else None
        prefix = f"{transport}-{setting}-{n}-"
        life = 600 + n / 20
        observer = start_observer(lab, gw, [(prefix, n)], life)
        t0 = time.time()
        # Sessions start spread over one probe interval, so the cut meets their probe cycles
        # at every phase (otherwise a small N would share one phase).
        clients = start_clients(lab, gw, NS_PHONE, transport, prefix, n, life, spread_s=ping)
        connected = sum(r["connected"] for p in clients for r in p.json_lines() if r.get("event") == "ready")
        setup_s = time.time() - t0
        # Quiet for two probe intervals: every session is in its steady probe cycle, at its
        # own phase (the sessions connected one after another).
        cpu_before = {"gateway": cpu_seconds([gw.proc]), "clients": cpu_seconds(clients), "t": time.time()}
        time.sleep(max(2 * ping, 3.0))
        quiet = time.time() - cpu_before["t"]
        cpu_quiet = {
            "gateway_percent": round(100 * (cpu_seconds([gw.proc]) - cpu_before["gateway"]) / quiet, 1),
            "clients_percent": round(100 * (cpu_seconds(clients) - cpu_before["clients"]) / quiet, 1),
            "seconds": round(quiet, 1),
        }
        fds = gw.fds()
        load = os.getloadavg()[0]
        cut = lab.cut(NS_PHONE)
        bound = timeout + max(10.0, timeout)
        deadline = cut["t_cut"] + bound
        while time.time() < deadline:
            time.sleep(0.5)
            gw_events = [e for e in parse_gateway_log(gw.proc.err) if mine(e) and e["t"] >= cut["t_cut"]]
            obs_events = [e for e in read_jsonl(observer.events_path) if e.get("kind") == "unreachable" and e["t"] >= cut["t_cut"]]
            early = sum(1 for e in parse_gateway_log(gw.proc.err) if mine(e) and e["t"] < cut["t_cut"])
            if len(gw_events) >= connected - early and len(obs_events) >= connected - early:
                break
        time.sleep(0.3)
        counters = net_counters(NS_GW)
        client_closes = [j for p in clients for j in p.json_lines()
                         if j.get("event") == "client_closed" and j["t"] < cut["t_cut"]]
        for proc in clients:
            lab.stop(proc)
        lab.stop(observer)
        lab.stop(gw.proc)
        if nginx:
            lab.stop(nginx)
        gw_events = [e for e in parse_gateway_log(gw.proc.err) if mine(e) and e["t"] >= cut["t_cut"]]
        obs_all = read_jsonl(observer.events_path)
        obs_events = [e for e in obs_all if e.get("kind") == "unreachable" and e["t"] >= cut["t_cut"]]
        observer_closed = [e for e in obs_all if e.get("kind") == "observer_closed"]
        early = [e for e in parse_gateway_log(gw.proc.err) if e["t"] < cut["t_cut"] and mine(e)]
    finally:
        lab.down()

    gw_lat = [e["t"] - cut["t_cut"] for e in gw_events]
    # Sessions the gateway had already dropped before the cut (an overloaded machine's false
    # positives) cannot be detected again: the figures are over the sessions alive at the cut.
    alive = connected - len(early)
    obs_lat = [e["t"] - cut["t_cut"] for e in obs_events]
    limit = timeout + margin
    result = {
        "system": "signalgate",
        "transport": transport,
        "setting": setting,
        "liveness_timeout_s": timeout,
        "ping_interval_s": ping,
        "n": n,
        "gateway_bin": binary_info(GW_BIN),
        **({"nginx": nginx_version()} if transport == "wsn" else {}),
        "connected": connected,
        "setup_seconds": round(setup_s, 1),
        "gateway_fds_at_cut": fds,
        "cpu_while_quiet": cpu_quiet,
        "gateway_namespace_counters": counters,
        "load1_at_cut": round(load, 2),
        "nft_cut_seconds": round(cut["nft_seconds"], 4),
        "bound_s": bound,
        "closed_before_cut": len(early),
        "closed_before_cut_reasons": count_by(early, "reason"),
        "client_side_closes_before_cut": {"count": len(client_closes),
                                          "examples": [c["error"] for c in client_closes[:3]]},
        "alive_at_cut": alive,
        "gateway": {
            **stats(gw_lat),
            # Connections of failed and retried handshakes end in the log too: hence max().
            "missing": max(0, alive - len(gw_lat)),
            "reasons": count_by(gw_events, "reason"),
            "silent_for_ms": stats([e["silent_for_ms"] / 1000 for e in gw_events]),
        },
        "observer": {
            **stats(obs_lat),
            "missing": max(0, alive - len(obs_lat)),
            "reasons": count_by(obs_events, "reason"),
            "sessions_closed": len(observer_closed),
        },
        "limit_s": limit,
        "within_limit": bool(gw_lat and obs_lat and connected == n and not early
                             and len(gw_lat) >= alive and len(obs_lat) >= alive
                             and percentile(sorted(gw_lat), 99) <= limit
                             and percentile(sorted(obs_lat), 99) <= limit),
        "samples_gateway_s": [round(x, 3) for x in sorted(gw_lat)],
        "samples_observer_s": [round(x, 3) for x in sorted(obs_lat)],
    }
    g, o = result["gateway"], result["observer"]
    log(f"  gateway close: {fmt_stats(g)}; observer UNREACHABLE: {fmt_stats(o)}; "
        f"limit {limit:g} s -> {'ok' if result['within_limit'] else 'EXCEEDED'}")
    return result


def count_by(events: list[dict], key: str) -> dict:
    out: dict[str, int] = {}
    for e in events:
        out[e.get(key, "?")] = out.get(e.get(key, "?"), 0) + 1
    return out


def fmt_stats(s: dict) -> str:
    if not s.get("count"):
        return f"none (missing {s.get('missing', '?')})"
    extra = f", missing {s['missing']}" if s.get("missing") else ""
    return (f"n={s['count']} min {s['min']:.2f} p50 {s['p50']:.2f} p95 {s['p95']:.2f} "
            f"p99 {s['p99']:.2f} max {s['max']:.2f} s{extra}")


# --------------------------------------------------------------------------------------------
# Scenario 2: false positives under loss and delay
# --------------------------------------------------------------------------------------------


# Seconds after the false-positive condition starts that count as its onset (see the report).
ONSET_S = 10.0


def after_onset(r: dict) -> str:
    firsts = r.get("first_unreachable_after_s")
    if firsts is None:
        return "–"
    return str(sum(1 for t in firsts if t > ONSET_S))


def false_positive_run(lab: Lab, duration: float, sessions: int, delay_ms: float, losses: tuple[int, int],
                       settings: list[str] = ("default", "aggressive"),
                       transports: list[str] = ("ws", "wt"), pcap: bool = False) -> list[dict]:
    """No cut: loss both ways (one rate per phone namespace) plus delay, for `duration`.
    One gateway per setting (at once), every transport, `sessions` of each per phone."""
    log(f"false positives: {losses[0]}% / {losses[1]}% loss both ways + {delay_ms:g} ms each way, "
        f"{duration:g} s, {sessions} sessions per transport ({', '.join(transports)}), setting "
        f"({', '.join(settings)}) and loss rate")
    lab.up()
    phones = {NS_PHONE: losses[0], NS_PHONE2: losses[1]}
    runs = []
    try:
        life = duration + 600
        gws, nginxes = {}, []
        for i, setting in enumerate(settings):
            gws[setting] = start_gateway(lab, setting, 4433 + i, http_port=GW_HTTP_PORT + i if "wsn" in transports else None)
            if "wsn" in transports:
                nginxes.append(start_nginx(lab, gws[setting], NGINX_PORT + i))
        observers, clients = {}, []
        for setting, gw in gws.items():
            rooms = [(f"fp-{setting}-{t}-{loss}-", sessions) for t in transports for loss in phones.values()]
            observers[setting] = start_observer(lab, gw, rooms, life)
        for setting, gw in gws.items():
            for t in transports:
                for ns, loss in phones.items():
                    clients += start_clients(lab, gw, ns, t, f"fp-{setting}-{t}-{loss}-", sessions, life, spread_s=SETTINGS[setting][1])
        time.sleep(3)
        rtt_before = tcp_rtt(NS_PHONE)
        delay_proc = lab.delay(delay_ms, life)
        counters_before = {ns: kernel_counters(ns) for ns in (*phones, NS_GW)}
        cpu_before = {"gateways": cpu_seconds([gw.proc for gw in gws.values()]), "clients": cpu_seconds(clients),
                      "netdelay": cpu_seconds([delay_proc]), "t": time.time()}
        captures = []
        if pcap:
            # TCP headers (with their SACK options) as each side saw them: the phones' and the
            # gateway's interfaces, so a lost packet is one seen on one side only.
            for ns, dev in ((NS_PHONE, "ph0"), (NS_PHONE2, "ph0"), (NS_GW, "gw0")):
                captures.append(lab.spawn(f"tcpdump-{ns}", ["timeout", str(int(life)), "tcpdump", "-i", dev, "-s", "120", "-n",
                                                             "-w", str(lab.workdir / f"{ns}.pcap"), "tcp"], ns=ns))
            time.sleep(1)
            log(f"  capturing TCP headers into {lab.workdir}/*.pcap")
        for ns, loss in phones.items():
            lab.loss(ns, loss)
        t_start = time.time()
        load_start = os.getloadavg()[0]
        rtt = {ns: tcp_rtt(ns) for ns in phones}
        log(f"  TCP connect time to the gateway: before {rtt_before} ms, during {rtt} ms")
        loads = []
        while time.time() < t_start + duration:
            time.sleep(5)
            loads.append(os.getloadavg()[0])
        t_end = time.time()
        # The state of every TCP connection at the end of the condition (retransmission
        # back-off, RTO): a summary goes into the results, the raw output stays in the logs.
        sockets = {ns: tcp_sockets(lab, ns) for ns in (*phones, NS_GW)}
        counters_delta = {ns: counter_delta(counters_before[ns], kernel_counters(ns)) for ns in counters_before}
        spent = time.time() - cpu_before["t"]
        cpu = {
            "gateways_percent": round(100 * (cpu_seconds([gw.proc for gw in gws.values()]) - cpu_before["gateways"]) / spent, 1),
            "clients_percent": round(100 * (cpu_seconds(clients) - cpu_before["clients"]) / spent, 1),
            "netdelay_percent": round(100 * (cpu_seconds([delay_proc]) - cpu_before["netdelay"]) / spent, 1),
        }
        for proc in clients:
            lab.stop(proc)
        for proc in observers.values():
            lab.stop(proc)
        for gw in gws.values():
            lab.stop(gw.proc)
        for proc in nginxes:
            lab.stop(proc)
        for proc in captures:
            lab.stop(proc)
        lab.stop(delay_proc)
        delayed = delay_proc.lines()[-1] if delay_proc.lines() else ""
        log(f"  netdelay: {delayed}; CPU during the condition: {cpu}")
        for setting, gw in gws.items():
            gw_events = [e for e in parse_gateway_log(gw.proc.err) if t_start <= e["t"] <= t_end]
            stalls = count_stall_warnings(gw.proc.err, t_start, t_end)
            obs = read_jsonl(observers[setting].events_path)
            for t in transports:
                for ns, loss in phones.items():
                    prefix = f"fp-{setting}-{t}-{loss}-"
                    mine = peer_of(ns, t)
                    unreachable = [e for e in obs if e.get("kind") == "unreachable" and e["room"].startswith(prefix) and t_start <= e["t"] <= t_end]
                    lost = [e for e in gw_events if mine(e) and e["transport"] == GATEWAY_TRANSPORT[t]]
                    connected = sum(r["connected"] for p in clients if p.name.startswith(f"clients-{prefix}") for r in p.json_lines() if r.get("event") == "ready")
                    timeout, ping = SETTINGS[setting]
                    first = {}
                    for e in unreachable:
                        first.setdefault(e["room"], e["t"] - t_start)
                    runs.append({
                        "system": "signalgate",
                        "transport": t,
                        "setting": setting,
                        "liveness_timeout_s": timeout,
                        "ping_interval_s": ping,
                        "loss_percent_each_way": loss,
                        "delay_ms_each_way": delay_ms,
                        "duration_s": round(t_end - t_start, 1),
                        "sessions": connected,
                        "false_unreachable_sessions": len(first),
                        # When in the condition each of them was first declared UNREACHABLE.
                        "first_unreachable_after_s": sorted(round(x, 1) for x in first.values()),
                        "gateway_connections_lost": len(lost),
                        "gateway_reasons": count_by(lost, "reason"),
                        "gateway_liveness_stall_warnings": stalls,
                        "tcp_connect_ms_during": rtt.get(ns),
                        "netdelay": delayed,
                        "t_start": round(t_start, 3),
                        "load1": {"start": round(load_start, 2), "max": round(max(loads, default=0), 2),
                                  "mean": round(sum(loads) / len(loads), 2) if loads else None},
                        "cpu_during_condition": cpu,
                        "gateway_bin": binary_info(GW_BIN),
                        **({"nginx": nginx_version()} if t == "wsn" else {}),
                        "kernel_counters_delta": {"phone": counters_delta[ns], "gateway_namespace": counters_delta[NS_GW]},
                        "tcp_sockets_at_end": {"phone": sockets[ns], "gateway_namespace": sockets[NS_GW]},
                    })
                    log(f"  {setting:10s} {t:3s} {loss:2d}% loss: {runs[-1]['false_unreachable_sessions']}/{connected} sessions declared UNREACHABLE")
    finally:
        lab.down()
    return runs


STALL_LINE = re.compile(r"^(?P<ts>\S+)\s+WARN .*liveness check ran late")


def count_stall_warnings(path: Path, t0: float, t1: float) -> int:
    n = 0
    for line in path.read_text(errors="replace").splitlines():
        m = STALL_LINE.match(line)
        if m:
            ts = dt.datetime.fromisoformat(m["ts"].replace("Z", "+00:00")).timestamp()
            n += t0 <= ts <= t1
    return n


def kernel_counters(ns: str) -> dict:
    """Every Tcp, TcpExt and Udp counter of a namespace (/proc/net/snmp, /proc/net/netstat)."""
    out = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        try:
            text = sh(*in_ns(ns, "cat", path))
        except BenchError:
            continue
        rows = text.splitlines()
        for head, values in zip(rows[::2], rows[1::2]):
            proto, names = head.split(":", 1)
            if proto in ("Tcp", "TcpExt", "Udp"):
                for name, value in zip(names.split(), values.split(":", 1)[1].split()):
                    try:
                        out[f"{proto}.{name}"] = int(value)
                    except ValueError:
                        pass
    return out


def counter_delta(before: dict, after: dict) -> dict:
    """Counters that moved (gauges such as Tcp.CurrEstab are left out)."""
    skip = {"Tcp.RtoAlgorithm", "Tcp.RtoMin", "Tcp.RtoMax", "Tcp.MaxConn", "Tcp.CurrEstab"}
    return {k: after[k] - before.get(k, 0) for k in sorted(after) if k not in skip and after[k] != before.get(k, 0)}


def tcp_sockets(lab: Lab, ns: str) -> dict:
    """`ss -tin` of a namespace's established TCP connections, grouped by local port (the
    gateway's, nginx's; "client side": the clients, the observer, nginx's upstream side): how
    many are in retransmission back-off, with unacknowledged data, their RTOs (ms). The raw
    output is kept next to the processes' logs."""
    text = sh(*in_ns(ns, "ss", "-Htin", "state", "established"), check=False)
    (lab.workdir / f"ss-{ns}-{int(time.time())}.txt").write_text(text)
    groups: dict[str, list[dict]] = {}
    current = None
    for line in text.splitlines():
        if line and not line[0].isspace():
            fields = line.split()
            port = int(fields[2].rsplit(":", 1)[1]) if len(fields) >= 4 else 0
            servers = {*range(4433, 4443), *range(GW_HTTP_PORT, GW_HTTP_PORT + 10), *range(NGINX_PORT, NGINX_PORT + 10)}
            current = f":{port}" if port in servers else "client side"
            continue
        m = re.search(r"\brto:(\d+(?:\.\d+)?)", line)
        if not m or current is None:
            continue
        b = re.search(r"\bbackoff:(\d+)", line)
        r = re.search(r"\bretrans:(\d+)/(\d+)", line)
        u = re.search(r"\bunacked:(\d+)", line)
        groups.setdefault(current, []).append({"rto": float(m[1]), "backoff": int(b[1]) if b else 0,
                                               "retrans": int(r[2]) if r else 0, "unacked": int(u[1]) if u else 0})
        current = None
    out = {}
    for key, socks in sorted(groups.items()):
        rtos = sorted(x["rto"] for x in socks)
        out[key] = {
            "sockets": len(socks),
            "in_backoff": sum(1 for x in socks if x["backoff"]),
            "max_backoff": max(x["backoff"] for x in socks),
            "with_unacked_data": sum(1 for x in socks if x["unacked"]),
            "rto_ms": {"p50": percentile(rtos, 50), "p99": percentile(rtos, 99), "max": rtos[-1]},
            "retransmitted_segments_total": sum(x["retrans"] for x in socks),
        }
    return out


def tcp_rtt(ns: str) -> list[float]:
    """TCP connect times (ms) from a phone to the gateway: the SYN/SYN-ACK round trip."""
    code = (
        "import socket,time\n"
        "out=[]\n"
        "for i in range(5):\n"
        "  s=socket.socket(); s.settimeout(5); t=time.time()\n"
        "  try:\n"
        f"    s.connect(('{GW_IP}',4433)); out.append(round((time.time()-t)*1000,1))\n"
        "  except OSError: out.append(None)\n"
        "  s.close(); time.sleep(0.1)\n"
        "print(out)\n"
    )
    try:
        return json.loads(sh(*in_ns(ns, sys.executable, "-c", code)).strip().replace("None", "null"))
    except (BenchError, json.JSONDecodeError):
        return []


# --------------------------------------------------------------------------------------------
# Scenario 4: what an idle session costs on the wire
# --------------------------------------------------------------------------------------------


def per_session_minute(value: float, sessions: int, seconds: float) -> float:
    return round(value / sessions / (seconds / 60), 1) if sessions and seconds else float("nan")


def idle_cost_run(lab: Lab, system: str, label: str, sessions: int, settle: float, seconds: float,
                  setting: str = "default", binary: Path | None = None) -> list[dict]:
    """N idle sessions per transport (signalgate: WebSocket from sgb-phone and WebTransport
    from sgb-phone2 at once; Socket.IO: WebSocket from sgb-phone), no loss, no delay. After
    `settle` s, the router's counters give every byte between the phones and the gateway
    over `seconds` s, each direction, as on the wire (IP packets; plus the Ethernet header
    on the veth)."""
    binary = binary or GW_BIN
    log(f"idle cost: {label} ({system}{', ' + setting if system == 'signalgate' else ''}), {sessions} sessions "
        f"per transport, settle {settle:g} s, measured {seconds:g} s")
    lab.up()
    lab.count_traffic()
    life = settle + seconds + 600
    rows = []
    try:
        if system == "signalgate":
            timeout, ping = SETTINGS[setting]
            gw = start_gateway(lab, setting, binary=binary)
            server = gw.proc
            groups = {"ws": (NS_PHONE, start_clients(lab, gw, NS_PHONE, "ws", "idle-ws-", sessions, life, spread_s=ping)),
                      "wt": (NS_PHONE2, start_clients(lab, gw, NS_PHONE2, "wt", "idle-wt-", sessions, life, spread_s=ping))}
            connected = {t: sum(r["connected"] for p in procs for r in p.json_lines() if r.get("event") == "ready")
                         for t, (_, procs) in groups.items()}
        elif system == "socketio":
            base = HERE / "baselines" / "socketio"
            server = lab.spawn("idle-socketio-server", ["node", str(base / "server.js"), "--host", GW_IP, "--port", "8002",
                                                         "--max-secs", str(int(life))], ns=NS_GW)
            lab.wait_ready([server], 30, "socketio server")
            clients = lab.spawn("idle-socketio-clients",
                                ["node", str(base / "clients.js"), "--url", f"http://{GW_IP}:8002", "--count", str(sessions),
                                 "--spread-secs", "25", "--bind", ",".join(phone_sources(NS_PHONE)),
                                 "--max-secs", str(int(life))], ns=NS_PHONE)
            ready = lab.wait_ready([clients], 90 + 25 + sessions / 40, "socketio clients")
            groups = {"ws": (NS_PHONE, [clients])}
            connected = {"ws": ready[0]["connected"]}
        else:
            raise BenchError(f"idle cost: unknown system {system}")
        time.sleep(settle)
        before, cpu0, t0 = lab.traffic(), cpu_seconds([server]), time.time()
        load0 = os.getloadavg()[0]
        time.sleep(seconds)
        after, cpu1, t1 = lab.traffic(), cpu_seconds([server]), time.time()
        load1 = os.getloadavg()[0]
        window = t1 - t0
        for t, (ns, procs) in groups.items():
            if system == "signalgate":
                closed = [j for p in procs for j in p.json_lines() if j.get("event") == "client_closed" and j["t"] <= t1]
            else:
                closed = [j for j in server.json_lines() if j.get("event") == "disconnected" and j["t"] <= t1]
            alive = connected[t] - len(closed)
            row = {
                "system": system,
                "label": label,
                "transport": t,
                "setting": setting if system == "signalgate" else None,
                **({"liveness_timeout_s": SETTINGS[setting][0], "ping_interval_s": SETTINGS[setting][1],
                    "gateway_bin": binary_info(binary)} if system == "signalgate" else
                   {"heartbeat": "pingInterval 25 s, pingTimeout 20 s (defaults)", "tls": False}),
                "sessions": connected[t],
                "closed_before_end": len(closed),
                "settle_s": settle,
                "window_s": round(window, 1),
                "load1": {"start": round(load0, 2), "end": round(load1, 2)},
                # One server for both transports: its CPU is over both groups of sessions.
                "server_cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / window, 2),
            }
            for direction in ("up", "down"):
                packets = after[(direction, ns)][0] - before[(direction, ns)][0]
                nbytes = after[(direction, ns)][1] - before[(direction, ns)][1]
                veth = after[("veth", ns)][f"{direction}_bytes"] - before[("veth", ns)][f"{direction}_bytes"]
                veth_packets = after[("veth", ns)][f"{direction}_packets"] - before[("veth", ns)][f"{direction}_packets"]
                row[direction] = {
                    "ip_bytes": nbytes,
                    "packets": packets,
                    "ip_bytes_per_session_per_min": per_session_minute(nbytes, alive, window),
                    "packets_per_session_per_min": per_session_minute(packets, alive, window),
                    "ethernet_bytes_per_session_per_min": per_session_minute(nbytes + 14 * packets, alive, window),
                    "veth_bytes": veth,
                    "veth_packets": veth_packets,
                }
            rows.append(row)
            log(f"  {label} {t}: {alive} sessions; per session per minute: up {row['up']['ip_bytes_per_session_per_min']} B "
                f"({row['up']['packets_per_session_per_min']} packets), down {row['down']['ip_bytes_per_session_per_min']} B "
                f"({row['down']['packets_per_session_per_min']} packets); server CPU {row['server_cpu_percent_of_one_core']} %")
    finally:
        lab.down()
    return rows


# --------------------------------------------------------------------------------------------
# Scenario 3: baselines
# --------------------------------------------------------------------------------------------


def baselines_run(lab: Lab, n: int, bound: float, which: list[str]) -> list[dict]:
    log(f"baselines ({', '.join(which)}): {n} clients each, one cut, bound {bound:g} s")
    base = HERE / "baselines"
    servers = {
        "seed": ("seed-design WebSocket (keep-alive every 20 s, no reply required)",
                 [sys.executable, str(base / "seed_server.py"), "--host", GW_IP, "--port", "8001"],
                 [sys.executable, str(base / "ws_clients.py"), "--url", f"ws://{GW_IP}:8001/", "--ping-interval", "none"], 20.0),
        "socketio": ("Socket.IO 4 (pingInterval 25 s + pingTimeout 20 s)",
                     ["node", str(base / "socketio" / "server.js"), "--host", GW_IP, "--port", "8002"],
                     ["node", str(base / "socketio" / "clients.js"), "--url", f"http://{GW_IP}:8002"], 25.0),
        "websockets": ("python websockets (ping_interval 20 s + ping_timeout 20 s)",
                       [sys.executable, str(base / "websockets_server.py"), "--host", GW_IP, "--port", "8003"],
                       [sys.executable, str(base / "ws_clients.py"), "--url", f"ws://{GW_IP}:8003/", "--ping-interval", "none"], 20.0),
    }
    results = []
    lab.up()
    try:
        started = {}
        for name in which:
            label, server_argv, client_argv, interval = servers[name]
            server = lab.spawn(f"baseline-{name}-server", server_argv, ns=NS_GW)
            lab.wait_ready([server], 30, f"{name} server")
            # Clients connect at random moments over one heartbeat interval, so the cut
            # meets each connection at a random phase of its heartbeat.
            clients = lab.spawn(f"baseline-{name}-clients",
                                client_argv + ["--count", str(n), "--spread-secs", str(interval),
                                               "--bind", ",".join(phone_sources(NS_PHONE)),
                                               "--max-secs", str(int(bound + 300))], ns=NS_PHONE)
            started[name] = (label, server, clients, interval)
        for name, (_, server, clients, interval) in started.items():
            lab.wait_ready([clients], 60 + interval + n / 10, f"{name} clients")
        # Quiet a little longer than the longest spread: every connection has connected.
        time.sleep(3)
        load = os.getloadavg()[0]
        cut = lab.cut(NS_PHONE)
        t_cut = cut["t_cut"]
        net = PHONES[NS_PHONE][0]
        log(f"  cut; waiting {bound:g} s")
        time.sleep(bound + 1)
        for name, (label, server, clients, interval) in started.items():
            lab.stop(clients)
            lab.stop(server)
            events = server.json_lines()
            conns = {e["client"] for e in events if e.get("event") == "connected" and e["t"] < t_cut and f"{net}." in e.get("peer", "")}
            gone = {}
            for e in events:
                if e.get("event") == "disconnected" and e["client"] in conns and e["t"] >= t_cut and e["client"] not in gone:
                    gone[e["client"]] = e
            within = [e for e in gone.values() if e["t"] - t_cut <= bound]
            lat = [e["t"] - t_cut for e in within]
            res = {
                "system": name,
                "label": label,
                "transport": "websocket",
                "n": n,
                "connected": len(conns),
                "bound_s": bound,
                "load1_at_cut": round(load, 2),
                "server": {**stats(lat), "missing": len(conns) - len(lat), "reasons": count_by(within, "reason")},
                "samples_server_s": [round(x, 3) for x in sorted(lat)],
            }
            if name == "websockets":
                declared = {}
                for e in events:
                    if e.get("event") == "keepalive_timeout" and e["client"] in conns and e["t"] >= t_cut:
                        declared.setdefault(e["client"], e["t"] - t_cut)
                res["keepalive_timeout"] = stats([x for x in declared.values() if x <= bound])
                res["samples_keepalive_timeout_s"] = [round(x, 3) for x in sorted(declared.values())]
            if name == "seed":
                writes = [e for e in events if e.get("event") == "write" and e["client"] in conns and e["t"] >= t_cut]
                late = [e for e in writes if e["t"] >= t_cut + bound - interval]
                res["writes_after_cut"] = {
                    "ok": sum(1 for e in writes if e["ok"]),
                    "failed": sum(1 for e in writes if not e["ok"]),
                    "ok_in_last_interval_before_bound": sum(1 for e in late if e["ok"]),
                    "clients_with_ok_write_in_last_interval": len({e["client"] for e in late if e["ok"]}),
                    "latest_ok_write_after_cut_s": round(max((e["t"] - t_cut for e in writes if e["ok"]), default=0), 1),
                }
                res["kernel_model_s"] = KERNEL_MODEL_S
            results.append(res)
            log(f"  {name}: {fmt_stats(res['server'])}" + (f"; writes after the cut: {res['writes_after_cut']}" if name == "seed" else ""))
    finally:
        lab.down()
    return results


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def kernel_model() -> dict:
    """Linux's give-up time for unacknowledged data with tcp_retries2 = 15 and the default
    RTO bounds (200 ms .. 120 s): the sum of the back-off series."""
    rto, total, rtos = 0.2, 0.0, []
    for _ in range(16):  # the original transmission's timeout + 15 retransmissions
        rtos.append(rto)
        total += rto
        rto = min(rto * 2, 120.0)
    return {"tcp_retries2": 15, "rto_min_s": 0.2, "rto_max_s": 120.0, "timeouts_s": rtos, "total_s": round(total, 1)}


def cell(s: dict, key: str) -> str:
    return f"{s[key]:.2f}" if s.get("count") else "–"


def targets(results: dict) -> list[str]:
    """The issue's targets, checked against the figures."""
    out = ["## Targets\n"]
    small = [r for r in results.get("detection", []) if r["n"] <= 1000]
    if small:
        bad = [r for r in small if not r["within_limit"]]
        ran = sorted({f"{r['liveness_timeout_s']:g} s" for r in small})
        out.append(f"- p99 detection ≤ liveness_timeout + {results['meta']['margin_s']:g} s for N ≤ 1,000 "
                   f"(liveness_timeout {' and '.join(ran)}; {', '.join(sorted({r['transport'] for r in small}))}; "
                   f"gateway close and observer UNREACHABLE): "
                   + ("**met** in all " + str(len(small)) + " runs." if not bad else
                      "**not met** in " + ", ".join(f"{r['transport']} {r['setting']} N={r['n']}" for r in bad) + "."))
    big = [r for r in results.get("detection", []) if r["n"] > 1000]
    for r in big:
        out.append(f"- N={r['n']:,} {r['transport']} {r['setting']}: p99 gateway {cell(r['gateway'], 'p99')} s, observer "
                   f"{cell(r['observer'], 'p99')} s against {r['limit_s']:g} s; {r['closed_before_cut']:,} sessions dropped "
                   f"before the cut; {'within' if r['within_limit'] else 'outside'} the target.")
    # Issue 15: false deaths per 1,000 sessions in 5 minutes (loss each way, +200 ms RTT).
    goals = {("default", 10): 0, ("default", 30): 10, ("aggressive", 10): 10}
    for r in results.get("false_positives", []):
        goal = goals.get((r["setting"], r["loss_percent_each_way"]))
        if goal is None or not r["sessions"]:
            continue
        per = 1000 * r["false_unreachable_sessions"] / r["sessions"]
        out.append(f"- false positives, {r['liveness_timeout_s']:g} s / {r['ping_interval_s']:g} s at "
                   f"{r['loss_percent_each_way']}% loss, {TRANSPORT_LABEL.get(r['transport'], r['transport'])}: "
                   f"{r['false_unreachable_sessions']}/{r['sessions']} ({per:.0f} per 1,000) against ≤ {goal} per 1,000: "
                   f"{'**met**' if per <= goal else '**not met**'}.")
    if len(out) == 1:
        return []
    out.append("")
    return out


def gateway_note(meta: dict) -> str:
    g = meta.get("gateway_bin")
    if not g:
        return ""
    dirty = " + uncommitted source changes" if g.get("uncommitted_source_changes") else ""
    return f"; gateway built from {g.get('commit')}{dirty} ({g.get('path')})"


def run_col(r: dict) -> str:
    return f" {r['run']} |" if "run" in r else ""


def write_report(results: dict, out_dir: Path) -> str:
    lines = []
    meta = results["meta"]
    lines.append("# Network-cut benchmark: results\n")
    runs = results.get("runs")
    if not runs:
        lines.append(f"Produced by `{meta['command']}` on {meta['finished'][:19]} UTC "
                     f"(commit {meta['commit']}, kernel {meta['kernel']}, {meta['cpus']} CPUs shared; "
                     f"1-min load {meta['load_start']} at start, {meta['load_end']} at end{gateway_note(meta)}).\n")
    else:
        lines.append("Produced by these runs (the tables' \"run\" column refers to them; each row is from the latest run that measured it):\n")
        for i, m in enumerate(runs):
            lines.append(f"{i}. `{m['command']}`: {m['started'][:16].replace('T', ' ')}–{(m.get('finished') or '?')[11:16]} UTC, "
                         f"checkout at {m['commit']}, kernel {m['kernel']}, {m['cpus']} CPUs shared; "
                         f"1-min load {m['load_start']} at start, {m.get('load_end', '?')} at end{gateway_note(m)}.")
        lines.append("")
    lines.append("Latency is measured from the cut (a silent nft DROP in the router, both ways) to "
                 "(a) the server declaring the connection gone (signalgate: its `connection lost` "
                 "log line) and (b) for signalgate, the observer on the gateway's side receiving "
                 "PeerState UNREACHABLE. Seconds; nearest-rank percentiles.\n")
    det = results.get("detection", [])
    if det:
        lines.append("## Detection latency: signalgate\n")
        rc = any("run" in r for r in det)
        lines.append("| transport | liveness_timeout / ping | N | connected | dropped before the cut | (a) gateway close min / p50 / p95 / p99 / max | (b) observer UNREACHABLE min / p50 / p95 / p99 / max | p99 ≤ timeout + 0.5 s |" + (" run |" if rc else ""))
        lines.append("|---|---|---:|---:|---:|---|---|---|" + ("---:|" if rc else ""))
        for r in det:
            g, o = r["gateway"], r["observer"]
            miss = ""
            if g.get("missing") or o.get("missing"):
                miss = f" (missing: gateway {g.get('missing')}, observer {o.get('missing')})"
            lines.append(
                f"| {TRANSPORT_LABEL.get(r['transport'], r['transport'])} | {r['liveness_timeout_s']:g} s / {r['ping_interval_s']:g} s | {r['n']:,} | {r['connected']:,} | {r['closed_before_cut']:,} | "
                f"{cell(g,'min')} / {cell(g,'p50')} / {cell(g,'p95')} / **{cell(g,'p99')}** / {cell(g,'max')} | "
                f"{cell(o,'min')} / {cell(o,'p50')} / {cell(o,'p95')} / **{cell(o,'p99')}** / {cell(o,'max')} | "
                f"{'yes' if r['within_limit'] else 'NO'}{miss} |" + (run_col(r) if rc else ""))
        lines.append("")
    base = results.get("baselines", [])
    if base:
        lines.append("## Baselines (same topology, same kind of cut)\n")
        lines.append("| server | N | connected | noticed within bound | min / p50 / p95 / p99 / max | note |")
        lines.append("|---|---:|---:|---:|---|---|")
        for r in base:
            s = r["server"]
            note = ", ".join(f"{k}: {v}" for k, v in s.get("reasons", {}).items())
            if r["system"] == "seed":
                w = r["writes_after_cut"]
                note = (f"{w['ok']} keep-alive writes succeeded after the cut, {w['failed']} failed; "
                        f"{w['clients_with_ok_write_in_last_interval']}/{r['connected']} clients still had a successful write "
                        f"in the last 20 s before the {r['bound_s']:g} s bound (latest at +{w['latest_ok_write_after_cut_s']} s); "
                        f"the kernel gives up after ~{r['kernel_model_s']} s")
            ka = r.get("keepalive_timeout") or {}
            if ka.get("count"):
                note += (f"; websockets declared the keepalive ping timeout at {ka['min']:.2f} / {ka['p50']:.2f} / "
                         f"{ka['p95']:.2f} / {ka['p99']:.2f} / {ka['max']:.2f} s, the handler learns it close_timeout (10 s) later")
            never = f" (>{r['bound_s']:g} s: {s['missing']})" if s.get("missing") else ""
            lines.append(f"| {r['label']} | {r['n']} | {r['connected']} | {s.get('count', 0)}{never} | "
                         f"{cell(s,'min')} / {cell(s,'p50')} / {cell(s,'p95')} / {cell(s,'p99')} / {cell(s,'max')} | {note} |")
        km = results.get("kernel_model", kernel_model())
        lines.append("")
        lines.append(f"Kernel model for a writer whose peer vanished (tcp_retries2 = {km['tcp_retries2']}, "
                     f"RTO from {km['rto_min_s']} s doubling up to {km['rto_max_s']:g} s): "
                     f"{' + '.join(f'{x:g}' for x in km['timeouts_s'])} = **{km['total_s']} s** "
                     f"before the kernel reports the connection dead to its writer; until then every write succeeds.\n")
    fps = results.get("false_positives", [])
    if fps:
        lines.append("## False positives: no cut, random loss both ways + delay\n")
        rc = any("run" in r for r in fps)
        lines.append(f"The condition starts for every session at once: the round trip jumps from ~0.1 ms to "
                     f"{2 * fps[0]['delay_ms_each_way']:g} ms and the loss begins, while {ONSET_S:g} s of it are a transient "
                     "(every TCP's RTT estimate is wrong, the delay line takes on all the traffic at once). The "
                     "\"after the onset\" column counts the sessions first declared UNREACHABLE later than that: the steady state.\n")
        lines.append("| transport | liveness_timeout / ping | loss each way | delay each way | duration | sessions | wrongly declared UNREACHABLE | per 1,000 | of them after the onset | gateway reasons | liveness stalls | 1-min load mean / max |" + (" run |" if rc else ""))
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|" + ("---:|" if rc else ""))
        order = {"default": 0, "aggressive": 1}
        torder = {"ws": 0, "wt": 1, "wsn": 2}
        for r in sorted(fps, key=lambda r: (order.get(r["setting"], 9), r["loss_percent_each_way"], torder.get(r["transport"], 9))):
            reasons = ", ".join(f"{k}: {v}" for k, v in r["gateway_reasons"].items()) or "–"
            per = f"{1000 * r['false_unreachable_sessions'] / r['sessions']:.0f}" if r["sessions"] else "–"
            load = r.get("load1") or {}
            stalls = r.get("gateway_liveness_stall_warnings")
            lines.append(f"| {TRANSPORT_LABEL.get(r['transport'], r['transport'])} | {r['liveness_timeout_s']:g} s / {r['ping_interval_s']:g} s | "
                         f"{r['loss_percent_each_way']}% | {r['delay_ms_each_way']:g} ms | {r['duration_s']:g} s | {r['sessions']} | "
                         f"**{r['false_unreachable_sessions']}** | {per} | {after_onset(r)} | {reasons} | {'–' if stalls is None else stalls} | "
                         f"{load.get('mean', '–')} / {load.get('max', '–')} |" + (run_col(r) if rc else ""))
        lines.append("")
    idle = results.get("idle_cost", [])
    if idle:
        lines.append("## Idle cost: bytes on the wire per idle session\n")
        lines.append("No loss, no delay; every packet between the clients' namespace and the gateway's, counted "
                     "by nft in the router (IP packets: IP and TCP/UDP headers + payload; \"+ Ethernet\" adds the "
                     "14-byte Ethernet header of each packet, as the veth counts it). Up = client → gateway. "
                     "Per session per minute, over the measured window after the settle time.\n")
        rc = any("run" in r for r in idle)
        lines.append("| system | transport | liveness | sessions | window | up B/min | down B/min | up packets/min | down packets/min | up + Ethernet | down + Ethernet | server CPU % of a core | 1-min load |" + (" run |" if rc else ""))
        lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|" + ("---:|" if rc else ""))
        for r in idle:
            u, d = r["up"], r["down"]
            live = f"{r['liveness_timeout_s']:g} s / {r['ping_interval_s']:g} s" if r.get("liveness_timeout_s") else "25 s + 20 s"
            transport = TRANSPORT_LABEL.get(r["transport"], r["transport"]) + (" (wss)" if r["system"] == "signalgate" and r["transport"] == "ws" else "")
            if r["system"] == "socketio":
                transport = "WebSocket (ws, no TLS)"
            closed = f" ({r['closed_before_end']} closed)" if r.get("closed_before_end") else ""
            lines.append(f"| {r['label']} | {transport} | {live} | {r['sessions']:,}{closed} | {r['window_s']:g} s | "
                         f"**{u['ip_bytes_per_session_per_min']:,.0f}** | **{d['ip_bytes_per_session_per_min']:,.0f}** | "
                         f"{u['packets_per_session_per_min']:.1f} | {d['packets_per_session_per_min']:.1f} | "
                         f"{u['ethernet_bytes_per_session_per_min']:,.0f} | {d['ethernet_bytes_per_session_per_min']:,.0f} | "
                         f"{r['server_cpu_percent_of_one_core']:g} | {r['load1']['start']} → {r['load1']['end']} |" + (run_col(r) if rc else ""))
        lines.append("")
    lines += targets(results)
    text = "\n".join(lines)
    (out_dir / "report.md").write_text(text + "\n")
    return text


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


MERGE_KEYS = {
    "detection": ("system", "transport", "setting", "n"),
    "false_positives": ("transport", "setting", "loss_percent_each_way"),
    "baselines": ("system",),
    "idle_cost": ("label", "transport", "setting"),
}


def merge_results(old: dict, new: dict) -> dict:
    """`old` with the cells measured in `new` replacing theirs (same scenario and key); every
    row says which run (index into "runs", each with its command, commit, times and load)
    measured it."""
    runs = list(old.get("runs") or [old["meta"]])
    for i, run in enumerate(runs):
        for scenario in MERGE_KEYS:
            for row in old.get(scenario, []):
                row.setdefault("run", i)
    runs.append(new["meta"])
    here = len(runs) - 1
    merged = {**old, "meta": new["meta"], "runs": runs, "kernel_model": new.get("kernel_model", old.get("kernel_model"))}
    for scenario, key in MERGE_KEYS.items():
        if scenario not in new:
            continue
        fresh = [{**row, "run": here} for row in new[scenario]]
        keys = {tuple(row.get(k) for k in key) for row in fresh}
        kept = [row for row in old.get(scenario, []) if tuple(row.get(k) for k in key) not in keys]
        merged[scenario] = kept + fresh
        if scenario == "detection":
            order = {"default": 0, "aggressive": 1}
            torder = {"ws": 0, "wt": 1, "wsn": 2}
            merged[scenario].sort(key=lambda r: (order.get(r["setting"], 9), torder.get(r["transport"], 9), r["n"]))
    return merged


def dump_json(results: dict) -> str:
    """Indented JSON, with each list of samples on one line (readable, diff-friendly)."""
    lists: dict[str, str] = {}

    def fold(value):
        if isinstance(value, dict):
            return {k: fold(v) for k, v in value.items()}
        if isinstance(value, list) and value and all(isinstance(x, (int, float)) for x in value):
            key = f"@@list{len(lists)}@@"
            lists[key] = json.dumps(value)
            return key
        if isinstance(value, list):
            return [fold(v) for v in value]
        return value

    text = json.dumps(fold(results), indent=1)
    for key, compact in lists.items():
        text = text.replace(f'"{key}"', compact)
    return text + "\n"


def build(release: bool) -> None:
    log(f"building signalgate and signalgate-bench ({'release' if release else 'debug'})")
    cmd = ["cargo", "build", "-q", "-p", "signalgate", "-p", "signalgate-bench"]
    subprocess.run(cmd + (["--release"] if release else []), cwd=ROOT, check=True)


def check_tools(need_node: bool, need_websockets: bool, nginx: bool = False) -> None:
    missing = [t for t in ("ip", "nft", "ss") if not shutil.which(t)]
    if nginx and not shutil.which("nginx"):
        missing.append("nginx (apt-get install -y nginx)")
    if need_node:
        missing += [t for t in ("node",) if not shutil.which(t)]
        if not (HERE / "baselines" / "socketio" / "node_modules" / "socket.io").exists():
            log("installing the Socket.IO baseline's npm packages")
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=HERE / "baselines" / "socketio", check=True)
    if need_websockets:
        try:
            import websockets  # noqa: F401
        except ImportError:
            missing.append("python package websockets (pip install websockets)")
    if missing:
        raise BenchError(f"missing: {', '.join(missing)} (see bench/README.md)")


def main() -> int:
    ap = argparse.ArgumentParser(description="signalgate network-cut benchmark (needs root)")
    ap.add_argument("--smoke", action="store_true", help="N=1, 2 s liveness, both transports, no baselines; exits 1 past timeout + --smoke-margin")
    ap.add_argument("--smoke-margin", type=float, default=1.5)
    ap.add_argument("--only", action="append", choices=["detection", "false-positives", "baselines", "idle-cost"],
                    help="run only these scenarios (repeatable); idle-cost runs only when named")
    ap.add_argument("--transports", default="ws,wt", help="ws, wt, and wsn: WebSocket through a real nginx (TLS at nginx, in the gateway's namespace)")
    ap.add_argument("--settings", default="default,aggressive")
    ap.add_argument("--sizes", default="1,100,1000,5000,19000", help="N values (19,000 WebSocket sessions is what one gateway process holds under the 20,000-descriptor limit)")
    ap.add_argument("--fp-seconds", type=float, default=300)
    ap.add_argument("--fp-sessions", type=int, default=100)
    ap.add_argument("--fp-loss", default="10,30")
    ap.add_argument("--fp-settings", default="default,aggressive")
    ap.add_argument("--fp-transports", default="ws,wt", help="ws, wt, wsn (WebSocket through nginx)")
    ap.add_argument("--gateway-cc", default=None, help="TCP congestion control in the gateway's namespace (default: the machine's)")
    ap.add_argument("--phone-cc", default=None, help="TCP congestion control in the phones' namespaces (default: the machine's)")
    ap.add_argument("--pcap", action="store_true", help="false-positives: capture TCP headers in the phones' and the gateway's namespaces (with --keep-logs; for small runs)")
    ap.add_argument("--idle-sessions", type=int, default=1000, help="idle-cost: sessions per transport")
    ap.add_argument("--idle-seconds", type=float, default=120, help="idle-cost: measured seconds")
    ap.add_argument("--idle-settle", type=float, default=20, help="idle-cost: seconds between the last session set up and the measurement")
    ap.add_argument("--idle-systems", default="signalgate,socketio", help="idle-cost: signalgate, socketio")
    ap.add_argument("--idle-settings", default="default", help="idle-cost: liveness settings of signalgate")
    ap.add_argument("--idle-compare", action="append", default=[], metavar="LABEL=PATH",
                    help="idle-cost: also measure this signalgate binary (e.g. one built from an older commit), repeatable")
    ap.add_argument("--gateway-bin", type=Path, default=None,
                    help="the signalgate binary to measure (default: this checkout's, built first), e.g. one built in another worktree")
    ap.add_argument("--bench-bin", type=Path, default=None, help="the signalgate-bench binary (clients, observer)")
    ap.add_argument("--merge", action="store_true",
                    help="add to the results already in --out: replace only the cells measured now, keep the others (report.md covers all)")
    ap.add_argument("--delay-ms", type=float, default=100, help="added delay each way in the false-positive scenario")
    ap.add_argument("--baseline-clients", type=int, default=100)
    ap.add_argument("--baseline-bound", type=float, default=BASELINE_BOUND_S)
    ap.add_argument("--baselines", default="seed,socketio,websockets")
    ap.add_argument("--out", type=Path, default=None, help="results directory (default bench/results, or a temp dir with --smoke)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--debug-build", action="store_true", help="use target/debug (e.g. CI's smoke, which builds debug anyway); the published figures use release")
    ap.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (printed path)")
    args = ap.parse_args()

    if os.geteuid() != 0:
        print("run.py needs root: it creates network namespaces, veths and nft rules", file=sys.stderr)
        return 2
    scenarios = args.only or ["detection", "false-positives", "baselines"]
    for t in args.transports.split(",") + args.fp_transports.split(","):
        if t not in TRANSPORT_LABEL:
            print(f"unknown transport {t} (ws, wt, wsn)", file=sys.stderr)
            return 2
    transports = args.transports.split(",")
    settings = args.settings.split(",")
    sizes = [int(x) for x in args.sizes.replace("_", "").split(",")]
    margin = 0.5
    if args.smoke:
        scenarios, settings, sizes, margin = ["detection"], ["aggressive"], [1], args.smoke_margin
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="sgb-smoke-")) if args.smoke else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit 20,000
    global GW_BIN, BENCH_BIN
    if args.debug_build:
        GW_BIN = ROOT / "target" / "debug" / "signalgate"
        BENCH_BIN = ROOT / "target" / "debug" / "signalgate-bench"
    if not args.no_build and not (args.gateway_bin and args.bench_bin):
        build(release=not args.debug_build)
    GW_BIN = (args.gateway_bin or GW_BIN).resolve()
    BENCH_BIN = (args.bench_bin or BENCH_BIN).resolve()
    compare = []
    for spec in args.idle_compare:
        label, _, path = spec.partition("=")
        if not path or not Path(path).exists():
            print(f"--idle-compare {spec}: LABEL=PATH of an existing binary", file=sys.stderr)
            return 2
        compare.append((label, Path(path).resolve()))
    for binary in [GW_BIN, BENCH_BIN, *(b for _, b in compare)]:
        if not binary.exists():
            print(f"missing binary {binary}", file=sys.stderr)
            return 2
    baselines = args.baselines.split(",") if "baselines" in scenarios else []
    check_tools(need_node="socketio" in baselines or ("idle-cost" in scenarios and "socketio" in args.idle_systems.split(",")),
                need_websockets="websockets" in baselines,
                nginx=("detection" in scenarios and "wsn" in args.transports.split(","))
                or ("false-positives" in scenarios and "wsn" in args.fp_transports.split(",")))

    workdir = Path(tempfile.mkdtemp(prefix="sgb-logs-"))
    lab = Lab(workdir, args.gateway_cc, args.phone_cc)

    interrupt_on_signals()
    command = "sudo python3 bench/run.py " + " ".join(sys.argv[1:])
    results: dict = {
        "meta": {
            "command": command.strip(),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(),
            "load_start": round(os.getloadavg()[0], 2),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "commit": sh("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD", check=False).strip(),
            "nofile_limit": hard,
            "settings": {k: {"liveness_timeout_s": v[0], "ping_interval_s": v[1]} for k, v in SETTINGS.items()},
            "margin_s": margin,
            "build": "debug" if args.debug_build else "release",
            "gateway_bin": binary_info(GW_BIN),
            "bench_bin": binary_info(BENCH_BIN),
            "scenarios": scenarios,
            # TCP as the namespaces get it (a fresh namespace inherits the machine's defaults).
            "tcp_sysctls": {k: sh("sysctl", "-n", f"net.ipv4.{k}", check=False).strip() for k in
                            ("tcp_congestion_control", "tcp_thin_linear_timeouts", "tcp_early_retrans", "tcp_recovery",
                             "tcp_sack", "tcp_timestamps", "tcp_retries2")},
            "tcp_congestion_control_gateway_ns": args.gateway_cc or "machine default",
            "tcp_congestion_control_phone_ns": args.phone_cc or "machine default",
        },
        "kernel_model": kernel_model(),
    }
    existing = None
    if args.merge and (out_dir / "results.json").exists():
        existing = json.loads((out_dir / "results.json").read_text())

    def save(final: bool = False) -> dict:
        """Writes what was measured so far (merged into --out's results with --merge), so
        that a later failure loses nothing already measured."""
        if final:
            results["meta"]["finished"] = dt.datetime.now(dt.timezone.utc).isoformat()
            results["meta"]["load_end"] = round(os.getloadavg()[0], 2)
        merged = merge_results(existing, results) if existing else results
        (out_dir / "results.json").write_text(dump_json(merged))
        return merged

    failed = False
    try:
        if "detection" in scenarios:
            results["detection"] = []
            for setting in settings:
                for transport in transports:
                    for n in sizes:
                        r = detection_run(lab, transport, setting, n, margin)
                        if args.smoke and r["closed_before_cut"] and not r["within_limit"]:
                            # Not a detection-latency failure: the session was gone before the
                            # cut. Say why, and try once more.
                            log(f"  the session ended before the cut ({r['closed_before_cut_reasons']}, client side: "
                                f"{r['client_side_closes_before_cut']}); trying once more")
                            r = detection_run(lab, transport, setting, n, margin)
                        results["detection"].append(r)
                        failed |= not r["within_limit"]
                        save()
        if "false-positives" in scenarios:
            losses = tuple(int(x) for x in args.fp_loss.split(","))
            results["false_positives"] = false_positive_run(lab, args.fp_seconds, args.fp_sessions, args.delay_ms, losses,
                                                            args.fp_settings.split(","), args.fp_transports.split(","), args.pcap)
            save()
        if "baselines" in scenarios:
            results["baselines"] = baselines_run(lab, args.baseline_clients, args.baseline_bound, args.baselines.split(","))
            save()
        if "idle-cost" in scenarios:
            results["idle_cost"] = []
            gateways = [(f"signalgate {binary_info(GW_BIN)['commit'] or 'current'}", GW_BIN), *compare]
            for system in args.idle_systems.split(","):
                if system == "signalgate":
                    for setting in args.idle_settings.split(","):
                        for label, binary in gateways:
                            results["idle_cost"] += idle_cost_run(lab, "signalgate", label, args.idle_sessions, args.idle_settle,
                                                                  args.idle_seconds, setting, binary)
                            save()
                else:
                    results["idle_cost"] += idle_cost_run(lab, system, "Socket.IO 4" if system == "socketio" else system,
                                                          args.idle_sessions, args.idle_settle, args.idle_seconds)
                    save()
    except KeyboardInterrupt:
        log("interrupted: tearing down")
        lab.down()
        return 130
    except Exception:
        lab.down()
        log(f"failed; logs in {workdir}")
        raise
    finally:
        lab.down()

    merged = save(final=True)
    report = write_report(merged, out_dir)
    print()
    print(report)
    if not args.smoke:
        plotted = subprocess.run([sys.executable, str(HERE / "plot.py"), str(out_dir / "results.json"), str(out_dir / "detection.png")])
        if plotted.returncode != 0:
            log("chart not drawn (pip install matplotlib, then: python3 bench/plot.py)")
    if args.keep_logs:
        log(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    log(f"results in {out_dir}")
    if args.smoke and failed:
        log(f"SMOKE FAILED: signalgate's detection exceeded liveness_timeout + {margin:g} s (or sessions were missing)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
