#!/usr/bin/env python3
"""The load benchmark: what a gateway costs at scale, side by side with Socket.IO 4.

Three parts, each also runnable alone (`--only`):

- **idle**: for each server (signalgate over plain WebSocket, WebSocket over TLS and
  WebTransport; Socket.IO 4 over WebSocket) one process, stepped up through N idle sessions
  (default 1k, 5k, 10k, 19k), each session alone in a room, all opened by the same Rust load
  generator (`signalgate-bench clients`, `--protocol socketio` for Socket.IO). At every step:
  RSS per session, the server's CPU over a quiet window, bytes on the wire per idle session
  per minute in both directions (nft counters on the server's ports), and sessions the server
  dropped. Then every client is killed at once and the server's RSS is read until it has had
  `--after` seconds to give the memory back.
- **relay**: `bench/relay.py --targets signalgate,socketio`: one-way latency and server CPU
  at 1k…40k signals/s, 100 pairs, 200 B.
- **storm**: `bench/storm.py`: a killed and restarted gateway that every client reconnects
  to at once, and a crowd arriving at a running gateway beside sessions that stay.

It runs in a network namespace of its own (re-executed under `unshare`), so the kernel's
counters (bytes per port, listen overflows) are the benchmark's alone. The load generator,
the servers and everything else share this machine's cores: the figures are those of the
pair. It measures, it does not judge: only `--smoke` fails, and only on lost sessions.

    python3 bench/load.py                              # everything (~45 min), bench/results/load/
    python3 bench/load.py --only idle --sizes 1000,5000 --targets wss,socketio
    python3 bench/load.py --smoke --debug-build        # CI: 200 sessions per server, short windows

Python 3 standard library (charts: matplotlib when installed). Root, or unprivileged user
namespaces, for the namespace.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procs import BenchError, interrupt_on_signals, Proc, Procs, run_main  # bench/procs.py
from relay import fmt, log, machine, sh  # bench/relay.py

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "load"
SOCKETIO = HERE / "baselines" / "socketio"
IN_NAMESPACE = "SIGNALGATE_LOAD_NETNS"

# One process may hold at most 20,000 descriptors: clients are spread over processes of at most
# this many sessions, and over these source addresses (ephemeral ports per address).
SESSIONS_PER_CLIENT_PROCESS = 9000
SOURCES = "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5"
# Over how long a step's sessions start: signalgate's default probe interval.
SPREAD_MS = 4000

TARGETS = {
    # name: (server, what the report calls it)
    "ws": ("signalgate", "signalgate, WebSocket"),
    "wss": ("signalgate", "signalgate, WebSocket over TLS"),
    "wt": ("signalgate", "signalgate, WebTransport"),
    "socketio": ("socketio", "Socket.IO 4, WebSocket"),
}
# Liveness settings of signalgate (`--liveness`): (liveness timeout, probe interval).
LIVENESS = {"default": ("10s", "4s"), "aggressive": ("2s", "0.8s")}


# ---------------------------------------------------------------------------------------------
# The namespace, and what its kernel counts


def enter_namespace() -> None:
    """Re-executes this script in a new network namespace with only loopback, once."""
    if os.environ.get(IN_NAMESPACE):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--net"]
    env = dict(os.environ, **{IN_NAMESPACE: "1"})
    os.execvpe(unshare[0], [*unshare, sys.executable, *sys.argv], env)


class PortCounters:
    """Bytes and packets to and from the server's ports, counted by nft on loopback's output
    path (each packet passes it once): `up` = client to server, `down` = server to client, IP
    headers included."""

    TABLE = "sgload"

    def __init__(self, ports: list[int]):
        self.ports = ports
        spec = ", ".join(str(p) for p in ports)
        script = (f"table inet {self.TABLE} {{\n chain out {{\n  type filter hook output priority 0;\n"
                  f"  meta l4proto {{ tcp, udp }} th dport {{ {spec} }} counter\n"
                  f"  meta l4proto {{ tcp, udp }} th sport {{ {spec} }} counter\n }}\n}}\n")
        subprocess.run(["nft", "delete", "table", "inet", self.TABLE], capture_output=True)
        subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)

    def read(self) -> dict:
        text = subprocess.run(["nft", "list", "table", "inet", self.TABLE], capture_output=True,
                              text=True, check=True).stdout
        counts = []
        for line in text.splitlines():
            if "counter packets" in line:
                words = line.split()
                i = words.index("packets")
                counts.append((int(words[i + 1]), int(words[i + 3])))
        if len(counts) != 2:
            raise BenchError(f"nft counters: expected 2, found {len(counts)}:\n{text}")
        (up_packets, up_bytes), (down_packets, down_bytes) = counts
        return {"up_bytes": up_bytes, "down_bytes": down_bytes, "up_packets": up_packets,
                "down_packets": down_packets}

    def close(self) -> None:
        subprocess.run(["nft", "delete", "table", "inet", self.TABLE], capture_output=True)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    # Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------
# Servers


class Server:
    """One server under test: a signalgate gateway, or a Socket.IO 4 relay server."""

    def __init__(self, procs: Procs, kind: str, args: argparse.Namespace, liveness: str):
        self.kind = kind
        self.port = 7443
        self.http_port = 7480
        self.sha256 = ""
        if kind == "signalgate":
            timeout, interval = LIVENESS[liveness]
            self.proc = procs.spawn("gateway", [
                str(args.gateway_bin), "serve",
                "--listen", f"127.0.0.1:{self.port}",
                "--http-listen", f"127.0.0.1:{self.http_port}",  # plain WebSocket, as behind a proxy
                "--metrics-listen", "off",
                "--dev-cert-dir", str(procs.workdir / "certs"),
                "--liveness-timeout", timeout, "--ping-interval", interval,
                # Every client comes from four loopback addresses, all at once.
                "--max-connections-per-ip", "0", "--new-connections-per-ip-per-sec", "0",
                "--max-pending-hellos", "65536",
            ], env={"NO_COLOR": "1"})  # the default log level: its spans cost memory too
            self.sha256 = self._wait_for("sha256", lambda line: line.split()[-1], stream="out")
        else:
            self.proc = procs.spawn("socketio", [
                "node", str(SOCKETIO / "relay_server.js"), "--host", "127.0.0.1",
                "--port", str(self.port), "--max-secs", str(args.max_secs),
            ])
            procs.wait_ready([self.proc], 30, "the Socket.IO server")
        self.version = self._version()

    def _wait_for(self, needle: str, parse, stream: str, timeout: float = 30):
        deadline = time.time() + timeout
        path = self.proc.out if stream == "out" else self.proc.err
        while time.time() < deadline:
            for line in path.read_text(errors="replace").splitlines():
                if needle in line:
                    return parse(line)
            if not self.proc.alive():
                break
            time.sleep(0.05)
        raise BenchError(f"{self.kind} did not start: {self.proc.err.read_text(errors='replace')[-2000:]}")

    def _version(self) -> str:
        if self.kind == "socketio":
            ready = [j for j in self.proc.json_lines() if j.get("event") == "ready"]
            return f"socket.io {ready[0].get('version', '?')}, node {sh('node', '--version')}" if ready else "socket.io"
        return sh(str(Path(self.proc.popen.args[0])), "--version")

    def ports(self) -> list[int]:
        return [self.port, self.http_port] if self.kind == "signalgate" else [self.port]

    def url(self, target: str) -> str:
        return {
            "ws": f"ws://127.0.0.1:{self.http_port}/ws",
            "wss": f"wss://127.0.0.1:{self.port}/ws",
            "wt": f"https://127.0.0.1:{self.port}/wt",
            "socketio": f"ws://127.0.0.1:{self.port}/socket.io/",
        }[target]


# ---------------------------------------------------------------------------------------------
# Idle sessions


def open_sessions(procs: Procs, args, server: Server, target: str, first: int, count: int) -> list[Proc]:
    """`count` more idle sessions, in client processes of at most SESSIONS_PER_CLIENT_PROCESS."""
    started = []
    for start in range(first, first + count, SESSIONS_PER_CLIENT_PROCESS):
        n = min(SESSIONS_PER_CLIENT_PROCESS, first + count - start)
        # Sessions start over one probe interval, as clients arriving over time would: at random
        # phases, not in lockstep (which batches the gateway's work and hides its real cost).
        argv = [str(args.bench_bin), "clients", "--url", server.url(target), "--count", str(n),
                "--first", str(start), "--room-prefix", "idle-", "--concurrency", "200",
                "--bind", SOURCES, "--max-secs", str(args.max_secs), "--spread-ms", str(SPREAD_MS)]
        if target == "socketio":
            argv += ["--protocol", "socketio"]
        else:
            argv += ["--cert-sha256", server.sha256]
        started.append(procs.spawn(f"clients-{target}-{start}", argv))
    return started


def client_events(clients: list[Proc], event: str) -> list[dict]:
    return [j for c in clients for j in c.json_lines() if j.get("event") == event]


def measure_step(server: Server, counters: PortCounters, clients: list[Proc], sessions: int,
                 window: float) -> dict:
    """The server's RSS now, and its CPU and bytes on the wire over `window` seconds."""
    rss = rss_bytes(server.proc.pid)
    wire0, cpu0 = counters.read(), cpu_seconds(server.proc.pid)
    client_cpu0 = sum(cpu_seconds(c.pid) for c in clients if c.alive())
    t0 = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - t0
    wire1, cpu1 = counters.read(), cpu_seconds(server.proc.pid)
    client_cpu1 = sum(cpu_seconds(c.pid) for c in clients if c.alive())
    per_minute = 60.0 / elapsed / max(sessions, 1)
    return {
        "rss_mb": round(rss / 1e6, 1),
        "fds": open_fds(server.proc.pid),
        "cpu_percent": round((cpu1 - cpu0) / elapsed * 100, 2),
        "clients_cpu_percent": round((client_cpu1 - client_cpu0) / elapsed * 100, 2),
        "window_s": round(elapsed, 1),
        "bytes_up_per_session_min": round((wire1["up_bytes"] - wire0["up_bytes"]) * per_minute, 1),
        "bytes_down_per_session_min": round((wire1["down_bytes"] - wire0["down_bytes"]) * per_minute, 1),
        "packets_per_session_min": round((wire1["up_packets"] - wire0["up_packets"]
                                          + wire1["down_packets"] - wire0["down_packets"]) * per_minute, 2),
    }


def idle_run(args, target: str, liveness: str) -> dict:
    """One server stepped up through args.sizes idle sessions, then left by all of them."""
    kind, label = TARGETS[target]
    workdir = Path(tempfile.mkdtemp(prefix=f"sg-load-{target}-"))
    procs = Procs(workdir)
    counters = None
    row: dict = {"target": target, "label": label, "liveness": liveness if kind == "signalgate" else "",
                 "steps": [], "after_leave": []}
    try:
        server = Server(procs, kind, args, liveness)
        counters = PortCounters(server.ports())
        row["server"] = server.version
        time.sleep(1.0)
        row["rss_start_mb"] = round(rss_bytes(server.proc.pid) / 1e6, 1)
        log(f"idle {label}{', liveness ' + liveness if row['liveness'] else ''}: {row['rss_start_mb']} MB at start")
        clients: list[Proc] = []
        opened = 0
        for size in args.sizes:
            step_clients = open_sessions(procs, args, server, target, opened, size - opened)
            t_open = time.monotonic()
            readies = procs.wait_ready(step_clients, args.setup_timeout, f"{size - opened} {label} sessions")
            setup_s = time.monotonic() - t_open
            clients += step_clients
            opened = size
            connected = sum(r.get("connected", 0) for c in clients for r in c.json_lines() if r.get("event") == "ready")
            failed = sum(r.get("failed", 0) for r in readies)
            time.sleep(args.settle)
            step = {"sessions": size, "connected": connected, "failed_to_connect": failed,
                    "setup_s": round(setup_s, 1)}
            step.update(measure_step(server, counters, clients, size, args.window))
            step["dropped"] = len(client_events(clients, "client_closed"))
            step["kib_per_session"] = round((step["rss_mb"] - row["rss_start_mb"]) * 1e6 / 1024 / max(connected, 1), 1)
            row["steps"].append(step)
            log(f"  {size:>6} sessions ({connected} up, set up in {setup_s:.1f} s): {step['rss_mb']} MB "
                f"({step['kib_per_session']} KiB each), CPU {step['cpu_percent']} %, "
                f"{step['bytes_up_per_session_min']:.0f} B up / {step['bytes_down_per_session_min']:.0f} B down "
                f"per session per minute, {step['dropped']} dropped")
            if not server.proc.alive():
                raise BenchError(f"{label} exited: {server.proc.err.read_text(errors='replace')[-2000:]}")
        if args.after > 0:
            for c in clients:  # every client vanishes at once
                c.sigstopped = True
                procs.stop(c)
            t_left = time.monotonic()
            for mark in [m for m in (10, 30, 60, 90) if m <= args.after] or [args.after]:
                time.sleep(max(0.0, t_left + mark - time.monotonic()))
                row["after_leave"].append({"after_s": mark, "rss_mb": round(rss_bytes(server.proc.pid) / 1e6, 1)})
            log("  after every client left: " + ", ".join(f"+{a['after_s']} s {a['rss_mb']} MB" for a in row["after_leave"]))
    except BenchError as error:
        log(f"  failed: {error}")
        row["error"] = str(error)
    finally:
        if counters:
            counters.close()
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return row


# ---------------------------------------------------------------------------------------------
# The other parts, run as their own scripts in this namespace


def run_part(script: str, argv: list[str], out: Path) -> dict:
    log(f"{script} {shlex.join(argv)}")
    result = subprocess.run([sys.executable, str(HERE / script), *argv, "--out", str(out)], cwd=ROOT)
    try:
        data = json.loads((out / "results.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        data = {"errors": [f"{script}: no results ({error})"]}
    if result.returncode != 0:
        data.setdefault("errors", []).append(f"{script} exited with {result.returncode}")
    return data


# ---------------------------------------------------------------------------------------------
# Report


def idle_table(rows: list[dict]) -> list[str]:
    lines = ["| server | liveness | sessions | RSS | KiB per session | server CPU, % of a core | load generator CPU | B/min per session up / down | packets/min per session | dropped |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if row.get("error"):
            lines.append(f"| {row['label']} | {row['liveness'] or '–'} | failed: {row['error'][:120]} | | | | | | | |")
        for s in row["steps"]:
            lines.append(f"| {row['label']} | {row['liveness'] or 'default heartbeat'} | {s['sessions']:,} | {s['rss_mb']} MB | "
                         f"**{s['kib_per_session']}** | {s['cpu_percent']} | {s['clients_cpu_percent']} | "
                         f"{s['bytes_up_per_session_min']:,.0f} / {s['bytes_down_per_session_min']:,.0f} | "
                         f"{s['packets_per_session_min']} | {s['dropped']} |")
    return lines


def after_leave_table(rows: list[dict]) -> list[str]:
    marks = sorted({a["after_s"] for r in rows for a in r["after_leave"]})
    if not marks:
        return []
    lines = ["| server | at start | peak | " + " | ".join(f"+{m} s" for m in marks) + " |",
             "|---|---:|---:|" + "---:|" * len(marks)]
    for row in rows:
        if not row["after_leave"] or not row["steps"]:
            continue
        after = {a["after_s"]: a["rss_mb"] for a in row["after_leave"]}
        peak = row["steps"][-1]
        lines.append(f"| {row['label']} ({peak['sessions']:,} sessions) | {row['rss_start_mb']} MB | {peak['rss_mb']} MB | "
                     + " | ".join(f"{after[m]} MB" if m in after else "–" for m in marks) + " |")
    return lines


def relay_table(relay: dict) -> list[str]:
    runs = relay.get("runs", [])
    if not runs:
        return [f"relay: no runs ({'; '.join(relay.get('errors', []))})"]
    lines = ["| server | asked /s | achieved /s | p50 ms | p99 ms | max ms | lost | server CPU % | load generator CPU % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(runs, key=lambda r: (r.get("rate_asked", 0), r.get("target", ""))):
        lat = r.get("latency_ms") or {}
        name = "Socket.IO 4 (ws)" if r.get("target") == "socketio" else "signalgate (wss)"
        lines.append(f"| {name} | {fmt(r.get('rate_asked'), 0)} | {fmt(r.get('rate_achieved'), 0)} | "
                     f"{fmt(lat.get('p50'))} | **{fmt(lat.get('p99'))}** | {fmt(lat.get('max'))} | {fmt(r.get('lost'), 0)} | "
                     f"{fmt(r.get('gateway_cpu_percent'), 1)} | {fmt(r.get('loadgen_cpu_percent'), 1)} |")
    return lines


def write_report(results: dict, out_dir: Path) -> str:
    meta = results["meta"]
    m = meta["machine"]
    lines = [f"# Load benchmark ({meta['started'][:10]}, signalgate {meta['commit']})", "",
             f"`{meta['command']}`. Machine: {m['cpus']} × {m['cpu_model']}, Linux {m['kernel']}; the load "
             "generator (`signalgate-bench`, the same Rust process for both servers), the servers and "
             f"everything else share these cores, in one network namespace on loopback. "
             f"{meta['config']['profile'].capitalize()} builds.", ""]
    if results.get("idle"):
        lines += ["## Idle sessions", "",
                  "Each session alone in a room, quiet. RSS per session = (RSS − RSS at start) / sessions. CPU "
                  f"over a {meta['config']['window']:g} s window after {meta['config']['settle']:g} s of quiet; bytes "
                  "counted by nft on the server's ports (IP headers included; both directions). *dropped*: sessions "
                  "the server closed during the run.", ""]
        lines += idle_table(results["idle"]) + [""]
        after = after_leave_table(results["idle"])
        if after:
            lines += ["## Memory after every client left (`kill -9` of the load generator)", ""] + after + [""]
    if results.get("relay"):
        lines += ["## Relay latency", "", "`bench/relay.py` (details in [relay/report.md](relay/report.md)).", ""]
        lines += relay_table(results["relay"]) + [""]
    if results.get("storm"):
        lines += ["## Reconnect storm", "", "`bench/storm.py`: see [storm/report.md](storm/report.md).", ""]
        storm_report = out_dir / "storm" / "report.md"
        if storm_report.exists():
            lines += [l for l in storm_report.read_text().splitlines()[1:]] + [""]
    errors = [e for part in ("relay", "storm") for e in results.get(part, {}).get("errors", [])]
    errors += [f"{r['label']}: {r['error']}" for r in results.get("idle", []) if r.get("error")]
    if errors:
        lines += ["## Errors", ""] + [f"- {e}" for e in errors] + [""]
    text = "\n".join(lines)
    (out_dir / "report.md").write_text(text)
    return text


def charts(results: dict, out_dir: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("charts skipped: matplotlib is not installed (pip install matplotlib)")
        return
    fig, (mem, cpu) = plt.subplots(1, 2, figsize=(11, 4))
    for row in results.get("idle", []):
        if not row["steps"]:
            continue
        n = [s["sessions"] for s in row["steps"]]
        name = row["label"] + (f" ({row['liveness']})" if row["liveness"] else "")
        mem.plot(n, [s["kib_per_session"] for s in row["steps"]], marker="o", label=name)
        cpu.plot(n, [s["cpu_percent"] for s in row["steps"]], marker="o", label=name)
    mem.set(xlabel="idle sessions", ylabel="KiB per session (RSS)", title="Memory per idle session")
    cpu.set(xlabel="idle sessions", ylabel="% of one core", title="Server CPU while idle")
    for ax in (mem, cpu):
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    mem.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "idle.png", dpi=110)
    runs = results.get("relay", {}).get("runs", [])
    if runs:
        fig, ax = plt.subplots(figsize=(6, 4))
        for target in sorted({r.get("target", "signalgate") for r in runs}):
            rs = [r for r in runs if r.get("target", "signalgate") == target]
            rs.sort(key=lambda r: r["rate_asked"])
            ax.plot([r["rate_asked"] for r in rs], [(r.get("latency_ms") or {}).get("p99") for r in rs],
                    marker="o", label=f"{target} p99")
        ax.set(xscale="log", xlabel="signals/s", ylabel="ms", title="Relay latency, 100 pairs, 200 B")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "relay.png", dpi=110)


# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description="signalgate load benchmark: idle cost, relay, storms; beside Socket.IO 4")
    ap.add_argument("--only", action="append", choices=["idle", "relay", "storm"], help="run only these parts (repeatable)")
    ap.add_argument("--targets", default="ws,wss,wt,socketio", help=f"idle: servers and transports, of {','.join(TARGETS)}")
    ap.add_argument("--sizes", default="1000,5000,10000,19000", help="idle: session counts to step through")
    ap.add_argument("--liveness", default="default", help=f"idle: signalgate's liveness settings, of {','.join(LIVENESS)} (comma list)")
    ap.add_argument("--aggressive-wt-size", type=int, default=19000,
                    help="idle: also WebTransport at liveness 2 s with this many sessions (0: not)")
    ap.add_argument("--settle", type=float, default=10.0, help="idle: quiet seconds before each measurement")
    ap.add_argument("--window", type=float, default=50.0,
                    help="idle: measured seconds per step (50: two of Socket.IO's 25 s heartbeats, 12.5 of signalgate's 4 s probes)")
    ap.add_argument("--after", type=float, default=60.0, help="idle: seconds to watch RSS after every client left (0: not)")
    ap.add_argument("--setup-timeout", type=float, default=180.0, help="idle: seconds for a step's sessions to be set up")
    ap.add_argument("--rates", default="1000,5000,10000,20000,40000", help="relay: signals/s")
    ap.add_argument("--relay-secs", type=float, default=10.0, help="relay: measured seconds per rate")
    ap.add_argument("--smoke", action="store_true", help="CI: 200 sessions per server, short windows, small storm; exit 1 on lost sessions")
    ap.add_argument("--out", type=Path, default=None, help="results directory (default bench/results/load, or a temp dir with --smoke)")
    ap.add_argument("--no-build", action="store_true", help="use the release binaries as they are")
    ap.add_argument("--debug-build", action="store_true", help="use the debug binaries (as CI's tests left them)")
    ap.add_argument("--max-secs", type=int, default=3600, help="every process stops by itself after this long")
    args = ap.parse_args()

    parts = args.only or ["idle", "relay", "storm"]
    targets = [t for t in args.targets.split(",") if t]
    for t in targets:
        if t not in TARGETS:
            ap.error(f"--targets: unknown target {t!r} (known: {', '.join(TARGETS)})")
    livenesses = [x for x in args.liveness.split(",") if x]
    for x in livenesses:
        if x not in LIVENESS:
            ap.error(f"--liveness: unknown setting {x!r} (known: {', '.join(LIVENESS)})")
    try:
        args.sizes = sorted(int(x) for x in args.sizes.replace("_", "").split(",") if x)
    except ValueError:
        ap.error(f"--sizes: not a list of numbers: {args.sizes!r}")
    if args.smoke:
        args.sizes, args.settle, args.window, args.after, args.aggressive_wt_size = [200], 1.0, 4.0, 0.0, 0
        args.max_secs = 300

    # Building and installing may need the network: before the namespace, which has none (in
    # it, the re-executed script finds both done).
    profile = "debug" if args.debug_build else "release"
    if not (args.no_build or args.debug_build):
        log("building signalgate and signalgate-bench (release)")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "signalgate", "-p", "signalgate-bench"],
                       cwd=ROOT, check=True, timeout=1800)
    args.gateway_bin = ROOT / "target" / profile / "signalgate"
    args.bench_bin = ROOT / "target" / profile / "signalgate-bench"
    for binary in (args.gateway_bin, args.bench_bin):
        if not binary.exists():
            raise BenchError(f"{binary} is missing (build it, or drop --no-build)")
    if "socketio" in targets or "relay" in parts:
        if not (SOCKETIO / "node_modules" / "socket.io").exists():
            log("installing the Socket.IO baseline (npm ci)")
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=SOCKETIO, check=True, timeout=600)
    enter_namespace()

    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="sg-load-smoke-")) if args.smoke else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)

    interrupt_on_signals()

    results: dict = {"meta": {
        "command": shlex.join(["python3", "bench/load.py", *sys.argv[1:]]),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": sh("git", "rev-parse", "--short", "HEAD"),
        "machine": machine(),
        "config": {"targets": targets, "sizes": args.sizes, "liveness": livenesses, "settle": args.settle,
                   "window": args.window, "after": args.after, "profile": profile},
    }}
    status = 0
    relay_binaries = ["--no-build", "--gateway-bin", str(args.gateway_bin), "--bench-bin", str(args.bench_bin)]
    storm_binaries = ["--debug-build"] if args.debug_build else ["--no-build"]
    try:
        if "idle" in parts:
            results["idle"] = []
            for liveness in livenesses:
                for target in targets:
                    if TARGETS[target][0] == "socketio" and liveness != livenesses[0]:
                        continue  # Socket.IO has one setting: its default heartbeat
                    results["idle"].append(idle_run(args, target, liveness))
            if args.aggressive_wt_size and "wt" in targets:
                sizes, args.sizes = args.sizes, [args.aggressive_wt_size]
                results["idle"].append(idle_run(args, "wt", "aggressive"))
                args.sizes = sizes
        if "relay" in parts:
            relay_args = ["--targets", "signalgate,socketio", "--rates", args.rates, "--secs", str(args.relay_secs)]
            results["relay"] = run_part("relay.py", relay_args + (["--smoke"] if args.smoke else []) + relay_binaries,
                                        out_dir / "relay")
        if "storm" in parts:
            results["storm"] = run_part("storm.py", (["--smoke"] if args.smoke else []) + storm_binaries, out_dir / "storm")
    except KeyboardInterrupt:
        log("interrupted")
        results.setdefault("errors", []).append("interrupted")
        status = 130
    results["meta"]["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(write_report(results, out_dir))
    if not args.smoke:
        charts(results, out_dir)
    log(f"results in {out_dir}")

    lost = [f"{r['label']}: {s['sessions'] - s['connected']} not set up, {s['dropped']} dropped"
            for r in results.get("idle", []) for s in r["steps"] if s["connected"] < s["sessions"] or s["dropped"]]
    failures = lost + [f"{r['label']}: {r['error']}" for r in results.get("idle", []) if r.get("error")]
    failures += [e for part in ("relay", "storm") for e in results.get(part, {}).get("errors", [])]
    if failures and status == 0:
        for f in failures:
            log(f"FAILED: {f}")
        status = 1 if args.smoke else status
    return status


if __name__ == "__main__":
    run_main(main, "load.py")
