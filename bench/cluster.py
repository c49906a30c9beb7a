#!/usr/bin/env python3
"""Cluster benchmark: signalgate gateways joined through a 3-node NATS cluster, on one box.

Three measurements, each with fresh gateways (the NATS cluster is shared by the whole run;
every gateway set gets its own --cluster-name, so nothing of an earlier set is heard):

1. **relay** — cross-gateway relay latency against same-gateway relay. Two gateways a and b;
   `signalgate-bench relay` with P sender/receiver pairs (default 100, 200-byte signals, as
   bench/relay.py) at each rate (default 1k and 10k signals/s). "same": senders and receivers
   on gateway a; "cross": senders on a, receivers on b, so every signal goes a → NATS → b and
   b's acknowledgement goes back to a before the sender's Ack. One-way latency p50/p99/max (sender's
   send call to the receiver's decoded frame, one process, one monotonic clock), lost signals,
   and the CPU of both gateways, the NATS servers and the load generator.
2. **lost** — how long the cluster takes to tell its members that a gateway died. Gateway b
   holds N idle WebSocket sessions (default 5,000) in rooms of K (default 100); one observer
   session per room on gateway a. b is SIGKILLed; the observer stamps (CLOCK_REALTIME) every
   PeerState UNREACHABLE (reason GATEWAY_LOST) and, after the resume window, every PeerLeft;
   then a fresh session on a joins every room and lists its members (none of b's may remain).
3. **scale** — more sessions than one process can hold (default 40,200 over 3 gateways,
   13,400 each; a process may hold 20,000 descriptors). The client side spreads itself: the
   orchestrator reads /endpoints from one gateway (every live gateway with its URL and
   certificate hash) and hands the client processes those gateways in turn, as an SDK would
   pick one per client (no SO_REUSEPORT: every gateway has its own port). Every session is
   watched by an observer on the *next* gateway. RSS, descriptors and CPU per gateway while
   the sessions are idle; then one client process holding 100 sessions is SIGSTOPped — a
   silent peer: its kernel still ACKs TCP, but the gateway's WebSocket Pings need Pongs from
   the process, which a stopped process cannot send (no FIN, no RST) — and its observers'
   UNREACHABLE is timed. Sessions of other processes reported UNREACHABLE are counted too
   (false positives under that load).

It measures, it does not judge: nothing is asserted; the figures go to results.json and
report.md (default bench/results/cluster/). Every process is started in its own process
group, bounded in time (`--max-secs`), and stopped on every exit path (normal end, error,
Ctrl-C, SIGTERM).

    python3 bench/cluster.py                       # everything (~15 min on 2 cores)
    python3 bench/cluster.py --smoke               # small sizes, < 60 s after the build
    python3 bench/cluster.py --only relay --rates 1000,10000 --repeat 3
    python3 bench/cluster.py --only lost --lost-settings aggressive --lost-sessions 5000
    python3 bench/cluster.py --only scale --scale-sessions 40200

Python 3 standard library only. Needs no root (loopback only; it uses the source addresses
127.0.0.2-17 and 127.0.0.250, which every Linux loopback answers). Needs nats-server
(Debian: /usr/sbin/nats-server).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import relay  # noqa: E402  (bench/relay.py: free ports, quiet-machine wait, rate limits, machine info)
from procs import BenchError, Guarded, interrupt_on_signals, Proc, Procs, prometheus_samples, publish, run_main  # noqa: E402  (bench/procs.py: child processes)
from relay import log  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "cluster"

SETTINGS = {
    # name: (liveness_timeout s, ping_interval s), as bench/run.py
    "default": (10.0, 4.0),
    "aggressive": (2.0, 0.8),
}
CLIENTS_PER_PROCESS = 5000  # far below the 20,000 descriptors a process may hold
CLIENT_SOURCES = [f"127.0.0.{i}" for i in range(2, 18)]  # spreads the ephemeral ports
CUT_SOURCE = "127.0.0.250"  # the SIGSTOPped process's own source: its lines in the gateway's log
ROOMS_PER_OBSERVER_SESSION = 1000
# Room, rate and queue limits for the observers (1,000 rooms per session, bursts of
# PeerState at a loss) and rooms of 100; no per-source limits (every client is on loopback).
BENCH_LIMITS = [
    "--max-rooms-per-session", "1000",
    "--max-peers-per-room", "1000",
    "--rate-limit", "100000",
    "--rate-burst", "100000",
    "--outbound-queue", "65536",
]
OPEN_LIMITS = [
    "--max-connections-per-ip", "0",
    "--new-connections-per-ip-per-sec", "0",
    "--max-handshakes", "8192",
    "--max-pending-hellos", "65536",
]
CONN_LOST = re.compile(
    # `connection lost` names its connection itself; with debug logs the `conn{..}` span's
    # prefix comes before it.
    r"^(?P<ts>\S+)\s+INFO .*?connection lost conn=(?P<id>\S+) transport=(?P<transport>\w+) "
    r"peer=(?P<peer>\S+) reason=\"?(?P<reason>\w+)\"? "
    r"silent_for_ms=(?P<silent>\d+)"
)
GATEWAY_LOST = re.compile(r"^(?P<ts>\S+)\s+WARN .*gateway lost.*node=\"?(?P<node>[\w-]+)\"?.*silent_for_ms=(?P<silent>\d+)")


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


class JsonlTail:
    """Reads a growing JSON-lines file incrementally (an observer's output can reach
    100,000 lines; polling it must not re-read it all)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.lines = path, 0, []

    def poll(self) -> list[dict]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return self.lines
        end = chunk.rfind(b"\n") + 1  # only complete lines
        for line in chunk[:end].splitlines():
            try:
                self.lines.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        self.offset += end
        return self.lines


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process, in clock ticks."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


class CpuMeter:
    """CPU used by named groups of processes (and the whole machine) between start() and
    stop(), in % of one core."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = groups

    @staticmethod
    def _machine() -> int:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(fields[i] for i in (0, 1, 2, 5, 6, 7) if i < len(fields))

    def _sample(self) -> dict[str, int]:
        sample = {name: sum(cpu_ticks(pid) or 0 for pid in pids) for name, pids in self.groups.items()}
        sample["machine"] = self._machine()
        return sample

    def start(self) -> None:
        self.t0, self.before = time.time(), self._sample()

    def stop(self) -> dict:
        seconds = time.time() - self.t0
        after = self._sample()
        hz = os.sysconf("SC_CLK_TCK")
        out = {name: round(100 * (after[name] - self.before[name]) / hz / seconds, 1) for name in after}
        accounted = sum(v for k, v in out.items() if k != "machine")
        out["others"] = round(max(out["machine"] - accounted, 0.0), 1)
        out["seconds"] = round(seconds, 1)
        return out


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def free_tcp_ports(count: int) -> list[int]:
    """Ports free a moment ago; all held until all are chosen, so they differ."""
    held = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, ""
    except (OSError, urllib.error.URLError):
        return 0, ""


# --------------------------------------------------------------------------------------------
# NATS
# --------------------------------------------------------------------------------------------


def nats_binary() -> str:
    found = shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)
    if not found:
        raise BenchError("nats-server is not installed (apt-get install -y nats-server)")
    return found


class Nats:
    """n clustered nats-server processes on 127.0.0.1, as tests/common/cluster.rs starts them
    (routes to every other node; no JetStream unless `jetstream`: only durable mode uses it,
    bench/durable.py). Ready when every node accepts clients, has routes to all n - 1 others
    (/routez) and is healthy (/healthz; with JetStream, that includes its meta group)."""

    def __init__(self, procs: Procs, n: int = 3, jetstream: bool = False):
        self.binary = nats_binary()
        self.version = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout.strip()
        ports = free_tcp_ports(3 * n)
        self.client = ports[0::3]
        self.routes_ = ports[1::3]
        self.monitor = ports[2::3]
        self.procs: list[Proc] = []
        # With JetStream: each node's store dir, in the run's work directory (a fresh one per
        # cluster: a later cluster must not find an earlier one's streams).
        store = Path(tempfile.mkdtemp(prefix="jetstream-", dir=procs.workdir)) if jetstream else None
        self.store_dirs = [store / f"n{i}" for i in range(n)] if store else []
        for i in range(n):
            routes = ",".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(self.routes_) if j != i)
            argv = [
                self.binary, "-a", "127.0.0.1", "-p", str(self.client[i]), "-m", str(self.monitor[i]),
                "--server_name", f"n{i}", "--cluster_name", "sgbench",
                "--cluster", f"nats://127.0.0.1:{self.routes_[i]}", "--routes", routes,
                *(["-js", "-sd", str(self.store_dirs[i])] if jetstream else []),
            ]
            self.procs.append(procs.spawn(f"nats-n{i}", argv))
        self._wait_ready(n, timeout=20)

    def _wait_ready(self, n: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while True:
            waiting = None
            for i, proc in enumerate(self.procs):
                if not proc.alive():
                    raise BenchError(f"nats-server n{i} exited: {proc.err.read_text(errors='replace')[-1500:]}")
                status, body = http_get(f"http://127.0.0.1:{self.monitor[i]}/routez")
                remotes = {r.get("remote_id") for r in json.loads(body).get("routes", [])} if status == 200 else set()
                health, _ = http_get(f"http://127.0.0.1:{self.monitor[i]}/healthz")
                if len(remotes) != n - 1 or health != 200:
                    waiting = f"n{i}: {len(remotes)} routes, /healthz {health}"
                    break
            if waiting is None:
                return
            if time.time() > deadline:
                raise BenchError(f"the NATS cluster is not ready within {timeout:g} s ({waiting})")
            time.sleep(0.1)

    def urls(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.client)

    def url(self, i: int) -> str:
        return f"nats://127.0.0.1:{self.client[i]}"

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def connections(self) -> dict[str, str]:
        """Which NATS node each gateway is connected to (client name -> node)."""
        found = {}
        for i, port in enumerate(self.monitor):
            status, body = http_get(f"http://127.0.0.1:{port}/connz")
            if status == 200:
                for conn in json.loads(body).get("connections", []):
                    found[conn.get("name", "?")] = f"n{i}"
        return found


# --------------------------------------------------------------------------------------------
# Gateways
# --------------------------------------------------------------------------------------------


class Gateway:
    """One `signalgate serve --cluster ...` (release build), with metrics on a free port;
    with `nats=None`, a gateway alone (no --cluster), for comparison."""

    def __init__(self, procs: Procs, binary: Path, nats: Nats | None, node: str, cluster_name: str,
                 setting: tuple[float, float], extra: list[str], resume_window: float | None = None,
                 nats_urls: str | None = None):
        self.node = node
        self.port = relay.free_port()
        self.metrics_port = free_tcp_ports(1)[0]
        timeout, ping = setting
        self.argv = [
            str(binary), "serve",
            "--listen", f"127.0.0.1:{self.port}",
            "--http-listen", "off",
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            "--dev-cert-dir", str(procs.workdir / f"certs-{node}"),
            *(["--cluster", nats_urls or nats.urls(), "--node-id", node, "--cluster-name", cluster_name] if nats else []),
            "--liveness-timeout", f"{int(timeout * 1000)}ms",
            "--ping-interval", f"{int(ping * 1000)}ms",
            *(["--resume-window", f"{int(resume_window * 1000)}ms"] if resume_window else []),
            *OPEN_LIMITS,
            *extra,
            "--log", "info",
        ]
        self.proc = procs.spawn(f"gateway-{node}", self.argv)
        deadline = time.time() + 30
        while True:
            found = [l for l in self.proc.out.read_text(errors="replace").splitlines() if " sha256 " in l]
            if found:
                self.sha256 = found[0].split()[-1]
                break
            if not self.proc.alive() or time.time() > deadline:
                raise BenchError(f"gateway {node} did not start: {self.proc.err.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/ws"

    def metrics(self) -> dict[str, float]:
        """The /metrics exposition as {"name{labels}": value}."""
        status, body = http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        return prometheus_samples(body) if status == 200 else {}

    def endpoints(self) -> dict:
        """GET /endpoints over TLS, pinned to this gateway's certificate hash (a development
        certificate: no CA, so the hash is the check)."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=5)
        try:
            conn.request("GET", "/endpoints")
            response = conn.getresponse()
            der = conn.sock.getpeercert(binary_form=True)
            if hashlib.sha256(der).hexdigest() != self.sha256.lower():
                raise BenchError(f"gateway {self.node}: /endpoints answered with another certificate")
            return json.loads(response.read())
        finally:
            conn.close()

    def log_events(self, pattern: re.Pattern) -> list[dict]:
        events = []
        for line in self.proc.err.read_text(errors="replace").splitlines():
            m = pattern.match(line)
            if m:
                d = m.groupdict()
                d["t"] = dt.datetime.fromisoformat(d.pop("ts").replace("Z", "+00:00")).timestamp()
                events.append(d)
        return events

    def log_summary(self, until: float | None = None) -> dict:
        """Log lines by level and the WARN/ERROR messages (numbers folded), split at `until`
        (the end of the measurement): what the gateway said during the run, and what it said
        while the run was being torn down (clients exiting, gateways shutting down)."""
        pattern = re.compile(r"^(\S+)\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s+(?:\S+\{[^}]*\}: )?(?:\S+: )?(.*)$")
        parts = {"during": ({}, {}), "teardown": ({}, {})}
        for line in self.proc.err.read_text(errors="replace").splitlines():
            m = pattern.match(line)
            if not m:
                continue
            ts, level, text = m.groups()
            part = "during"
            if until is not None:
                try:
                    if dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() > until:
                        part = "teardown"
                except ValueError:
                    pass
            levels, messages = parts[part]
            levels[level] = levels.get(level, 0) + 1
            if level in ("WARN", "ERROR") and "authentication is OFF" not in text:
                key = f"{level} {re.sub(r'[0-9]+', 'N', text)[:140]}"
                messages[key] = messages.get(key, 0) + 1
        return {
            "lines_by_level": parts["during"][0], "warn_error_messages": parts["during"][1],
            "teardown_lines_by_level": parts["teardown"][0], "teardown_warn_error_messages": parts["teardown"][1],
        }


def wait_cluster(gateways: list[Gateway], timeout: float = 30) -> float:
    """Waits until every gateway counts all of them live (signalgate_cluster_nodes)."""
    t0 = time.time()
    want = len(gateways)
    while True:
        counts = [gw.metrics().get("signalgate_cluster_nodes") for gw in gateways]
        if all(c == want for c in counts):
            return round(time.time() - t0, 2)
        for gw in gateways:
            if not gw.proc.alive():
                raise BenchError(f"gateway {gw.node} exited: {gw.proc.err.read_text(errors='replace')[-1500:]}")
        if time.time() - t0 > timeout:
            raise BenchError(f"the gateways did not see each other within {timeout:g} s (cluster_nodes {counts})")
        time.sleep(0.1)


def histogram(metrics: dict[str, float], name: str) -> dict:
    """A Prometheus histogram from an exposition: cumulative buckets, count, sum."""
    buckets = []
    for key, value in metrics.items():
        m = re.match(rf'^{name}_bucket\{{(?:.*,)?le="([^"]+)"', key)
        if m:
            buckets.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), value))
    buckets.sort()
    return {"buckets": buckets, "count": metrics.get(f"{name}_count", 0.0), "sum": metrics.get(f"{name}_sum", 0.0)}


def histogram_delta(before: dict, after: dict) -> dict:
    b = dict(before["buckets"])
    return {
        "buckets": [(le, v - b.get(le, 0.0)) for le, v in after["buckets"]],
        "count": after["count"] - before["count"],
        "sum": after["sum"] - before["sum"],
    }


def histogram_summary(h: dict) -> dict:
    """Count, mean and bucket bounds of p50/p99 ("≤ le": a histogram knows no more)."""
    count = h["count"]
    out: dict = {"count": int(count), "mean_ms": round(1000 * h["sum"] / count, 3) if count else None}
    for q in (50, 99):
        bound = None
        for le, cumulative in h["buckets"]:
            if count and cumulative >= q / 100 * count:
                bound = le
                break
        out[f"p{q}_le_ms"] = None if bound is None or bound == float("inf") else round(bound * 1000, 3)
    out["buckets_ms"] = [["+Inf" if le == float("inf") else round(le * 1000, 3), int(v)] for le, v in h["buckets"]]
    return out


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank (as bench/run.py)."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values) - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def stats(values: list[float]) -> dict:
    v = sorted(values)
    if not v:
        return {"count": 0}
    return {"count": len(v), "min": round(v[0], 3), "p50": round(percentile(v, 50), 3),
            "p99": round(percentile(v, 99), 3), "max": round(v[-1], 3)}


def fmt_stats(s: dict) -> str:
    if not s.get("count"):
        return "none"
    return f"{s['min']:.3f} / {s['p50']:.3f} / {s['p99']:.3f} / {s['max']:.3f}"


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


class Run:
    """What every scenario needs: binaries, the process registry, the NATS cluster."""

    def __init__(self, args: argparse.Namespace, procs: Procs, nats: Nats, gw_bin: Path, bench_bin: Path):
        self.args, self.procs, self.nats = args, procs, nats
        self.gw_bin, self.bench_bin = gw_bin, bench_bin
        self.sets = 0

    def cluster_name(self, what: str) -> str:
        self.sets += 1
        return f"{what}{self.sets}"

    def gateways(self, nodes: list[str], what: str, setting: tuple[float, float], extra: list[str],
                 resume_window: float | None = None, nats_pin: list[int] | None = None) -> list[Gateway]:
        """Fresh gateways in a fresh cluster name. Each is given every NATS server (it picks
        one at random), or with `nats_pin` only the one at that index."""
        name = self.cluster_name(what)
        gws = []
        try:
            for i, node in enumerate(nodes):
                urls = self.nats.url(nats_pin[i]) if nats_pin else None
                gws.append(Gateway(self.procs, self.gw_bin, self.nats, node, name, setting, extra, resume_window, urls))
            formed = wait_cluster(gws)
        except BaseException:
            for gw in gws:
                self.procs.stop(gw.proc)
            raise
        log(f"  gateways {', '.join(nodes)} (cluster {name}) see each other after {formed} s")
        return gws

    def observer(self, gw_url: str, sha256: str, rooms: list[tuple[str, int]], rooms_per_session: int,
                 max_secs: float, name: str) -> Proc:
        """An observer process (`signalgate-bench observer`): joins the rooms first and
        writes every presence change with a CLOCK_REALTIME stamp."""
        out = self.procs.workdir / f"{name}.jsonl"
        argv = [
            str(self.bench_bin), "observer", "--url", gw_url, "--cert-sha256", sha256,
            "--rooms-per-session", str(rooms_per_session), "--out", str(out), "--max-secs", str(int(max_secs)),
        ]
        for prefix, count in rooms:
            argv += ["--rooms", f"{prefix}:0:{count}"]
        # The measuring instrument gets the CPU first (as bench/run.py); root only.
        if os.geteuid() == 0:
            argv = ["nice", "-n", "-10", *argv]
        proc = self.procs.spawn(name, argv)
        proc.events = JsonlTail(out)  # type: ignore[attr-defined]
        return proc

    def clients(self, gw_url: str, sha256: str, prefix: str, count: int, room_size: int, sources: list[str],
                max_secs: float, spread_s: float, name: str, first: int = 0) -> Proc:
        """A client process (`signalgate-bench clients`): `count` idle sessions numbered from
        `first`, session i in room PREFIX{i / room_size}; they answer WebSocket Pings from
        their network task (tungstenite), as a browser does, and send nothing."""
        argv = [
            str(self.bench_bin), "clients", "--url", gw_url, "--cert-sha256", sha256,
            "--count", str(count), "--first", str(first), "--room-prefix", prefix, "--room-size", str(room_size),
            "--bind", ",".join(sources), "--max-secs", str(int(max_secs)),
            "--spread-ms", str(int(spread_s * 1000)),
        ]
        return self.procs.spawn(name, argv)


def wait_quiet(max_wait: float, threshold: float, hold: float) -> float:
    """Waits (at most max_wait s) until the machine has used less than `threshold` % of a
    core for `hold` s in a row (other engineers' builds come and go on this machine: one
    quiet 2-s sample says little). Returns the last sample."""
    deadline = time.time() + max_wait
    quiet_since = None
    busy = relay.machine_busy_percent()
    announced = False
    while max_wait > 0 and time.time() < deadline:
        if busy < threshold:
            quiet_since = quiet_since or time.time() - 2.0
            if time.time() - quiet_since >= hold:
                break
        else:
            quiet_since = None
            if not announced:
                log(f"  the machine is busy ({busy:g} % of a core): waiting up to {max_wait:g} s for {hold:g} s below {threshold:g} %")
                announced = True
        busy = relay.machine_busy_percent()
    if announced:
        log(f"  {'quiet' if quiet_since else 'still busy'}: {busy:g} %")
    return busy


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.time() + timeout
    while True:
        if predicate():
            return True
        if time.time() > deadline:
            return False
        time.sleep(interval)


def peers_of(events: list[dict], kind: str, since: float = 0.0, rooms=None) -> dict[str, dict]:
    """The first event of `kind` per peer (at or after `since`, in `rooms` if given)."""
    first: dict[str, dict] = {}
    for e in events:
        if e.get("kind") == kind and e["t"] >= since and (rooms is None or rooms(e["room"])):
            first.setdefault(e["peer"], e)
    return first


# -- 1. relay --------------------------------------------------------------------------------


def relay_once(run: Run, rate: float, topology: str, extra: list[str] | None = None,
               metric_prefixes: tuple[str, ...] = ()) -> dict:
    """One relay run on fresh gateways: senders on a; receivers on a ("same") or b
    ("cross"), in a cluster of two; or one gateway without --cluster ("alone", what
    bench/relay.py measures). `extra`: more flags for the gateways (bench/durable.py: durable
    mode). With `metric_prefixes`, every gateway's series of those prefixes are kept in
    result["gateway_metrics"] as sampled before the load generator starts, once its pairs
    are set up ("ready": no signal sent yet), just after its last signal was sent ("sent":
    warm-up and measured interval) and after it ended ("end": its connections closed too)."""
    args = run.args
    busy_before = wait_quiet(args.wait_quiet, args.quiet_below, args.quiet_hold)
    limit, burst = relay.rate_limits(rate, args.pairs)
    limits = ["--rate-limit", str(limit), "--rate-burst", str(burst), *(extra or [])]
    if topology == "alone":
        gws = [Gateway(run.procs, run.gw_bin, None, "alone", "", SETTINGS["default"], limits)]
        a = b = gws[0]
    else:
        # The NATS servers are pinned: a gateway given all three picks one at random, and
        # whether a signal crosses a route between two NATS servers changes its cost.
        pin = [0, 0] if topology == "cross-1nats" else [0, 1]
        gws = run.gateways(["a", "b"], "relay", SETTINGS["default"], limits, nats_pin=pin)
        a, b = gws
    try:
        receiver = b if topology.startswith("cross") else a
        before = histogram(a.metrics(), "signalgate_cluster_relay_seconds")
        envelopes_before = sum(gw.metrics().get('signalgate_cluster_messages_total{direction="sent"}', 0.0) for gw in gws)
        bound = args.warmup + args.secs + args.drain + 60
        argv = [
            str(run.bench_bin), "relay",
            "--url", a.url, "--cert-sha256", a.sha256,
            "--receiver-url", receiver.url, "--receiver-cert-sha256", receiver.sha256,
            "--pairs", str(args.pairs), "--bytes", str(args.bytes), "--rate", str(rate), "--numbered",
            "--secs", str(args.secs), "--warmup-secs", str(args.warmup), "--drain-secs", str(args.drain),
            "--gateway-pid", str(a.pid),
            *([] if topology == "alone" else [f"--watch-pid=gateway_b={b.pid}"]),
            *[f"--watch-pid=nats_n{i}={pid}" for i, pid in enumerate(run.nats.pids())],
            "--max-secs", str(int(bound)),
        ]
        log(f"relay {topology}: {rate:g}/s, {args.pairs} pairs, {args.bytes} B, warm-up {args.warmup:g} s, "
            f"measured {args.secs:g} s (rate limit {limit}/s burst {burst})")
        def sampled() -> dict:
            return {gw.node: {k: v for k, v in gw.metrics().items() if k.startswith(metric_prefixes)} for gw in gws}
        samples = {"before": sampled()} if metric_prefixes else {}
        proc = run.procs.spawn(f"relay-{topology}-{int(rate)}", argv)
        if metric_prefixes:
            try:
                run.procs.wait_for_event([proc], "ready", bound, "the relay's pairs were not set up", poll=0.02)
                samples["ready"] = sampled()
                # The senders start 0.2 s after that line and send for warm-up + secs.
                time.sleep(0.2 + args.warmup + args.secs + 0.1)
                samples["sent"] = sampled()
            except BenchError:
                pass  # no result either: reported below
        try:
            proc.popen.wait(timeout=bound + 30)
        except subprocess.TimeoutExpired:
            pass
        run.procs.stop(proc)
        measured_until = time.time()
        if metric_prefixes:
            samples["end"] = sampled()
        lines = proc.json_lines()
        result = next((l for l in lines if l.get("event") == "result"), None)
        if result is None:
            errors = [l.get("error") for l in lines if l.get("event") == "error"]
            raise BenchError(f"relay {topology} at {rate:g}/s gave no result: {errors or proc.err.read_text(errors='replace')[-2000:]}")
        result.pop("event", None)
        after = histogram(a.metrics(), "signalgate_cluster_relay_seconds")
        envelopes = sum(gw.metrics().get('signalgate_cluster_messages_total{direction="sent"}', 0.0) for gw in gws) - envelopes_before
        signals = result["sent"] + result["sent_warmup"]
        result["cluster_envelopes_sent"] = int(envelopes)
        result["cluster_envelopes_per_signal"] = round(envelopes / signals, 2) if signals and topology != "alone" else None
        result["topology"] = topology
        result["nats_connections"] = run.nats.connections()
        result["gateway_a_cluster_relay_histogram"] = histogram_summary(histogram_delta(before, after))
        result["machine_busy_before_percent"] = busy_before
        watched = result.get("watched_cpu_percent", {})
        result["gateway_b_cpu_percent"] = watched.get("gateway_b")  # None when alone
        result["nats_cpu_percent"] = round(sum(v for k, v in watched.items() if k.startswith("nats_") and v is not None), 1)
        accounted = sum(x or 0 for x in (result.get("gateway_cpu_percent"), result["gateway_b_cpu_percent"],
                                         result["nats_cpu_percent"], result.get("loadgen_cpu_percent")))
        if result.get("machine_cpu_percent") is not None:
            result["others_cpu_percent"] = round(max(result["machine_cpu_percent"] - accounted, 0.0), 1)
        result["gateways_alive_after"] = all(gw.proc.alive() for gw in gws)
        if metric_prefixes:
            result["gateway_metrics"] = samples
    finally:
        for gw in gws:
            run.procs.stop(gw.proc)
    # The load generator's connections end with it (no close handshake): the gateways' lines
    # about that, and about their own shutdown, are teardown.
    exit_t = next((l["t"] for l in lines if l.get("event") == "exit"), measured_until)
    result["gateway_logs"] = {gw.node: gw.log_summary(until=exit_t - 0.05) for gw in gws}
    lat = result["latency_ms"]
    ack = result.get("ack_latency_ms") or {}
    log(f"  achieved {result['rate_achieved']:g}/s, sent {result['sent']}, lost {result['lost']}, p50 {lat['p50']} ms, "
        f"p99 {lat['p99']} ms, max {lat['max']} ms; Ack p50 {ack.get('p50')} ms, p99 {ack.get('p99')} ms, "
        f"never acked {result.get('never_acked')}; CPU a {result['gateway_cpu_percent']} %, b {result['gateway_b_cpu_percent']} %, "
        f"NATS {result['nats_cpu_percent']} %, load generator {result['loadgen_cpu_percent']} %, others {result.get('others_cpu_percent')} %")
    return result


def relay_scenario(run: Run, results: dict) -> None:
    """Every cell (rate × topology) once per round, --repeat rounds, so that every cell sees
    the machine in each of its moods (other engineers' builds come and go); the attempt that
    other processes disturbed least is kept per cell (every attempt is in results.json)."""
    args = run.args
    cells = [(rate, topology) for rate in args.rate_list for topology in args.topologies]
    attempts: dict[tuple, list] = {cell: [] for cell in cells}
    for attempt in range(args.repeat):
        for rate, topology in cells:
            if args.repeat > 1:
                log(f"round {attempt + 1} of {args.repeat}")
            result = relay_once(run, rate, topology)
            result["round"] = attempt + 1
            attempts[(rate, topology)].append(result)
            results["relay"]["all_attempts"].append(result)
    for cell in cells:
        chosen = min(attempts[cell], key=lambda r: r.get("others_cpu_percent") or 0.0)
        chosen["attempts"] = len(attempts[cell])
        results["relay"]["runs"].append(chosen)


# -- 2. lost ---------------------------------------------------------------------------------


def lost_once(run: Run, setting_name: str, repeat: int = 1) -> dict:
    """Gateway b with N idle sessions in rooms of K, one observer session per room on a;
    SIGKILL b; UNREACHABLE (GATEWAY_LOST) and, after the resume window, LEFT per session at
    the observers; then the rooms' member lists on a."""
    args = run.args
    timeout, ping = SETTINGS[setting_name]
    n, k, resume = args.lost_sessions, args.lost_room_size, args.resume_window
    rooms = -(-n // k)
    log(f"lost: {n} sessions on b in {rooms} rooms of {k}, observers on a; liveness {timeout:g} s / ping {ping:g} s, "
        f"resume window {resume:g} s")
    gws = run.gateways(["a", "b"], "lost", SETTINGS[setting_name], BENCH_LIMITS, resume_window=resume)
    a, b = gws
    prefix = f"lost-{setting_name}-"
    life = 600 + n / 20
    clients: list[Proc] = []
    observer = None
    try:
        observer = run.observer(a.url, a.sha256, [(prefix, rooms)], 1, life, f"observer-lost-{setting_name}")
        run.procs.wait_ready([observer], 60 + rooms / 20, "observer")
        t0 = time.time()
        for first in range(0, n, CLIENTS_PER_PROCESS):
            count = min(CLIENTS_PER_PROCESS, n - first)
            # A later process goes on from `first`, so the rooms fill in order.
            clients.append(run.clients(b.url, b.sha256, prefix, count, k, CLIENT_SOURCES, life, 0.0,
                                       f"clients-lost-{first}", first=first))
        readies = run.procs.wait_ready(clients, 90 + n / 40, f"{n} clients on b")
        connected = sum(r["connected"] for r in readies)
        # Every observer must have heard of every session before the kill.
        joined_ok = wait_for(lambda: len(peers_of(observer.events.poll(), "joined")) >= connected, 60)
        b_peers = set(peers_of(observer.events.poll(), "joined"))
        setup_s = round(time.time() - t0, 1)
        log(f"  {connected}/{n} sessions on b, {len(b_peers)} seen joined at a's observers ({setup_s} s)")
        meter = CpuMeter({"gateway_a": [a.pid], "gateway_b": [b.pid], "clients": [p.pid for p in clients],
                          "observer": [observer.pid], "nats": run.nats.pids()})
        meter.start()
        time.sleep(max(2 * ping, 3.0))
        cpu_idle = meter.stop()
        rss = {"gateway_a_mb": rss_mb(a.pid), "gateway_b_mb": rss_mb(b.pid)}
        false_before = len(peers_of(observer.events.poll(), "unreachable"))
        # Each kill at another phase of the gateways' exchange (announcements and probes
        # every ping interval): a random wait of up to one interval.
        phase = random.uniform(0, ping)
        time.sleep(phase)

        t_kill = time.time()
        os.killpg(b.pid, signal.SIGKILL)
        b.proc.popen.wait(timeout=10)
        log(f"  SIGKILL to gateway b (pid {b.pid})")
        bound = timeout + 10
        wait_for(lambda: len(peers_of(observer.events.poll(), "unreachable", t_kill)) >= len(b_peers), bound)
        unreachable = peers_of(observer.events.poll(), "unreachable", t_kill)
        nodes_after = a.metrics().get("signalgate_cluster_nodes")
        log(f"  UNREACHABLE for {len(unreachable)}/{len(b_peers)} sessions: "
            f"{fmt_stats(stats([e['t'] - t_kill for e in unreachable.values()]))} s (min/p50/p99/max)")
        wait_for(lambda: len(peers_of(observer.events.poll(), "left", t_kill)) >= len(b_peers), bound + resume)
        left = peers_of(observer.events.poll(), "left", t_kill)
        log(f"  LEFT for {len(left)}/{len(b_peers)} sessions: {fmt_stats(stats([e['t'] - t_kill for e in left.values()]))} s")
        # Who is still listed: a fresh session on a joins every room.
        members = run.procs.spawn("members-lost", [
            str(run.bench_bin), "members", "--url", a.url, "--cert-sha256", a.sha256,
            "--rooms", f"{prefix}:0:{rooms}", "--max-secs", "60",
        ])
        members.popen.wait(timeout=90)
        listed = [l for l in members.json_lines() if l.get("event") == "members"]
        ghosts = sorted({p for l in listed for p, _ in l["peers"] if p in b_peers})
        metrics_after = a.metrics()
        declared = [e for e in a.log_events(GATEWAY_LOST) if e["t"] >= t_kill]
        events = observer.events.poll()
        measured_until = time.time()
    finally:
        for proc in clients + ([observer] if observer else []):
            run.procs.stop(proc)
        for gw in gws:
            run.procs.stop(gw.proc)

    unreach_lat = [e["t"] - t_kill for e in unreachable.values()]
    left_lat = [e["t"] - t_kill for e in left.values()]
    reasons: dict[str, int] = {}
    for e in unreachable.values():
        reasons[e["reason"]] = reasons.get(e["reason"], 0) + 1
    left_reasons: dict[str, int] = {}
    for e in left.values():
        left_reasons[e["reason"]] = left_reasons.get(e["reason"], 0) + 1
    # Several UNREACHABLE for one peer (one observer session per room: there should be one).
    repeats = sum(1 for e in events if e.get("kind") == "unreachable" and e["t"] >= t_kill) - len(unreachable)
    result = {
        "setting": setting_name, "repeat": repeat, "kill_phase_wait_s": round(phase, 3),
        "liveness_timeout_s": timeout, "ping_interval_s": ping,
        "resume_window_s": resume, "sessions": n, "room_size": k, "rooms": rooms,
        "observer_sessions": rooms, "connected": connected, "seen_joined_at_a": len(b_peers),
        "all_seen_joined": joined_ok, "setup_seconds": setup_s,
        "cpu_idle_percent": cpu_idle, "rss_idle": rss,
        "unreachable_before_kill": false_before,
        "gateway_a_declared_b_lost": [{"after_kill_s": round(e["t"] - t_kill, 3), "silent_for_ms": int(e["silent"])} for e in declared],
        "unreachable": {**stats(unreach_lat), "missing": len(b_peers) - len(unreachable), "reasons": reasons,
                        "repeated_events": repeats,
                        "silent_for_ms": stats([e.get("silent_for_ms", 0) / 1000 for e in unreachable.values()])},
        "limit_s": timeout + 0.5,
        "left": {**stats(left_lat), "missing": len(b_peers) - len(left), "reasons": left_reasons},
        "members_listed_after": sum(len(l["peers"]) for l in listed),
        "rooms_listed_after": len(listed),
        "ghosts_after": len(ghosts), "ghost_examples": ghosts[:5],
        "gateway_a_after": {
            "cluster_nodes": nodes_after,
            "cluster_nodes_later": metrics_after.get("signalgate_cluster_nodes"),
            "nodes_lost_total": metrics_after.get("signalgate_cluster_nodes_lost_total"),
            "node_detection_seconds": histogram_summary(histogram(metrics_after, "signalgate_cluster_node_detection_seconds")),
        },
        "gateway_logs": {gw.node: gw.log_summary(until=measured_until) for gw in gws},
        "samples_unreachable_s": [round(x, 3) for x in sorted(unreach_lat)],
    }
    if declared:
        result["fan_out_s"] = stats([x - (declared[0]["t"] - t_kill) for x in unreach_lat])
    log(f"  a declared b lost {[d['after_kill_s'] for d in result['gateway_a_declared_b_lost']]} s after the kill; "
        f"ghosts after the window: {len(ghosts)} (of {result['members_listed_after']} listed in {len(listed)} rooms)")
    return result


# -- 3. scale --------------------------------------------------------------------------------


def scale_once(run: Run, setting_name: str) -> dict:
    """N sessions over G gateways, spread by the client side from /endpoints; each watched
    from the next gateway; one 100-session client process SIGSTOPped."""
    args = run.args
    timeout, ping = SETTINGS[setting_name]
    n, g, cut = args.scale_sessions, args.scale_gateways, args.scale_cut
    nodes = [chr(ord("a") + i) for i in range(g)]
    log(f"scale: {n} sessions over {g} gateways, {cut} of them SIGSTOPped; liveness {timeout:g} s / ping {ping:g} s")
    gws = run.gateways(nodes, "scale", SETTINGS[setting_name], BENCH_LIMITS)
    by_node = {gw.node: gw for gw in gws}
    clients: list[Proc] = []
    observers: list[Proc] = []
    try:
        rss_empty = {gw.node: rss_mb(gw.pid) for gw in gws}
        # The client side spreads itself over what /endpoints lists.
        endpoints = gws[0].endpoints()["gateways"]
        listed = [e["node"] for e in endpoints]
        if sorted(listed) != sorted(nodes):
            raise BenchError(f"/endpoints lists {listed}, expected {nodes}")
        # Client processes: the cut one (its own source address) on the first gateway listed,
        # then processes of at most CLIENTS_PER_PROCESS given the listed gateways in turn,
        # sized so that every gateway ends with n / g sessions.
        share = [n // g + (1 if i < n % g else 0) for i in range(g)]
        plan = [(0, cut, "cut-", [CUT_SOURCE])]
        left_over = list(share)
        left_over[0] -= cut
        per_gateway_procs = max(-(-x // CLIENTS_PER_PROCESS) for x in left_over)
        for j in range(per_gateway_procs):
            for i in range(g):
                count = left_over[i] // (per_gateway_procs - j)
                left_over[i] -= count
                if count:
                    plan.append((i, count, f"s{i}p{j}-", CLIENT_SOURCES))
        life = 900 + n / 20
        # Observers first: sessions on the gateway listed i are watched from the one listed i + 1.
        for i in range(g):
            watcher = endpoints[(i + 1) % g]
            rooms = [(prefix, count) for gi, count, prefix, _ in plan if gi == i]
            observers.append(run.observer(watcher["websocket"], watcher["cert_sha256"], rooms,
                                          ROOMS_PER_OBSERVER_SESSION, life, f"observer-scale-{endpoints[i]['node']}"))
        run.procs.wait_ready(observers, 60 + n / 200, "observers")
        t0 = time.time()
        placement: dict[str, int] = {}
        cut_proc = None
        for gi, count, prefix, sources in plan:
            e = endpoints[gi]
            proc = run.clients(e["websocket"], e["cert_sha256"], prefix, count, 1, sources, life, ping,
                               f"clients-{prefix.rstrip('-')}")
            proc.plan = (e["node"], count, prefix)  # type: ignore[attr-defined]
            placement[e["node"]] = placement.get(e["node"], 0) + count
            clients.append(proc)
            if prefix == "cut-":
                cut_proc = proc
        readies = run.procs.wait_ready(clients, 120 + n / 40, f"{n} clients")
        connected = sum(r["connected"] for r in readies)
        setup_s = round(time.time() - t0, 1)

        def joined_count() -> int:
            return sum(len(peers_of(o.events.poll(), "joined")) for o in observers)
        all_seen = wait_for(lambda: joined_count() >= connected, 120, interval=1.0)
        log(f"  {connected}/{n} sessions connected in {setup_s} s ({placement}); {joined_count()} seen joined by observers")
        sessions_metric = {gw.node: {k: v for k, v in gw.metrics().items() if k.startswith("signalgate_sessions")} for gw in gws}
        # Idle: CPU over --scale-quiet seconds, then RSS and descriptors.
        meter = CpuMeter({**{f"gateway_{gw.node}": [gw.pid] for gw in gws},
                          "clients": [p.pid for p in clients], "observers": [o.pid for o in observers],
                          "nats": run.nats.pids()})
        meter.start()
        time.sleep(args.scale_quiet)
        cpu_idle = meter.stop()
        per_gateway = {gw.node: {"sessions": placement.get(gw.node, 0), "rss_empty_mb": rss_empty[gw.node],
                                 "rss_idle_mb": rss_mb(gw.pid), "fds": fd_count(gw.pid),
                                 "cpu_idle_percent": cpu_idle[f"gateway_{gw.node}"]} for gw in gws}
        log(f"  idle {cpu_idle['seconds']} s: " + ", ".join(
            f"{node}: {v['sessions']} sessions, RSS {v['rss_idle_mb']} MB, {v['fds']} fds, CPU {v['cpu_idle_percent']} %"
            for node, v in per_gateway.items())
            + f"; clients {cpu_idle['clients']} %, observers {cpu_idle['observers']} %, NATS {cpu_idle['nats']} %, others {cpu_idle['others']} %")
        cut_watcher = observers[0]
        before_stop = time.time()

        def cut_room(room: str) -> bool:
            return room.startswith("cut-")
        false_before = sum(len(peers_of(o.events.poll(), "unreachable", 0, lambda r: not cut_room(r))) for o in observers)

        # The silent peer: SIGSTOP the whole process (every thread).
        t_stop = time.time()
        os.killpg(cut_proc.pid, signal.SIGSTOP)
        cut_proc.sigstopped = True
        log(f"  SIGSTOP to the client process holding the {cut} 'cut-' sessions on {endpoints[0]['node']} (pid {cut_proc.pid})")
        meter.start()
        wait_for(lambda: len(peers_of(cut_watcher.events.poll(), "unreachable", t_stop, cut_room)) >= cut, timeout + 10)
        # Keep watching for one more timeout: false positives elsewhere would show now.
        time.sleep(min(timeout, 10))
        cpu_after = meter.stop()
        detected = peers_of(cut_watcher.events.poll(), "unreachable", t_stop, cut_room)
        others_unreachable = {}
        for o in observers:
            others_unreachable.update(peers_of(o.events.poll(), "unreachable", 0, lambda r: not cut_room(r)))
        holder = by_node[endpoints[0]["node"]]
        closes = [e for e in holder.log_events(CONN_LOST)
                  if e["t"] >= t_stop and e["peer"].rsplit(":", 1)[0] == CUT_SOURCE]
        rss_end = {gw.node: rss_mb(gw.pid) for gw in gws}
        closed_early = [j for p in clients for j in p.json_lines() if j.get("event") == "client_closed" and j["t"] < t_stop]
        alive = {gw.node: gw.proc.alive() for gw in gws}
        measured_until = time.time()
        watched_s = round(measured_until - before_stop, 1)
    finally:
        for proc in clients + observers:
            run.procs.stop(proc)
        for gw in gws:
            run.procs.stop(gw.proc)
    lat = [e["t"] - t_stop for e in detected.values()]
    result = {
        "setting": setting_name, "liveness_timeout_s": timeout, "ping_interval_s": ping,
        "sessions": n, "gateways": g, "connected": connected, "setup_seconds": setup_s,
        "all_seen_joined": all_seen,
        "spread": "client side: /endpoints of gateway a lists every live gateway (URL, certificate hash); "
                  "client processes take them in turn (the SIGSTOP'ed one first, on the first listed)",
        "endpoints": endpoints,
        "client_processes": [{"node": p.plan[0], "sessions": p.plan[1], "prefix": p.plan[2]} for p in clients],
        "per_gateway": per_gateway, "rss_end_mb": rss_end, "gateways_alive_at_end": alive,
        "cpu_idle_percent": cpu_idle, "cpu_after_stop_percent": cpu_after,
        "sessions_metrics": sessions_metric,
        "closed_before_stop": len(closed_early),
        "closed_before_stop_examples": [c.get("error") for c in closed_early[:3]],
        "cut": {"sessions": cut, "gateway": endpoints[0]["node"], "observed_from": endpoints[1 % g]["node"],
                "how": "SIGSTOP of the client process (kernel still ACKs; no WebSocket Pong, no FIN/RST)"},
        "unreachable": {**stats(lat), "missing": cut - len(detected),
                        "reasons": {r: sum(1 for e in detected.values() if e["reason"] == r) for r in {e["reason"] for e in detected.values()}}},
        "gateway_close": {**stats([e["t"] - t_stop for e in closes]),
                          "reasons": {r: sum(1 for e in closes if e["reason"] == r) for r in {e["reason"] for e in closes}}},
        "limit_s": timeout + 0.5,
        "false_unreachable_before_stop": false_before,
        "false_unreachable_total": len(others_unreachable),
        "false_unreachable_examples": list(others_unreachable.values())[:5],
        # From the idle measurement's end to the end of the watch after the SIGSTOP.
        "watched_for_false_s": watched_s,
        "gateway_logs": {gw.node: gw.log_summary(until=measured_until) for gw in gws},
        "samples_unreachable_s": [round(x, 3) for x in sorted(lat)],
    }
    log(f"  UNREACHABLE for {len(detected)}/{cut}: {fmt_stats(result['unreachable'])} s; gateway close "
        f"{fmt_stats(result['gateway_close'])} s; false UNREACHABLE elsewhere: {len(others_unreachable)}")
    return result


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def f(value, digits: int = 3) -> str:
    return relay.fmt(value, digits)


def write_report(results: dict, out_dir: Path) -> str:
    meta = results["meta"]
    m = meta["machine"]
    lines = [
        "# Cluster benchmark",
        "",
        f"`{meta['command']}`, {meta['started'][:16].replace('T', ' ')}–{meta.get('finished', '?')[11:16]} UTC, at commit "
        f"{meta['commit']} (gateway source: {meta['gateway_commit']}{' with uncommitted changes in src/' if meta['dirty'] else ''}, "
        f"{meta.get('gateway_source_note') or 'binary built ' + meta['gateway_built'][:16].replace('T', ' ') + ' UTC'}). "
        f"Machine: {m['cpus']} cores ({m['cpu_model'] or 'unknown CPU'}, a VM), kernel {m['kernel']}, {m['rustc']}, "
        f"{meta['nats_version']}; **the 2 cores are shared by the clients, the gateways, the NATS servers and the "
        f"observers** (and by other engineers' builds: 1-min load {meta['load_start']} at the start, "
        f"{meta.get('load_end', '?')} at the end). Release builds. Loopback only.",
        "",
        "Topology: a 3-node NATS cluster (`nats-server` with routes between all three, no JetStream) and 2 or 3 "
        "`signalgate serve --cluster nats://…,nats://…,nats://… --node-id X --cluster-name NAME` gateways, each "
        "with its own development certificate; a fresh set of gateways (and a fresh cluster name) per run.",
        "",
    ]
    rl = results.get("relay", {}).get("runs", [])
    if rl:
        cfg = results["relay"]["config"]
        lines += [
            "## 1. Cross-gateway relay latency",
            "",
            f"{cfg['pairs']} sender/receiver pairs over wss, each pair alone in its own room, `Signal{{data}}` of "
            f"{cfg['bytes']} bytes at an aggregate rate (as bench/relay.py), numbered as the SDK numbers them, so "
            "each is acknowledged to its sender — across gateways only after the receiver's gateway has acknowledged "
            "it, which under load may wait up to 1 ms (\"sender's Ack\": send → the Ack covering it). **alone**: one gateway without `--cluster` (what "
            "bench/relay.py measures); **same**: a cluster of two, sender and receiver on gateway a; **cross**: "
            "sender on a, receiver on b (the receiver joins first, and each side waits to see the other in the "
            "room before anything is sent), a and b connected to *different* NATS servers (as when every host runs "
            "its own NATS node: a signal crosses a NATS route); **cross-1nats**: the same with a and b on *one* "
            "NATS server. (Each gateway is given one NATS URL here: given all three it picks one at random, and the "
            "route hop changes the figures.) Latency: one way, sender's send call to receiver's decoded frame (one "
            "process, one monotonic clock). Lost: sent − received after a drain of up to "
            f"{cfg['drain_s']:g} s. Warm-up {cfg['warmup_s']:g} s, measured {cfg['secs']:g} s; CPU: % of one core "
            "over the measured interval; \"others\": the rest of the machine's busy time (other engineers' "
            "builds and browsers). Rate limits as bench/relay.py (twice each sender's pace). "
            + (f"Each cell was run {cfg['repeat']} times, in rounds over all cells; shown is the attempt other "
               "processes disturbed least (every attempt is in results.json)." if cfg.get("repeat", 1) > 1 else ""),
            "",
            "| rate asked (/s) | topology | achieved (/s) | p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) | lost | sender's Ack p50 / p99 (ms) | never acked | gateway a CPU % | gateway b CPU % | NATS CPU % (3) | NATS messages per signal | load generator CPU % | others CPU % |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rl:
            lat = r["latency_ms"]
            ack = r.get("ack_latency_ms") or {}
            warn = " ⚠" if (r.get("others_cpu_percent") or 0) > relay.DISTURBED_PERCENT else ""
            lines.append(
                f"| {f(int(r['rate_asked']))}{warn} | {r['topology']} | {f(r['rate_achieved'], 1)} | {f(lat['p50'])} | {f(lat['p99'])} "
                f"| {f(lat['p99_9'])} | {f(lat['max'])} | {f(r['lost'])} of {f(r['sent'])} "
                f"| {f(ack.get('p50'))} / {f(ack.get('p99'))} | {f(r.get('never_acked'))} | {f(r['gateway_cpu_percent'], 1)} "
                f"| {f(r['gateway_b_cpu_percent'], 1) if r['topology'] != 'alone' else '–'} | {f(r['nats_cpu_percent'], 1)} "
                f"| {f(r.get('cluster_envelopes_per_signal'), 2)} | {f(r['loadgen_cpu_percent'], 1)} "
                f"| {f(r.get('others_cpu_percent'), 1)} |")
        every = results["relay"].get("all_attempts", [])

        def attempts_p99(rate: float, topology: str) -> str:
            values = [a["latency_ms"]["p99"] for a in every if a["rate_asked"] == rate and a["topology"] == topology]
            return " / ".join(f(v) for v in values) if len(values) > 1 else "–"
        lines += ["", "| rate (/s) | cross topology | alone p99 (ms) | same p50 / p99 (ms) | cross p50 / p99 (ms) | **added p99, cross − same (ms)** | cross − alone (ms) | goal < 1 ms | p99 of every attempt, same; cross (ms) | gateway a's `signalgate_cluster_relay_seconds` (relay → settlement): count, mean, p50 / p99 bucket |",
                  "|---:|---|---:|---|---|---:|---:|---|---|---|"]
        for rate in sorted({r["rate_asked"] for r in rl}):
            cell = {t: next((r for r in rl if r["rate_asked"] == rate and r["topology"] == t), None)
                    for t in ("alone", "same", "cross", "cross-1nats")}
            same, alone = cell["same"], cell["alone"]
            for topology in ("cross", "cross-1nats"):
                cross = cell[topology]
                if not (same and cross):
                    continue
                added = round(cross["latency_ms"]["p99"] - same["latency_ms"]["p99"], 3)
                vs_alone = round(cross["latency_ms"]["p99"] - alone["latency_ms"]["p99"], 3) if alone else None
                h = cross["gateway_a_cluster_relay_histogram"]
                lines.append(
                    f"| {f(int(rate))} | {topology} | {f(alone['latency_ms']['p99']) if alone else '–'} "
                    f"| {f(same['latency_ms']['p50'])} / {f(same['latency_ms']['p99'])} "
                    f"| {f(cross['latency_ms']['p50'])} / {f(cross['latency_ms']['p99'])} | **{f(added)}** | {f(vs_alone)} "
                    f"| {'met' if added < 1 else 'not met'} | {attempts_p99(rate, 'same')}; {attempts_p99(rate, topology)} "
                    f"| {f(h['count'])}, {f(h['mean_ms'])} ms, ≤ {f(h['p50_le_ms'])} / ≤ {f(h['p99_le_ms'])} ms |")
        notes = []
        for r in rl:
            label = f"{f(int(r['rate_asked']))}/s {r['topology']}"
            other = {k: v for k, v in r.get("other_frames", {}).items() if k not in ("receiver:PeerJoined", "sender:PeerJoined", "sender:Ack")}
            if other:
                notes.append(f"- {label}: frames besides the signals and Acks: {other}")
            if r.get("connections_closed"):
                notes.append(f"- {label}: {r['connections_closed']} connections closed, e.g. {r['closed_examples'][:2]}")
            for node, logsum in r["gateway_logs"].items():
                if logsum["warn_error_messages"]:
                    notes.append(f"- {label}: gateway {node} WARN/ERROR during the run: {logsum['warn_error_messages']}")
            if r["topology"] != "alone":
                notes.append(f"- {label}: gateways' NATS servers: {dict(sorted(r['nats_connections'].items()))}; "
                             f"envelopes published by the gateways: {f(r.get('cluster_envelopes_sent'))}")
        if any((r.get("others_cpu_percent") or 0) > relay.DISTURBED_PERCENT for r in rl):
            notes.append(f"- ⚠: other processes used more than {relay.DISTURBED_PERCENT:g} % of a core during that run: "
                         "its tail is that of a busy machine")
        lines += ["", "Notes:", "", *notes, ""]

    lost = results.get("lost", [])
    if lost:
        lines += [
            "## 2. A killed gateway: time until its sessions are UNREACHABLE elsewhere",
            "",
            "Gateway b holds the sessions (idle WebSocket clients, `signalgate-bench clients`, rooms of "
            f"{lost[0]['room_size']}); gateway a holds one observer session per room (`signalgate-bench observer`, "
            "joined before the clients). After an idle period and a random wait of up to one ping interval (so each "
            "kill meets the gateways' exchange at another phase), `kill -9` of b; at a's observers, seconds from the "
            "kill to each session's PeerState UNREACHABLE (reason GATEWAY_LOST), and to its PeerLeft after the "
            "resume window. Then a fresh session on a joins every room and lists the members (\"ghosts\": members "
            "of b still listed). Fresh gateways for every kill.",
            "",
            "| liveness / ping | kill | sessions on b | UNREACHABLE received | min / p50 / **p99** / max (s) | goal p99 ≤ | a declared b lost after (s) | b silent then (ms) | fan-out after the declaration, p50 / max (s) | LEFT received (resume window) | LEFT min / p50 / max (s) | ghosts after | cluster_nodes at a after |",
            "|---|---:|---:|---:|---|---:|---:|---:|---|---:|---|---:|---:|",
        ]
        for r in lost:
            u, le = r["unreachable"], r["left"]
            d = r["gateway_a_declared_b_lost"]
            fo = r.get("fan_out_s", {})
            reasons = ", ".join(f"{k.replace('REASON_', '')} {v:,}" for k, v in u["reasons"].items())
            left_reasons = ", ".join(f"{k.replace('REASON_', '')} {v:,}" for k, v in le["reasons"].items())
            lines.append(
                f"| {r['liveness_timeout_s']:g} s / {r['ping_interval_s']:g} s | {r.get('repeat', 1)} | {f(r['connected'])} "
                f"| {f(u['count'])} ({reasons}) | {fmt_stats(u)} | {r['limit_s']:g} s "
                f"({'met' if u.get('count') and u['p99'] <= r['limit_s'] and not u['missing'] else 'not met'}) "
                f"| {', '.join(str(x['after_kill_s']) for x in d) or '–'} | {', '.join(str(x['silent_for_ms']) for x in d) or '–'} "
                f"| {f(fo.get('p50'))} / {f(fo.get('max'))} | {f(le['count'])} ({left_reasons}; {r['resume_window_s']:g} s) "
                f"| {f(le.get('min'))} / {f(le.get('p50'))} / {f(le.get('max'))} | {r['ghosts_after']} | {f(r['gateway_a_after']['cluster_nodes'])} |")
        for setting in dict.fromkeys(r["setting"] for r in lost):
            runs = [r for r in lost if r["setting"] == setting]
            if len(runs) > 1:
                pooled = stats([x for r in runs for x in r["samples_unreachable_s"]])
                lines.append(
                    f"| {runs[0]['liveness_timeout_s']:g} s / {runs[0]['ping_interval_s']:g} s | **all {len(runs)}** "
                    f"| {f(sum(r['connected'] for r in runs))} | {f(pooled['count'])} | **{fmt_stats(pooled)}** | {runs[0]['limit_s']:g} s "
                    f"({'met' if pooled['p99'] <= runs[0]['limit_s'] and not any(r['unreachable']['missing'] for r in runs) else 'not met'}) "
                    f"| | | | {f(sum(r['left']['count'] for r in runs))} | | {sum(r['ghosts_after'] for r in runs)} | |")
        lines += [""]
        for r in lost:
            c = r["cpu_idle_percent"]
            lines.append(
                f"- {r['setting']} kill {r.get('repeat', 1)}: idle before the kill ({c['seconds']} s): gateway a {c['gateway_a']} %, "
                f"b {c['gateway_b']} %, clients {c['clients']} %, observer {c['observer']} %, NATS {c['nats']} %, others {c['others']} %; "
                f"RSS a {r['rss_idle']['gateway_a_mb']} MB, b {r['rss_idle']['gateway_b_mb']} MB; UNREACHABLE before the kill: "
                f"{r['unreachable_before_kill']}; repeated UNREACHABLE events: {r['unreachable']['repeated_events']}; "
                f"members listed after the window: {r['members_listed_after']} in {r['rooms_listed_after']} rooms (the observers)")
            for node, logsum in r["gateway_logs"].items():
                if logsum["warn_error_messages"]:
                    lines.append(f"  - gateway {node} WARN/ERROR: {logsum['warn_error_messages']}")
        lines += [""]

    sc = results.get("scale", [])
    if sc:
        lines += [
            "## 3. One box, more sessions than one process holds",
            "",
            "Idle WebSocket sessions over several gateways; each process may hold 20,000 descriptors. **Spread by the "
            "client side**: the orchestrator reads `/endpoints` from gateway a (it lists every live gateway with its "
            "WebSocket URL and certificate hash) and gives the client processes (≤ 5,000 sessions each, source "
            "addresses 127.0.0.2–17) those gateways in turn; each process connects where it was told, as an SDK "
            "picks one gateway per client. No SO_REUSEPORT: each gateway has its own port. Every session is in its "
            "own room, watched by an observer connected to the *next* gateway listed (so every session is also a "
            "cross-gateway member).",
            "",
            "**The silent peer**: one client process holding 100 sessions (source 127.0.0.250, on the first gateway "
            "listed) is SIGSTOPped. Its TCP connections stay open and its kernel still ACKs, but the gateway's "
            "WebSocket Pings need Pongs from the process (tungstenite answers them in user space), which a stopped "
            "process cannot send, and it sends no FIN or RST: for signalgate's liveness it is a silent peer, like a "
            "cut. (On loopback the gateway does not count bare TCP ACKs as life: `--tcp-ack-evidence auto` uses them "
            "only for public peer addresses, so the stopped process's ACKs do not delay the verdict.) Killing the "
            "process instead would not be a cut: its kernel would send FIN/RST.",
            "",
        ]
        for r in sc:
            lines += [
                f"### {f(r['connected'])} sessions over {r['gateways']} gateways, liveness {r['liveness_timeout_s']:g} s / ping {r['ping_interval_s']:g} s",
                "",
                f"Setup {r['setup_seconds']} s; client processes: "
                + ", ".join(f"{p['prefix'].rstrip('-')}→{p['node']} ({f(p['sessions'])})" for p in r["client_processes"]) + ".",
                "",
                "| gateway | sessions | RSS empty (MB) | RSS idle with sessions (MB) | descriptors | CPU idle (% of a core) |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for node, v in r["per_gateway"].items():
                lines.append(f"| {node} | {f(v['sessions'])} | {f(v['rss_empty_mb'], 1)} | {f(v['rss_idle_mb'], 1)} | {f(v['fds'])} | {f(v['cpu_idle_percent'], 1)} |")
            c = r["cpu_idle_percent"]
            lines += [
                "",
                f"Over the same {c['seconds']} s: client processes {c['clients']} %, observers {c['observers']} %, "
                f"NATS (3) {c['nats']} %, others {c['others']} %, whole machine {c['machine']} % (of 200).",
                "",
                "| silent sessions | on / observed from | UNREACHABLE received | min / p50 / **p99** / max (s) | goal p99 ≤ | gateway's own close, min / p50 / p99 / max (s) | false UNREACHABLE among the other sessions |",
                "|---:|---|---:|---|---:|---|---:|",
                f"| {r['cut']['sessions']} | {r['cut']['gateway']} / {r['cut']['observed_from']} | {f(r['unreachable']['count'])} {r['unreachable'].get('reasons', {})} "
                f"| {fmt_stats(r['unreachable'])} | {r['limit_s']:g} s ({'met' if r['unreachable'].get('count') and r['unreachable']['p99'] <= r['limit_s'] and not r['unreachable']['missing'] else 'not met'}) "
                f"| {fmt_stats(r['gateway_close'])} {r['gateway_close'].get('reasons', {})} | {r['false_unreachable_total']} of {f(r['connected'] - r['cut']['sessions'])} (watched {r['watched_for_false_s']} s) |",
                "",
            ]
            if r["closed_before_stop"]:
                lines.append(f"- {r['closed_before_stop']} client sessions closed before the SIGSTOP, e.g. {r['closed_before_stop_examples']}")
            for node, logsum in r["gateway_logs"].items():
                if logsum["warn_error_messages"]:
                    lines.append(f"- gateway {node} WARN/ERROR: {logsum['warn_error_messages']}")
            lines.append("")
    for e in results.get("errors", []):
        lines.append(f"- error: {e}")
    lines += ["Every figure and sample: [results.json](results.json).", ""]
    text = "\n".join(lines)
    (out_dir / "report.md").write_text(text)
    return text


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def build(target_dir: Path) -> None:
    log(f"building signalgate and signalgate-bench (release, target dir {target_dir})")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "signalgate", "-p", "signalgate-bench"],
                   cwd=ROOT, check=True, timeout=1800, env=dict(os.environ, CARGO_TARGET_DIR=str(target_dir)))


def main() -> int:
    ap = argparse.ArgumentParser(description="signalgate cluster benchmark (no root needed; needs nats-server)")
    ap.add_argument("--only", default="relay,lost,scale", help="comma separated: relay, lost, scale")
    ap.add_argument("--smoke", action="store_true", help="small sizes, 2 s liveness: < 60 s after the build")
    g1 = ap.add_argument_group("1. relay")
    g1.add_argument("--rates", default="1000,10000", help="aggregate signals/s, comma separated")
    g1.add_argument("--secs", type=float, default=10.0)
    g1.add_argument("--warmup", type=float, default=2.0)
    g1.add_argument("--drain", type=float, default=3.0)
    g1.add_argument("--pairs", type=int, default=100)
    g1.add_argument("--bytes", type=int, default=200)
    g1.add_argument("--repeat", type=int, default=1, help="rounds over every cell; per cell the least disturbed is shown")
    g1.add_argument("--topologies", default="alone,same,cross,cross-1nats",
                    help="alone (one gateway, no --cluster); in a cluster of two: same (sender and receiver on gateway a), "
                         "cross (receiver on b; a and b on different NATS servers), cross-1nats (a and b on the same NATS server)")
    g1.add_argument("--wait-quiet", type=float, default=120, help="before each relay run, wait up to this many s for a quiet machine")
    g1.add_argument("--quiet-below", type=float, default=25, help="quiet: less than this %% of one core busy")
    g1.add_argument("--quiet-hold", type=float, default=10, help="... for this many seconds in a row")
    g2 = ap.add_argument_group("2. lost")
    g2.add_argument("--lost-sessions", type=int, default=5000)
    g2.add_argument("--lost-room-size", type=int, default=100)
    g2.add_argument("--lost-settings", default="aggressive,default", help="aggressive (2 s / 0.8 s), default (10 s / 4 s)")
    g2.add_argument("--resume-window", type=float, default=5.0, help="the gateways' --resume-window, s")
    g2.add_argument("--lost-repeat", type=int, default=3, help="kills per setting (each with fresh gateways, at a random phase)")
    g3 = ap.add_argument_group("3. scale")
    g3.add_argument("--scale-sessions", type=int, default=40200)
    g3.add_argument("--scale-gateways", type=int, default=3)
    g3.add_argument("--scale-cut", type=int, default=100, help="sessions of the SIGSTOPped client process")
    g3.add_argument("--scale-settings", default="default")
    g3.add_argument("--scale-quiet", type=float, default=20.0, help="idle seconds measured before the SIGSTOP")
    ap.add_argument("--out", type=Path, default=None, help=f"results directory (default {RESULTS.relative_to(ROOT)}, a temp dir with --smoke)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--target-dir", type=Path, default=Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")),
                    help="cargo target dir of the release binaries (default $CARGO_TARGET_DIR or ./target)")
    ap.add_argument("--keep-logs", action="store_true", help="keep every process's output (printed path)")
    args = ap.parse_args()

    if args.smoke:
        args.rates, args.secs, args.warmup, args.drain, args.repeat, args.wait_quiet = "1000", 2.0, 1.0, 2.0, 1, 0
        args.lost_sessions, args.lost_room_size, args.lost_settings, args.resume_window = 200, 100, "aggressive", 3.0
        args.lost_repeat, args.topologies = 1, "same,cross"
        args.scale_sessions, args.scale_cut, args.scale_settings, args.scale_quiet = 600, 20, "aggressive", 3.0
    args.rate_list = [float(x) for x in args.rates.replace("_", "").split(",") if x]
    args.topologies = [t for t in args.topologies.split(",") if t]
    known = {"alone", "same", "cross", "cross-1nats"}
    if set(args.topologies) - known:
        ap.error(f"--topologies: unknown {sorted(set(args.topologies) - known)}")
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = only - {"relay", "lost", "scale"}
    if unknown:
        ap.error(f"--only: unknown {sorted(unknown)}")
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="sg-cluster-smoke-")) if args.smoke else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)

    interrupt_on_signals()

    target = args.target_dir.resolve()
    if not args.no_build:
        build(target)
    gw_bin, bench_bin = target / "release" / "signalgate", target / "release" / "signalgate-bench"
    for binary in (gw_bin, bench_bin):
        if not binary.exists():
            raise BenchError(f"{binary} is missing (build it, or drop --no-build)")

    workdir = Path(tempfile.mkdtemp(prefix="sg-cluster-"))
    procs = Procs(workdir, env={"NO_COLOR": "1"})
    results: dict = {
        "meta": {
            "command": shlex.join(["python3", "bench/cluster.py", *sys.argv[1:]]),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": relay.sh("git", "rev-parse", "--short", "HEAD"),
            "gateway_commit": relay.sh("git", "log", "-1", "--format=%h", "--", ":/src", ":/proto", ":/build.rs", ":/Cargo.toml"),
            "dirty": bool(relay.sh("git", "status", "--porcelain", "--untracked-files=no", "--", ":/src", ":/proto", ":/build.rs", ":/Cargo.toml")),
            "gateway_bin": str(gw_bin),
            "gateway_built": dt.datetime.fromtimestamp(gw_bin.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds"),
            "load_start": round(os.getloadavg()[0], 2),
            "machine": relay.machine(),
            "smoke": args.smoke,
        },
    }
    if args.no_build:
        # The binary may be older than the checkout: its source is not known here.
        results["meta"]["gateway_commit"] = "unknown (--no-build)"
        results["meta"]["dirty"] = False
    with Guarded(procs, results, log) as guard:
        nats = Nats(procs)
        results["meta"]["nats_version"] = nats.version
        log(f"NATS cluster up ({nats.version}): {nats.urls()}")
        run = Run(args, procs, nats, gw_bin, bench_bin)
        if "relay" in only:
            results["relay"] = {"config": {"rates": args.rate_list, "topologies": args.topologies, "secs": args.secs, "warmup_s": args.warmup,
                                           "drain_s": args.drain, "pairs": args.pairs, "bytes": args.bytes,
                                           "repeat": args.repeat, "liveness": SETTINGS["default"]},
                                "runs": [], "all_attempts": []}
            relay_scenario(run, results)
        if "lost" in only:
            results["lost"] = []
            for setting in [s for s in args.lost_settings.split(",") if s]:
                for repeat in range(args.lost_repeat):
                    results["lost"].append(lost_once(run, setting, repeat + 1))
        if "scale" in only:
            results["scale"] = []
            for setting in [s for s in args.scale_settings.split(",") if s]:
                results["scale"].append(scale_once(run, setting))
    status = guard.status
    publish(results, out_dir, write_report, workdir, args.keep_logs)
    log(f"results in {out_dir} ({results['meta']['duration_s']} s)")
    return status


if __name__ == "__main__":
    run_main(main, "cluster.py")
