#!/usr/bin/env python3
"""Where a gateway's memory per session goes: a heap profile (heaptrack) of a gateway holding N
quiet sessions, the bytes live at its peak summed by component and divided by N.

The gateway runs under heaptrack on loopback (temporary development certificate); N clients
(`signalgate-bench clients`, each session alone in its own room) connect over the chosen
transport and stay; once every one is connected and a few seconds have passed, the clients are
killed and the gateway is stopped (its peak is the moment all N were connected). Each
allocation live at the peak is charged to the innermost frame of its backtrace that belongs to
a known component (rustls, tungstenite, quinn, tokio tasks, our hub, ...), so "rustls" means
"allocated by rustls code", whatever rustls was called by.

    python3 bench/heap_per_session.py --sessions 2000 --transport ws
    python3 bench/heap_per_session.py --sessions 2000 --transport wt --top 15

Needs heaptrack (Debian: heaptrack) and release builds with line tables, so that the frames
have names: CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -p signalgate
-p signalgate-bench (the script builds them into --target-dir unless --no-build). heaptrack
slows every allocation: the figures are bytes, not times. Bounded in time; no root.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Frames of containers and allocators are skipped: the allocation is charged to the first frame
# outside them (the owner of the Vec, HashMap, BytesMut, Box, decoded message ...).
CONTAINERS = re.compile(r"^/rustc/|/(hashbrown|bytes|slab|smallvec|indexmap|prost|allocator-api2)-[0-9]")
COMPONENTS = [
    ("tokio channels", re.compile(r"/tokio-[0-9.]+/src/sync/")),
    ("tokio tasks (spawned futures)", re.compile(r"/tokio-[0-9.]+/src/(runtime/task|task)/|/tokio-util-")),
    ("tokio I/O", re.compile(r"/tokio-[0-9.]+/src/|/mio-")),
    ("rustls (TLS state, buffers)", re.compile(r"/(tokio-)?rustls-[0-9]")),
    ("tungstenite (WebSocket)", re.compile(r"/(tokio-)?tungstenite-[0-9]")),
    ("quinn (QUIC)", re.compile(r"/quinn(-proto|-udp)?-[0-9]")),
    ("wtransport (WebTransport)", re.compile(r"/wtransport(-proto)?-[0-9]")),
    ("hyper (HTTP, upgrade)", re.compile(r"/hyper(-util)?-[0-9]")),
    ("hub: sessions, rooms, streams (src/core)", re.compile(r"^src/core/")),
    ("our transports (src/transport)", re.compile(r"^src/transport/")),
    ("our server (src/server)", re.compile(r"^src/server/")),
]
OURS = re.compile(r"^src/(core|transport|server|client|config|metrics|main|lib|proto)\b")
UNITS = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def peaks(text: str):
    """(bytes at the peak, [frame paths innermost first]) per backtrace of `heaptrack_print -p -m 0`."""
    section = text.split("PEAK MEMORY CONSUMERS", 1)[-1].split("MOST TEMPORARY ALLOCATIONS", 1)[0]
    entry = None
    for line in section.splitlines():
        m = re.match(r"^([0-9.]+)([BKMG]) peak memory consumed over", line)
        if m:
            if entry:
                yield entry
            entry = (float(m.group(1)) * UNITS[m.group(2)], [])
        elif entry and line.strip().startswith("at "):
            entry[1].append(line.strip()[3:])
    if entry:
        yield entry


class Resolver:
    """Debug info names some files relative to their crate ("src/server/tls13.rs" is rustls's):
    a relative path is ours if this repository has it, else the registry crate (of Cargo.lock)
    that has it."""

    def __init__(self) -> None:
        lock = (ROOT / "Cargo.lock").read_text()
        packages = re.findall(r'name = "([^"]+)"\nversion = "([^"]+)"', lock)
        registry = Path.home() / ".cargo" / "registry" / "src"
        roots = [d for d in registry.iterdir() if d.is_dir()] if registry.is_dir() else []
        self.crates = [r / f"{n}-{v}" for n, v in packages for r in roots if (r / f"{n}-{v}").is_dir()]
        self.cache: dict[str, str] = {}

    def __call__(self, at: str) -> str:
        path = at.rsplit(":", 1)[0]
        if path.startswith("/"):
            return at
        if path in self.cache:
            return self.cache[path] + at
        if (ROOT / path).exists() or path.startswith("library/"):
            prefix = ""
        else:
            hits = [c for c in self.crates if (c / path).exists()]
            prefix = f"{hits[0]}/" if len(hits) == 1 else ""
        self.cache[path] = prefix
        return prefix + at


def owner(paths: list[str], resolve: Resolver) -> tuple[str, str]:
    """(component, site): the first frame outside the containers, and our first frame."""
    paths = [resolve(p) for p in paths]
    inner = next((p for p in paths if not CONTAINERS.search(p) and not p.startswith("library/")), "")
    ours = next((p for p in paths if p.startswith("src/")), "")
    for name, pattern in COMPONENTS:
        if inner and pattern.search(inner):
            return name, f"{short(inner)} <- {ours or '?'}"
    return "other", f"{short(inner) or '?'} <- {ours or '?'}"


def short(path: str) -> str:
    return re.sub(r"^.*/registry/src/[^/]+/", "", path)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cert_sha256(cert_dir: Path, deadline: float) -> str:
    while time.time() < deadline:
        pems = sorted(cert_dir.glob("*cert*.pem"))
        if pems:
            der = ssl.PEM_cert_to_DER_cert(pems[0].read_text())
            return hashlib.sha256(der).hexdigest()
        time.sleep(0.1)
    raise SystemExit("the gateway wrote no development certificate")


def gateway_pids(group: int, exe: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == group and Path(os.readlink(entry / "exe")) == exe.resolve():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def profile(args: argparse.Namespace, gw: Path, bench: Path, work: Path) -> Path:
    port = 17443 + os.getpid() % 1000
    url = f"wss://127.0.0.1:{port}/ws" if args.transport == "ws" else f"https://127.0.0.1:{port}/wt"
    gateway = subprocess.Popen(
        ["heaptrack", "-o", str(work / "heap"), str(gw), "serve", "--listen", f"127.0.0.1:{port}",
         "--http-listen", "off", "--metrics-listen", "off", "--dev-cert-dir", str(work),
         "--max-connections-per-ip", "0", "--new-connections-per-ip-per-sec", "0",
         "--max-handshakes", "8192", "--max-pending-hellos", "65536", "--log", "warn"],
        stdout=open(work / "gateway.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    clients = None
    try:
        sha = cert_sha256(work, time.time() + 30)
        time.sleep(1.0)
        clients = subprocess.Popen(
            [str(bench), "clients", "--url", url, "--cert-sha256", sha, "--count", str(args.sessions),
             "--room-prefix", "h-", "--concurrency", "100", "--max-secs", str(args.max_secs),
             "--bind", "127.0.0.2,127.0.0.3"],
            stdout=open(work / "clients.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + args.max_secs
        while time.time() < deadline and '"ready"' not in (work / "clients.log").read_text():
            if clients.poll() is not None:
                raise SystemExit(f"the clients exited: {(work / 'clients.log').read_text()[-2000:]}")
            time.sleep(0.5)
        connected = re.findall(r'"connected":(\d+)', (work / "clients.log").read_text())
        log(f"{connected[-1] if connected else '?'} of {args.sessions} sessions connected; holding {args.hold:g} s")
        time.sleep(args.hold)
    finally:
        if clients and clients.poll() is None:
            os.killpg(clients.pid, signal.SIGKILL)
        # Only the gateway itself: heaptrack's own processes must live to write the data.
        for pid in gateway_pids(gateway.pid, gw):
            os.kill(pid, signal.SIGTERM)
        try:
            gateway.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(gateway.pid, signal.SIGKILL)
    files = sorted(work.glob("heap*"))
    if not files:
        raise SystemExit(f"heaptrack wrote nothing: {(work / 'gateway.log').read_text()[-2000:]}")
    return files[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--transport", choices=["ws", "wt"], default="ws")
    ap.add_argument("--hold", type=float, default=5.0, help="seconds the sessions stay after all connected")
    ap.add_argument("--top", type=int, default=12, help="allocation sites listed under the table")
    ap.add_argument("--max-secs", type=int, default=240)
    ap.add_argument("--from", dest="from_file", type=Path, default=None,
                    help="analyse this heaptrack data file (of --sessions sessions) instead of running")
    ap.add_argument("--keep", type=Path, default=None, help="copy heaptrack's data file here (heaptrack_print reads it)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--target-dir", type=Path, default=ROOT / "target" / "heap-profile")
    args = ap.parse_args()
    if not args.no_build and not args.from_file:
        log(f"building with line tables into {args.target_dir}")
        env = dict(os.environ, CARGO_TARGET_DIR=str(args.target_dir), CARGO_PROFILE_RELEASE_DEBUG="line-tables-only")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "signalgate", "-p", "signalgate-bench"],
                       cwd=ROOT, env=env, check=True, timeout=1800)
    gw, bench = args.target_dir / "release" / "signalgate", args.target_dir / "release" / "signalgate-bench"
    with tempfile.TemporaryDirectory(prefix="heap-") as tmp:
        work = Path(tmp)
        data = args.from_file or profile(args, gw, bench, work)
        if args.keep:
            shutil.copy(data, args.keep)
        printed = subprocess.run(["heaptrack_print", "-f", str(data), "-p", "-m", "0", "-n", "1000000", "-s", "0"],
                                 capture_output=True, text=True, check=True, timeout=600).stdout
    by_component: dict[str, float] = collections.Counter()
    by_site: dict[str, float] = collections.Counter()
    resolve = Resolver()
    for cost, paths in peaks(printed):
        component, site = owner(paths, resolve)
        by_component[component] += cost
        by_site[site] += cost
    total = sum(by_component.values())
    n = args.sessions
    print(f"\nheap live at the peak, {n} quiet {args.transport} sessions: {total / 2**20:.1f} MiB, "
          f"{total / n / 1024:.1f} KiB per session\n")
    print("| component (innermost frame) | KiB per session | share |")
    print("|---|---:|---:|")
    for name, cost in sorted(by_component.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {cost / n / 1024:.2f} | {100 * cost / total:.0f} % |")
    print(f"\ntop {args.top} allocation sites (owner <- our first frame), KiB per session:")
    for site, cost in by_site.most_common(args.top):
        print(f"  {cost / n / 1024:7.2f}  {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
