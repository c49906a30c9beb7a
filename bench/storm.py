#!/usr/bin/env python3
"""Reconnect storm benchmark (issue 16): thousands of clients at the gateway's door at once.

Two scenarios, each over WebSocket/TLS (ws) and WebTransport (wt), each with a fresh gateway
on loopback (`signalgate serve` with its defaults, except: no per-source limits — every client
comes from a handful of loopback addresses —, liveness 2 s / 0.8 s, room and rate limits for
the observer):

1. **restart**: N sessions (`signalgate-bench storm`, each in its own room) on a gateway that
   is killed (SIGKILL) and started again at once on the same port with the same
   --dev-cert-dir (so the certificate, and its hash, stay). Every session reconnects at once
   when it finds its connection lost — a fresh Hello and Join; a failed attempt is retried
   after 100–300 ms (jittered), with no other gate. Over TCP the dead gateway's kernel tells
   the clients (FIN/RST); over QUIC nothing does (a restarted gateway's stateless resets carry
   another key), so the WebTransport clients find out as the JS SDK does: an app Ping every
   ping interval, lost after the liveness timeout without a frame (until the first loss
   only: on one machine the clients' own Pings would take CPU from the gateway). Measured: from the
   restart (the new gateway's spawn) until each session is welcomed and joined again
   (p50/p99/max, and the last one), the detection, the attempts, the kernel's TcpExt
   ListenOverflows / ListenDrops (and SYN-queue and UDP drop counters) over the storm, and the
   listener's accept queue (sampled every 5 ms with inet_diag, as `ss -lt` reads it).
2. **arrival**: a running gateway with K "stayer" sessions (`signalgate-bench clients`, quiet,
   answering probes in their network stack) watched by `signalgate-bench observer` (which
   stamps every presence change); then N new sessions arrive at the same instant
   (`storm --at-once`, several processes started together). Measured: time from that instant
   to each new session joined, the kernel counters, and **false UNREACHABLE among the
   stayers** (the storm's handshakes must not starve the established sessions' probes).
   After each storm the run waits `--aftermath` seconds (2 liveness timeouts) for late
   false deaths (a stayer, or a session that had just rejoined, declared dead).

Sizes: 10,000 WebSocket sessions for the restart, 5,000 arriving onto 1,000 stayers; 2,000
WebTransport sessions for both. The WebTransport client (src/client) opens one QUIC endpoint —
its own UDP socket, driver task and receive buffers — per session: at 5,000 reconnecting at once
the client process alone used ~57 s of CPU in 39 s on this 2-core machine and starved the
gateway (only 512 of 5,000 rejoined within 30 s), at 3,000 the storm took 7.7 s at p99, at
2,000 it works (see bench/README.md, "Reconnect storm").

It writes report.md and results.json (default bench/results/storm). `--smoke` (200 sessions,
50 stayers, both scenarios and transports, ~30 s after the build) exits 1 when a session was
not (re)joined or anything was declared dead. Python 3 standard library only; no root
(loopback, source addresses 127.0.0.2-17 for the storm and 127.0.0.30-33 for the stayers);
a process holds at most 20,000 descriptors, so sessions are split over processes of
`--per-process` (default 5,000). Every process is bounded in time (`--max-secs`) and stopped on
every exit path (normal end, error, Ctrl-C, SIGTERM).

    python3 bench/storm.py                          # everything (~4 min on 2 cores)
    python3 bench/storm.py --smoke                  # CI: small, ws and wt, exit 1 on failure
    python3 bench/storm.py --scenarios restart --transports ws --restart-ws 10000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import re
import resource
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ in the work tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import BenchError, Guarded, interrupt_on_signals, Proc, Procs, prometheus_samples, publish, read_jsonl, run_main  # noqa: E402  (bench/procs.py)
from relay import wait_quiet  # noqa: E402  (bench/relay.py)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "storm"

STORM_SOURCES = [f"127.0.0.{i}" for i in range(2, 18)]  # spreads the ephemeral ports
STAYER_SOURCES = [f"127.0.0.{i}" for i in range(30, 34)]
STORM_PREFIX, STAYER_PREFIX = "storm-", "stay-"
# The observer joins up to 1,000 rooms per session (and is told of every stayer at once).
BENCH_LIMITS = [
    "--max-connections-per-ip", "0",
    "--new-connections-per-ip-per-sec", "0",
    "--max-rooms-per-session", "1000",
    "--rate-limit", "100000",
    "--rate-burst", "100000",
    "--outbound-queue", "65536",
]
KERNEL_COUNTERS = [
    "TcpExt.ListenOverflows", "TcpExt.ListenDrops", "TcpExt.TCPReqQFullDrop",
    "TcpExt.TCPReqQFullDoCookies", "TcpExt.SyncookiesSent", "TcpExt.TCPBacklogDrop",
    "Udp.RcvbufErrors", "Udp.InErrors",
]
METRIC_PREFIXES = (
    "signalgate_connections_accepted_total", "signalgate_connections_refused_total",
    "signalgate_handshake_failures_total", "signalgate_quic_retries_total",
    "signalgate_liveness_stalls_total", "signalgate_connections_closed_total",
    "signalgate_sessions{", "signalgate_sessions ", "signalgate_sessions_opened_total",
)
GOAL_SECONDS = 2.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*cmd: str) -> str:
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def free_port() -> int:
    """A port free for TCP and UDP on 127.0.0.1 and UDP on [::1] (the gateway binds all
    three), below the ephemeral range so that no client takes it meanwhile."""
    for _ in range(200):
        port = random.randint(20000, 30000)
        socks = []
        try:
            for family, kind, host in ((socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1"),
                                       (socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1"),
                                       (socket.AF_INET6, socket.SOCK_DGRAM, "::1")):
                s = socket.socket(family, kind)
                socks.append(s)
                s.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise BenchError("no free port")


def kernel_counters() -> dict[str, int]:
    """TcpExt (/proc/net/netstat) and Udp (/proc/net/snmp) counters of this network namespace."""
    out: dict[str, int] = {}
    for path in ("/proc/net/netstat", "/proc/net/snmp"):
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for names, values in zip(lines[::2], lines[1::2]):
            prefix, _, names = names.partition(":")
            _, _, values = values.partition(":")
            for name, value in zip(names.split(), values.split()):
                try:
                    out[f"{prefix}.{name}"] = int(value)
                except ValueError:
                    pass
    return out


def counter_deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in KERNEL_COUNTERS if k in after}


def cpu_secs(pid: int) -> float | None:
    """User + system CPU of a process so far (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def quantiles(values: list[float]) -> dict:
    """count, p50 / p99 / max (nearest rank), seconds to the millisecond."""
    v = sorted(values)
    if not v:
        return {"count": 0, "p50": None, "p99": None, "max": None}

    def rank(p: float) -> float:
        return round(v[min(len(v), max(1, math.ceil(p / 100 * len(v) - 1e-9))) - 1], 3)
    return {"count": len(v), "p50": rank(50), "p99": rank(99), "max": rank(100)}


class ListenQueue(threading.Thread):
    """Samples the accept queue of the TCP listener on `port` every `every` s through
    inet_diag (netlink, what `ss -lt` shows as Recv-Q; the backlog is its Send-Q), without a
    process per sample. Keeps the largest queue seen and the backlog."""

    def __init__(self, port: int, every: float = 0.005):
        super().__init__(daemon=True)
        self.port, self.every = port, every
        self.max_queue, self.backlog, self.samples, self.error = 0, None, 0, None
        self.stopped = threading.Event()

    def query(self, sock: socket.socket, seq: int) -> list[tuple[int, int]]:
        # nlmsghdr + inet_diag_req_v2: AF_INET, TCP, states = 1 << TCP_LISTEN, no socket id.
        request = struct.pack("=LHHLL", 16 + 56, 20, 0x301, seq, 0)
        request += struct.pack("=BBBBL", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << 10) + bytes(48)
        sock.send(request)
        found = []
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=LH", data, offset)
                if kind == 3:  # NLMSG_DONE
                    return found
                if kind == 2:  # NLMSG_ERROR
                    raise OSError("inet_diag refused the request")
                if kind == 20:  # inet_diag_msg: id at +4 (sport first, big-endian); rqueue, wqueue at +56
                    body = offset + 16
                    sport = struct.unpack_from(">H", data, body + 4)[0]
                    if sport == self.port:
                        found.append(struct.unpack_from("=LL", data, body + 56))
                if length == 0:
                    return found
                offset += (length + 3) & ~3

    def run(self) -> None:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)  # NETLINK_INET_DIAG
        except OSError as error:
            self.error = str(error)
            return
        seq = 0
        with sock:
            while not self.stopped.is_set():
                seq += 1
                try:
                    for rqueue, wqueue in self.query(sock, seq):
                        self.max_queue = max(self.max_queue, rqueue)
                        self.backlog = wqueue
                    self.samples += 1
                except OSError as error:
                    self.error = str(error)
                    return
                self.stopped.wait(self.every)

    def stop(self) -> dict:
        self.stopped.set()
        self.join(timeout=2)
        return {"accept_queue_max": self.max_queue, "backlog": self.backlog, "samples": self.samples,
                "error": self.error}


class Gateway:
    """`signalgate serve` on loopback; `restart()` starts another one on the same port with
    the same certificate directory after the first was killed."""

    def __init__(self, run: "Run", name: str):
        self.run, self.name = run, name
        self.port = free_port()
        self.cert_dir = run.procs.workdir / f"certs-{name}"
        self.proc: Proc | None = None
        self.sha256 = ""
        self.starts: list[dict] = []
        self.start()

    def argv(self, metrics_port: int) -> list[str]:
        timeout, ping = self.run.args.liveness
        a = self.run.args
        return [
            str(self.run.gw_bin), "serve",
            "--listen", f"127.0.0.1:{self.port}",
            "--http-listen", "off",
            "--metrics-listen", f"127.0.0.1:{metrics_port}",
            "--dev-cert-dir", str(self.cert_dir),
            "--liveness-timeout", f"{int(timeout * 1000)}ms",
            "--ping-interval", f"{int(ping * 1000)}ms",
            *BENCH_LIMITS,
            *(["--max-handshakes", str(a.max_handshakes)] if a.max_handshakes else []),
            *(["--listen-backlog", str(a.listen_backlog)] if a.listen_backlog else []),
            *(["--max-pending-hellos", str(a.max_pending_hellos)] if a.max_pending_hellos else []),
            *a.gateway_arg,
            "--log", "info",
        ]

    def start(self) -> dict:
        self.metrics_port = free_port()
        argv = self.argv(self.metrics_port)
        t_spawn = time.time()
        self.proc = self.run.procs.spawn(f"gateway-{self.name}-{len(self.starts)}", argv)
        deadline = time.time() + 30
        while True:
            found = [line for line in self.proc.lines() if " sha256 " in line]
            if found:
                t_up = time.time()
                sha = found[0].split()[-1]
                break
            if not self.proc.alive() or time.time() > deadline:
                raise BenchError(f"gateway {self.name} did not start: {self.proc.err.read_text(errors='replace')[-2000:]}")
            time.sleep(0.002)
        if self.sha256 and sha != self.sha256:
            raise BenchError(f"gateway {self.name} came back with another certificate ({sha})")
        self.sha256 = sha
        start = {"t_spawn": t_spawn, "t_listening": self.first_log_time(), "t_up_seen": t_up,
                 "argv": argv, "pid": self.proc.pid}
        self.starts.append(start)
        return start

    def first_log_time(self) -> float | None:
        """The first log line's timestamp: written after the listeners were bound (the
        'authentication is OFF' warning), before the accept loops start."""
        assert self.proc is not None
        for line in self.proc.err.read_text(errors="replace").splitlines():
            try:
                return dt.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
            except (ValueError, IndexError):
                continue
        return None

    def kill(self) -> float:
        """SIGKILL, waited for; returns when the signal was sent."""
        assert self.proc is not None
        t = time.time()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.popen.wait(timeout=30)
        self.run.procs.stop(self.proc)  # forgets it
        return t

    def url(self, transport: str) -> str:
        return f"wss://127.0.0.1:{self.port}/ws" if transport == "ws" else f"https://127.0.0.1:{self.port}/wt"

    def metrics(self) -> dict[str, float]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
                body = r.read().decode()
        except OSError:
            return {}
        return prometheus_samples(body, METRIC_PREFIXES)

    def log_summary(self) -> dict:
        """Log lines by level; WARN/ERROR messages with numbers folded."""
        assert self.proc is not None
        levels: dict[str, int] = {}
        messages: dict[str, int] = {}
        pattern = re.compile(r"^\S+\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s+(.*)$")
        for line in self.proc.err.read_text(errors="replace").splitlines():
            m = pattern.match(line)
            if not m:
                continue
            level, text = m.groups()
            levels[level] = levels.get(level, 0) + 1
            if level in ("WARN", "ERROR") and "authentication is OFF" not in text:
                key = f"{level} {re.sub(r'[0-9]+', 'N', text)[:160]}"
                messages[key] = messages.get(key, 0) + 1
        return {"lines_by_level": levels, "warn_error": messages}


class Run:
    def __init__(self, args, procs: Procs, gw_bin: Path, bench_bin: Path):
        self.args, self.procs, self.gw_bin, self.bench_bin = args, procs, gw_bin, bench_bin

    def storms(self, gw: Gateway, transport: str, n: int, tag: str, at_once: bool = False,
               start_at: float | None = None) -> list[Proc]:
        """`storm` processes holding n sessions together (rooms storm-0 …), each with its own
        share of the source addresses and its own records file."""
        a = self.args
        k = max(1, math.ceil(n / a.per_process))
        timeout, ping = a.liveness
        procs = []
        for i in range(k):
            first = i * n // k
            count = (i + 1) * n // k - first
            sources = STORM_SOURCES[i::k] or STORM_SOURCES
            argv = [
                str(self.bench_bin), "storm", "--url", gw.url(transport), "--cert-sha256", gw.sha256,
                "--count", str(count), "--first", str(first), "--room-prefix", STORM_PREFIX,
                "--bind", ",".join(sources), "--concurrency", str(a.concurrency),
                "--records", str(self.procs.workdir / f"{tag}-{i}.records.jsonl"),
                "--storm-timeout", str(a.storm_timeout), "--max-secs", str(a.max_secs),
                "--retry-min-ms", str(a.retry_ms[0]), "--retry-max-ms", str(a.retry_ms[1]),
            ]
            if at_once:
                argv += ["--at-once", "--start-at", f"{start_at:.6f}"]
            elif transport == "wt":
                # As the JS SDK: an app Ping every ping interval, dead after the timeout.
                argv += ["--ping-ms", str(int(ping * 1000)), "--dead-after-ms", str(int(timeout * 1000))]
            procs.append(self.procs.spawn(f"{tag}-{i}", argv))
        return procs

    def wait_storm_lines(self, procs: list[Proc], timeout: float) -> list[dict]:
        return Procs.wait_for_event(procs, "storm", timeout, "no storm line", poll=0.02)

    def records(self, tag: str, procs: list[Proc]) -> list[dict]:
        out = []
        for i in range(len(procs)):
            out += read_jsonl(self.procs.workdir / f"{tag}-{i}.records.jsonl")
        return out


def merge_errors(lines: list[dict], key: str = "errors") -> list:
    """The storm lines' counts of error kinds, summed over processes, most frequent first."""
    errors: dict[str, int] = {}
    for line in lines:
        for text, count in line.get(key, []):
            errors[text] = errors.get(text, 0) + count
    return sorted(errors.items(), key=lambda kv: -kv[1])[:12]


def lost_after(procs: list[Proc]) -> list[dict]:
    return [j for p in procs for j in p.json_lines() if j.get("event") == "lost_after"]


def storm_figures(records: list[dict], t0: float, key_from: str | None = None) -> dict:
    """Per session, seconds from t0 (or from the record's own `key_from`) to each stage."""
    settled = [r for r in records if r.get("t_joined") and not r.get("down")]

    def base(r):
        return r[key_from] if key_from else t0
    return {
        "joined": quantiles([r["t_joined"] - base(r) for r in settled]),
        "welcome": quantiles([r["t_welcome"] - base(r) for r in settled]),
        "connected": quantiles([r["t_connected"] - base(r) for r in settled]),
    }


def restart_once(run: Run, transport: str, n: int) -> dict:
    a = run.args
    tag = f"restart-{transport}"
    log(f"{tag}: {n:,} sessions")
    gw = Gateway(run, tag)
    storms = run.storms(gw, transport, n, tag)
    readies = run.procs.wait_ready(storms, a.open_timeout, f"{tag}: {n} sessions")
    opened = sum(r["connected"] for r in readies)
    log(f"{tag}: {opened:,} of {n:,} sessions open; settling {a.settle:g} s")
    time.sleep(a.settle)
    queue = ListenQueue(gw.port)
    queue.start()
    before = kernel_counters()
    cpu_clients = [cpu_secs(p.pid) or 0.0 for p in storms]
    t_kill = gw.kill()
    start = gw.start()
    log(f"{tag}: killed and restarted (listening {1000 * ((start['t_listening'] or start['t_up_seen']) - t_kill):.0f} ms after the kill)")
    try:
        lines = run.wait_storm_lines(storms, a.storm_timeout + 15)
    finally:
        t_storm = time.time()
        after = kernel_counters()
        listen = queue.stop()
    cpu_gw = cpu_secs(gw.proc.pid)
    cpu_clients = sum((cpu_secs(p.pid) or 0.0) - c for p, c in zip(storms, cpu_clients))
    storm_wall = t_storm - t_kill
    log(f"{tag}: storm over; watching {a.aftermath:g} s for late losses")
    time.sleep(a.aftermath)
    after2 = kernel_counters()
    records = [r for r in run.records(tag, storms) if r.get("losses")]
    t_spawn, t_listening = start["t_spawn"], start["t_listening"] or start["t_up_seen"]
    joined = [r["t_joined"] for r in records if r.get("t_joined") and not r.get("down")]
    late = lost_after(storms)
    result = {
        "scenario": "restart", "transport": transport, "n": n, "opened": opened,
        "lost": sum(l["lost"] for l in lines), "rejoined": sum(l["rejoined"] for l in lines),
        "failed": sum(l["failed"] for l in lines), "lost_again": sum(l["lost_again"] for l in lines),
        "lost_after": len(late), "lost_after_examples": late[:5],
        "attempts": sum(l["attempts"] for l in lines), "timed_out": any(l["timed_out"] for l in lines),
        "t_kill": t_kill, "t_spawn": t_spawn, "t_listening": t_listening,
        "restart_ms": {"kill_to_spawn": round(1000 * (t_spawn - t_kill), 1),
                       "spawn_to_listening": round(1000 * (t_listening - t_spawn), 1)},
        "all_joined_after_restart_s": round(max(joined) - t_spawn, 3) if joined else None,
        "all_joined_after_listening_s": round(max(joined) - t_listening, 3) if joined else None,
        "all_joined_after_kill_s": round(max(joined) - t_kill, 3) if joined else None,
        "from_restart": storm_figures(records, t_spawn),
        "from_first_attempt": storm_figures(records, 0, "t_attempt"),
        "detection_after_kill": quantiles([r["t_loss"] - t_kill for r in records if r.get("t_loss")]),
        "first_attempt_after_restart": quantiles([r["t_attempt"] - t_spawn for r in records if r.get("t_attempt")]),
        "attempts_per_session": quantiles([float(r["attempts"]) for r in records]),
        "kernel": counter_deltas(before, after), "kernel_with_aftermath": counter_deltas(before, after2),
        "listen": listen, "somaxconn": read_int("/proc/sys/net/core/somaxconn"),
        "tcp_max_syn_backlog": read_int("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
        "cpu_s": {"gateway_since_restart": cpu_gw, "clients": round(cpu_clients, 2),
                  "storm_wall_s": round(storm_wall, 2)},
        "client_errors": merge_errors(lines), "loss_reasons": merge_errors(lines, "loss_reasons"),
        "gateway_metrics": gw.metrics(), "gateway_log": gw.log_summary(),
        "storm_lines": lines,
    }
    finish_run(run, gw, storms)
    return result


def arrival_once(run: Run, transport: str, n: int) -> dict:
    a = run.args
    tag = f"arrival-{transport}"
    k = a.stayers
    log(f"{tag}: {k:,} stayers, then {n:,} new sessions at once")
    gw = Gateway(run, tag)
    obs_out = run.procs.workdir / f"{tag}-observer.jsonl"
    observer = run.procs.spawn(f"{tag}-observer", [
        str(run.bench_bin), "observer", "--url", gw.url("ws"), "--cert-sha256", gw.sha256,
        "--rooms", f"{STAYER_PREFIX}:0:{k}", "--rooms-per-session", "1000",
        "--out", str(obs_out), "--max-secs", str(a.max_secs)])
    run.procs.wait_ready([observer], 60, f"{tag}: observer")
    timeout, ping = a.liveness
    stayers = run.procs.spawn(f"{tag}-stayers", [
        str(run.bench_bin), "clients", "--url", gw.url(transport), "--cert-sha256", gw.sha256,
        "--count", str(k), "--room-prefix", STAYER_PREFIX, "--bind", ",".join(STAYER_SOURCES),
        "--spread-ms", str(int(ping * 1000)), "--concurrency", str(a.concurrency),
        "--max-secs", str(a.max_secs)])
    ready = run.procs.wait_ready([stayers], a.open_timeout, f"{tag}: stayers")[0]
    log(f"{tag}: {ready['connected']:,} stayers joined; settling {a.settle:g} s")
    t_watch = time.time()
    time.sleep(a.settle)
    start_at = time.time() + a.arm
    storms = run.storms(gw, transport, n, tag, at_once=True, start_at=start_at)
    deadline = time.time() + 30
    while not all(any(j.get("event") == "armed" for j in p.json_lines()) for p in storms):
        if time.time() > deadline or not all(p.alive() for p in storms):
            raise BenchError(f"{tag}: storm processes not armed")
        time.sleep(0.02)
    if time.time() > start_at - 0.05:
        raise BenchError(f"{tag}: the storm processes took longer than --arm {a.arm:g} s to start")
    time.sleep(max(0.0, start_at - 0.3 - time.time()))
    queue = ListenQueue(gw.port)
    queue.start()
    before = kernel_counters()
    cpu_gw0 = cpu_secs(gw.proc.pid) or 0.0
    cpu_cl0 = [cpu_secs(p.pid) or 0.0 for p in storms]
    try:
        lines = run.wait_storm_lines(storms, start_at - time.time() + a.storm_timeout + 15)
    finally:
        t_storm = time.time()
        after = kernel_counters()
        listen = queue.stop()
    cpu_gw = (cpu_secs(gw.proc.pid) or 0.0) - cpu_gw0
    cpu_clients = sum((cpu_secs(p.pid) or 0.0) - c for p, c in zip(storms, cpu_cl0))
    log(f"{tag}: storm over; watching {a.aftermath:g} s for false deaths")
    time.sleep(a.aftermath)
    after2 = kernel_counters()
    records = run.records(tag, storms)
    joined = [r["t_joined"] for r in records if r.get("t_joined")]
    presence = [j for j in read_jsonl(obs_out) if j.get("t", 0) >= t_watch]
    dead = [j for j in presence if j.get("kind") in ("unreachable", "left")]
    observer_closed = [j for j in presence if j.get("kind") == "observer_closed"]
    stayers_closed = [j for j in stayers.json_lines() if j.get("event") == "client_closed"]
    late = lost_after(storms)
    result = {
        "scenario": "arrival", "transport": transport, "n": n, "stayers": k,
        "stayers_joined": ready["connected"],
        "joined": sum(l["rejoined"] for l in lines), "failed": sum(l["failed"] for l in lines),
        "attempts": sum(l["attempts"] for l in lines), "timed_out": any(l["timed_out"] for l in lines),
        "t_start": start_at,
        "all_joined_s": round(max(joined) - start_at, 3) if joined else None,
        "from_start": storm_figures(records, start_at),
        "attempts_per_session": quantiles([float(r["attempts"]) for r in records]),
        "false_unreachable": len({(j.get("room"), j.get("peer")) for j in dead}),
        "false_unreachable_examples": dead[:5],
        "stayers_closed": len(stayers_closed), "stayers_closed_examples": stayers_closed[:5],
        "observer_closed": len(observer_closed),
        "storm_sessions_lost_after": len(late), "storm_sessions_lost_after_examples": late[:5],
        "kernel": counter_deltas(before, after), "kernel_with_aftermath": counter_deltas(before, after2),
        "listen": listen, "somaxconn": read_int("/proc/sys/net/core/somaxconn"),
        "tcp_max_syn_backlog": read_int("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
        "cpu_s": {"gateway": round(cpu_gw, 2), "clients": round(cpu_clients, 2),
                  "storm_wall_s": round(t_storm - start_at, 2)},
        "client_errors": merge_errors(lines), "loss_reasons": merge_errors(lines, "loss_reasons"),
        "gateway_metrics": gw.metrics(), "gateway_log": gw.log_summary(),
        "storm_lines": lines,
    }
    finish_run(run, gw, [*storms, stayers, observer])
    return result


def finish_run(run: Run, gw: Gateway, clients: list[Proc]) -> None:
    """The gateway is disposable: SIGKILL (no drain to wait for); then the clients, all
    signalled before any is waited for."""
    gw.kill()
    for proc in clients:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in clients:
        run.procs.stop(proc)


def problems(r: dict) -> list[str]:
    """What makes a run a failure (for --smoke's exit status; printed for every run)."""
    out = []
    if r["scenario"] == "restart":
        if r["opened"] < r["n"]:
            out.append(f"{r['n'] - r['opened']} sessions did not open before the storm")
        if r["lost"] < r["opened"]:
            out.append(f"{r['opened'] - r['lost']} sessions never noticed the restart")
        if r["failed"]:
            out.append(f"{r['failed']} sessions not rejoined")
        if r["lost_again"] or r["lost_after"]:
            out.append(f"{r['lost_again']} sessions lost again during the storm, {r['lost_after']} after it")
    else:
        if r["stayers_joined"] < r["stayers"]:
            out.append(f"{r['stayers'] - r['stayers_joined']} stayers did not join")
        if r["joined"] < r["n"]:
            out.append(f"{r['n'] - r['joined']} new sessions not joined")
        if r["false_unreachable"] or r["stayers_closed"]:
            out.append(f"false deaths among the stayers: {r['false_unreachable']} UNREACHABLE, {r['stayers_closed']} closed")
        if r["observer_closed"]:
            out.append("the observer lost its session")
        if r["storm_sessions_lost_after"]:
            out.append(f"{r['storm_sessions_lost_after']} new sessions lost after joining")
    return out


def fmt(q: dict) -> str:
    if not q or q.get("p50") is None:
        return "–"
    return f"{q['p50']:.3f} / {q['p99']:.3f} / **{q['max']:.3f}**"


def nonzero(counters: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counters.items() if v) or "all 0"


def refusals(r: dict) -> str:
    """Non-zero refusal, handshake-failure and Retry counters of the gateway."""
    keep = ("refused", "failures", "retries")
    found = [f"{k} {v:g}" for k, v in r["gateway_metrics"].items() if v and any(w in k for w in keep)]
    return ", ".join(found) or "none"


def write_report(results: dict, out_dir: Path) -> str:
    m = results["meta"]
    lines = [
        "# Reconnect storm",
        "",
        f"`{m['command']}` — {m['started']} → {m.get('finished', '?')}, commit {m['commit']}"
        f"{' (dirty)' if m['dirty'] else ''}, {m['build']} build; {m['machine']['cpus']} cores "
        f"({m['machine']['cpu_model']}), kernel {m['machine']['kernel']}; load {m['load_start']} → "
        f"{m.get('load_end', '?')}; net.core.somaxconn {m['somaxconn']}, tcp_max_syn_backlog "
        f"{m['tcp_max_syn_backlog']}. Gateway: liveness {m['liveness'][0]:g} s / ping "
        f"{m['liveness'][1]:g} s, max-handshakes {m['max_handshakes'] or 'default (512)'}, "
        f"listen-backlog {m['listen_backlog'] or 'default (4096)'}, no per-source limits. "
        f"Clients, gateway and observer share the machine; a failed attempt is retried after "
        f"{m['retry_ms'][0]}–{m['retry_ms'][1]} ms.",
        "",
    ]
    restarts = [r for r in results["runs"] if r["scenario"] == "restart"]
    if restarts:
        lines += [
            "## Restart: kill -9, start again at once, every session reconnects",
            "",
            "Seconds from the restart (the new gateway's spawn) until each session is joined "
            "again: p50 / p99 / **max**. Goal: all in ≤ 2 s, 0 ListenOverflows.",
            "",
            "| transport | sessions | rejoined | joined after restart (s) | welcomed (s) | detection after kill (s) | first attempt → joined (s) | attempts | ListenOverflows / ListenDrops | accept queue max / backlog | gateway CPU s | lost again | goal |",
            "|---|---:|---:|---|---|---|---|---:|---|---|---:|---:|---|",
        ]
        for r in restarts:
            k = r["kernel_with_aftermath"]
            clean = not k.get("TcpExt.ListenOverflows") and not r["failed"] and not r["lost_again"] + r["lost_after"]
            if r["transport"] == "ws":
                last = r["all_joined_after_restart_s"]
                goal = "met" if clean and last is not None and last <= GOAL_SECONDS else "missed"
            else:
                # Over QUIC the clients learn of the restart only by their own timeout: the
                # goal is judged on the storm itself (first attempt → joined).
                last = r["from_first_attempt"]["joined"]["max"]
                goal = ("storm " + ("met" if clean and last is not None and last <= GOAL_SECONDS else "missed")
                        + f"; +{r['detection_after_kill']['max']} s detection")
            lines.append(
                f"| {r['transport']} | {r['n']:,} | {r['rejoined']:,} | {fmt(r['from_restart']['joined'])} | "
                f"{fmt(r['from_restart']['welcome'])} | {fmt(r['detection_after_kill'])} | "
                f"{fmt(r['from_first_attempt']['joined'])} | {r['attempts']:,} | "
                f"{k.get('TcpExt.ListenOverflows', '?')} / {k.get('TcpExt.ListenDrops', '?')} | "
                f"{r['listen']['accept_queue_max']} / {r['listen']['backlog']} | "
                f"{r['cpu_s']['gateway_since_restart']} | {r['lost_again'] + r['lost_after']} | "
                f"{goal} |")
        lines.append("")
        for r in restarts:
            lines.append(
                f"- {r['transport']}: restart took {r['restart_ms']['kill_to_spawn']} ms (kill → spawn) + "
                f"{r['restart_ms']['spawn_to_listening']} ms (spawn → listening); the last session joined "
                f"{r['all_joined_after_kill_s']} s after the kill. Client errors: "
                + ("; ".join(f"{c}× {e}" for e, c in r["client_errors"][:4]) or "none")
                + f". Kernel counters: {nonzero(r['kernel_with_aftermath'])}. Gateway refusals: {refusals(r)}.")
        lines.append("")
    arrivals = [r for r in results["runs"] if r["scenario"] == "arrival"]
    if arrivals:
        lines += [
            "## Arrival: N new sessions at once onto a gateway with established sessions",
            "",
            "Seconds from the common start instant until each new session is joined: p50 / p99 / "
            "**max**. False UNREACHABLE: stayers the observer was told were UNREACHABLE (goal 0).",
            "",
            "| transport | stayers | new sessions | joined | joined (s) | welcomed (s) | attempts | ListenOverflows / ListenDrops | accept queue max / backlog | false UNREACHABLE | gateway CPU s |",
            "|---|---:|---:|---:|---|---|---:|---|---|---:|---:|",
        ]
        for r in arrivals:
            k = r["kernel_with_aftermath"]
            lines.append(
                f"| {r['transport']} | {r['stayers_joined']:,} | {r['n']:,} | {r['joined']:,} | "
                f"{fmt(r['from_start']['joined'])} | {fmt(r['from_start']['welcome'])} | {r['attempts']:,} | "
                f"{k.get('TcpExt.ListenOverflows', '?')} / {k.get('TcpExt.ListenDrops', '?')} | "
                f"{r['listen']['accept_queue_max']} / {r['listen']['backlog']} | "
                f"**{r['false_unreachable']}** | {r['cpu_s']['gateway']} |")
        lines.append("")
        for r in arrivals:
            lines.append(
                f"- {r['transport']}: client errors: "
                + ("; ".join(f"{c}× {e}" for e, c in r["client_errors"][:4]) or "none")
                + f". Kernel counters: {nonzero(r['kernel_with_aftermath'])}. Gateway refusals: {refusals(r)}. "
                f"Stayers closed: {r['stayers_closed']}, "
                f"new sessions lost after joining: {r['storm_sessions_lost_after']}.")
        lines.append("")
    lines += ["## Runs", ""]
    for r in results["runs"]:
        lines.append(f"- {r['scenario']} {r['transport']}, {r.get('when', '?')}: `{r.get('command', m['command'])}` "
                     f"(the rest of the machine used {r.get('machine_busy_before_percent', '?')} % of a core just before)")
    lines.append("")
    for r in results["runs"]:
        for p in r.get("problems", []):
            lines.append(f"- ⚠ {r['scenario']} {r['transport']}: {p}")
    for e in results.get("errors", []):
        lines.append(f"- ⚠ error: {e}")
    text = "\n".join(lines) + "\n"
    (out_dir / "report.md").write_text(text)
    return text


def build(debug: bool) -> None:
    log(f"building signalgate and signalgate-bench ({'debug' if debug else 'release'})")
    cmd = ["cargo", "build", "-q", "-p", "signalgate", "-p", "signalgate-bench"]
    subprocess.run(cmd + ([] if debug else ["--release"]), cwd=ROOT, check=True, timeout=1800)


def main() -> int:
    ap = argparse.ArgumentParser(description="signalgate reconnect-storm benchmark (loopback, no root)")
    ap.add_argument("--scenarios", default="restart,arrival", help="comma separated: restart, arrival")
    ap.add_argument("--transports", default="ws,wt", help="comma separated: ws, wt")
    ap.add_argument("--restart-ws", type=int, default=10000, help="sessions of the WebSocket restart storm")
    ap.add_argument("--restart-wt", type=int, default=2000, help="sessions of the WebTransport restart storm (see the module doc)")
    ap.add_argument("--arrival-ws", type=int, default=5000, help="new WebSocket sessions arriving at once")
    ap.add_argument("--arrival-wt", type=int, default=2000, help="new WebTransport sessions arriving at once")
    ap.add_argument("--stayers", type=int, default=1000, help="established sessions watched during an arrival")
    ap.add_argument("--liveness", default="2,0.8", help="liveness timeout and ping interval, s (default 2,0.8)")
    ap.add_argument("--max-handshakes", type=int, default=0, help="the gateway's --max-handshakes (default: its own)")
    ap.add_argument("--listen-backlog", type=int, default=0, help="the gateway's --listen-backlog (default: its own)")
    ap.add_argument("--max-pending-hellos", type=int, default=0, help="the gateway's --max-pending-hellos (default: its own)")
    ap.add_argument("--gateway-arg", action="append", default=[], help="one more argument for `signalgate serve` (repeatable; --gateway-arg=--flag)")
    ap.add_argument("--retry-ms", default="100,300", help="a failed attempt waits a random delay in MIN,MAX ms")
    ap.add_argument("--per-process", type=int, default=5000, help="sessions per client process (a process may hold 20,000 descriptors)")
    ap.add_argument("--concurrency", type=int, default=100, help="sessions opened at once per process before a restart storm")
    ap.add_argument("--settle", type=float, default=2.0, help="s between all sessions joined and the storm")
    ap.add_argument("--arm", type=float, default=2.0, help="s between spawning the arrival's processes and their start instant")
    ap.add_argument("--aftermath", type=float, default=4.0, help="s watched after a storm for late false deaths")
    ap.add_argument("--storm-timeout", type=float, default=30.0, help="s a storm may take before it is reported unfinished")
    ap.add_argument("--open-timeout", type=float, default=120.0, help="s to open the sessions before a storm")
    ap.add_argument("--max-secs", type=int, default=300, help="every child process exits after this long")
    ap.add_argument("--wait-quiet", type=float, default=0, help="before each run, wait up to this many s for a quiet machine")
    ap.add_argument("--quiet-below", type=float, default=30, help="quiet: less than this %% of one core busy")
    ap.add_argument("--smoke", action="store_true", help="200 sessions, 50 stayers, ws and wt; exit 1 on a failure (CI)")
    ap.add_argument("--out", type=Path, default=None, help=f"results directory (default {RESULTS.relative_to(ROOT)}, a temp dir with --smoke)")
    ap.add_argument("--merge", action="store_true", help="keep the runs of other scenarios/transports already in --out's results.json")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--debug-build", action="store_true", help="use target/debug (CI); published figures use release")
    ap.add_argument("--keep-logs", action="store_true", help="keep every process's output (printed path)")
    args = ap.parse_args()
    if args.smoke:
        args.restart_ws = args.restart_wt = args.arrival_ws = args.arrival_wt = 200
        args.stayers, args.settle, args.arm, args.max_secs, args.storm_timeout = 50, 0.5, 0.8, 90, 15.0
        args.aftermath = 2.5
    try:
        timeout, ping = (float(x) for x in args.liveness.split(","))
        lo, hi = (int(x) for x in args.retry_ms.split(","))
    except ValueError:
        ap.error("--liveness T,P and --retry-ms MIN,MAX")
    args.liveness, args.retry_ms = (timeout, ping), (lo, hi)
    scenarios = [s for s in args.scenarios.split(",") if s]
    transports = [t for t in args.transports.split(",") if t]
    if set(scenarios) - {"restart", "arrival"} or set(transports) - {"ws", "wt"}:
        ap.error("--scenarios restart,arrival; --transports ws,wt")
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="sg-storm-smoke-")) if args.smoke else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)

    interrupt_on_signals()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it (20,000 here)

    profile = "debug" if args.debug_build else "release"
    if not args.no_build:
        build(args.debug_build)
    gw_bin, bench_bin = ROOT / "target" / profile / "signalgate", ROOT / "target" / profile / "signalgate-bench"
    for binary in (gw_bin, bench_bin):
        if not binary.exists():
            raise BenchError(f"{binary} is missing (build it, or drop --no-build)")
    model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                  if l.startswith("model name")), "")
    results: dict = {"meta": {
        "command": shlex.join(["python3", "bench/storm.py", *sys.argv[1:]]),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": sh("git", "rev-parse", "--short", "HEAD"),
        "dirty": bool(sh("git", "status", "--porcelain", "--untracked-files=no", "--", ":/src")),
        "build": profile, "gateway_bin": str(gw_bin),
        "gateway_built": dt.datetime.fromtimestamp(gw_bin.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release()},
        "load_start": round(os.getloadavg()[0], 2),
        "somaxconn": read_int("/proc/sys/net/core/somaxconn"),
        "tcp_max_syn_backlog": read_int("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
        "nofile": hard, "liveness": list(args.liveness), "retry_ms": list(args.retry_ms),
        "max_handshakes": args.max_handshakes, "listen_backlog": args.listen_backlog,
        "gateway_args": args.gateway_arg, "smoke": args.smoke,
    }, "runs": []}
    somaxconn = results["meta"]["somaxconn"]
    if somaxconn is not None and somaxconn < (args.listen_backlog or 4096):
        log(f"net.core.somaxconn = {somaxconn} caps the gateway's listen backlog ({args.listen_backlog or 4096})")
    workdir = Path(tempfile.mkdtemp(prefix="sg-storm-"))
    procs = Procs(workdir, env={"NO_COLOR": "1"})
    run = Run(args, procs, gw_bin, bench_bin)
    sizes = {("restart", "ws"): args.restart_ws, ("restart", "wt"): args.restart_wt,
             ("arrival", "ws"): args.arrival_ws, ("arrival", "wt"): args.arrival_wt}
    with Guarded(procs, results, log) as guard:
        for scenario in scenarios:
            for transport in transports:
                n = sizes[(scenario, transport)]
                busy = wait_quiet(args.wait_quiet, args.quiet_below)
                r = (restart_once if scenario == "restart" else arrival_once)(run, transport, n)
                r["problems"] = problems(r)
                r["machine_busy_before_percent"] = busy
                r["command"] = results["meta"]["command"]
                r["when"] = dt.datetime.fromtimestamp(r.get("t_kill") or r.get("t_start"), dt.timezone.utc).isoformat(timespec="seconds")
                results["runs"].append(r)
                figure = r.get("all_joined_after_restart_s", r.get("all_joined_s"))
                k = r["kernel_with_aftermath"]
                log(f"{scenario}-{transport}: all joined in {figure} s; ListenOverflows "
                    f"{k.get('TcpExt.ListenOverflows')}, accept queue max {r['listen']['accept_queue_max']}"
                    + (f"; false UNREACHABLE {r['false_unreachable']}" if scenario == "arrival" else "")
                    + "".join(f"\n  ⚠ {p}" for p in r["problems"]))
                if r["problems"]:
                    guard.status = 1
    status = guard.status
    if args.merge and (out_dir / "results.json").exists():
        # Keep the earlier runs of the scenarios and transports this invocation did not run.
        earlier = json.loads((out_dir / "results.json").read_text())
        done = {(r["scenario"], r["transport"]) for r in results["runs"]}
        kept = [r for r in earlier.get("runs", []) if (r["scenario"], r["transport"]) not in done]
        for r in kept:
            r.setdefault("meta", earlier.get("meta"))
        results["runs"] = kept + results["runs"]
        results["earlier_meta"] = [earlier.get("meta"), *earlier.get("earlier_meta", [])]
    publish(results, out_dir, write_report, workdir, args.keep_logs)
    log(f"results in {out_dir} ({results['meta']['duration_s']} s)")
    return status


if __name__ == "__main__":
    run_main(main, "storm.py")
