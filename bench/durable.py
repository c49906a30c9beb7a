#!/usr/bin/env python3
"""Durable-mode benchmark: what `--durable true` costs and whether it holds, on one box.

In durable mode (cluster mode plus `--durable true`) every session's stream and state are kept
in a JetStream stream `SIGNALGATE_<cluster name>` replicated `--durable-replicas` times (3 by
default), and a frame counts (goes to its client, is acknowledged to its sender) only once
stored. Four measurements:

1. **cost** — relay one-way latency with and without durability, on the machinery of
   bench/cluster.py (`relay_once`: `signalgate-bench relay`, P pairs of 200-byte numbered
   signals, fresh gateways a and b per run on a 3-node NATS cluster with JetStream, a on
   n0 and b on n1). Topologies *same* (both ends on a) and *cross* (receivers on b, a NATS
   route in the path); modes *plain* (cluster mode), *durable* (R3) and, for comparison,
   *durable-r1*. At 1,000 signals/s each cell `--repeat` times (rounds over every cell), then
   higher rates once each to find where durability's limit is: the first rate whose p99
   exceeds `--limit-p99-ms` or that loses, refuses or leaves unacknowledged a signal, or
   reaches less than 95 % of the rate asked. Per run: latency p50/p99/p99.9/max, the sender's
   Ack, lost / refused / never acknowledged, CPU of both gateways, the NATS servers and the
   load generator, and from the gateways' /metrics over the sending interval: JetStream
   records stored per signal relayed (`signalgate_durable_writes_total`) and the write latency
   histogram (`signalgate_durable_write_seconds`, p50/p99).
2. **storage** — per session held: one gateway (resume window 600 s) with N idle sessions,
   each alone in its room (`signalgate-bench clients`; they never Ack); then N more sessions
   as N/2 relay pairs whose receivers never acknowledge (`relay --ack-every 0`), each receiver
   sent ~H signals of 200 bytes, and whose connections then end: held while away, unacked.
   After each step: the stream's messages and bytes (nats-server monitoring, `/jsz?streams=true`,
   the stream leader's `state`), its files on disk (all replicas), the gateway's RSS and the NATS
   servers' RSS, each per session; with (durable, R3) and without (plain cluster mode) durability.
3. **failures** — tests/durable.rs (a sender streams 1,000 signals to a receiver on another
   gateway while the receiver's gateway, the sender's gateway, a NATS node, or a gateway and a
   NATS node are SIGKILLed) run K times per scenario, from its release test binary
   (`cargo test --release --test durable --no-run`): passes/runs, the printed
   `sent/refused/received` accounting and `resumed ... in X` times.
4. **jetstream** — JetStream alone, no gateway: this process appends to a stream configured as
   the gateways' the way they do (`Nats-Msg-Id`, `Nats-Expected-Last-Subject-Sequence`, one
   append in flight per session log), with and without the purges the gateway compacted its
   logs with before 80fc3af (in lockstep or spread), and with JetStream's own limit of records
   per log (what it does since): ack latency, stalls, NATS CPU. The floor under part 1.

Durable runs start only once the gateways' stream exists: until a new session's first record
is stored its frames are not held back (bench/README.md). Every binary is built, and copied
into the run's work dir, before anything is measured.

It measures, it does not judge: the figures go to results.json and report.md (default
bench/results/durable/); it exits non-zero only when the benchmark itself failed. Every process
is started in its own process group, bounded in time, and stopped on every exit path (normal
end, error, Ctrl-C, SIGTERM).

    python3 bench/durable.py                      # everything (~13 min on 2 cores)
    python3 bench/durable.py --smoke              # small sizes, < 90 s after the build
    python3 bench/durable.py --only cost --rates 1000 --limit-rates 2000,5000,10000 --repeat 3
    python3 bench/durable.py --only storage --storage-sessions 2000 --held-signals 10
    python3 bench/durable.py --only failures --failure-runs 5 --scenarios receivers-gateway,nats-node
    python3 bench/durable.py --only jetstream --probe-variants appends,purges-lockstep,limit-256

Python 3 standard library only. Needs no root (loopback only). Needs nats-server with
JetStream (Debian: /usr/sbin/nats-server).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import relay  # noqa: E402  (bench/relay.py: machine info, formatting)
from cluster import (  # noqa: E402  (bench/cluster.py: NATS, gateways, the relay run)
    BENCH_LIMITS, CLIENT_SOURCES, CLIENTS_PER_PROCESS, SETTINGS, CpuMeter, Nats, Run, build, f, histogram,
    histogram_delta, histogram_summary, http_get, percentile, relay_once, rss_mb, stats, wait_for,
)
from procs import BenchError, Guarded, Procs, interrupt_on_signals, publish, run_main  # noqa: E402
from relay import log  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "durable"

WRITES = "signalgate_durable_writes_total"
WRITE_SECONDS = "signalgate_durable_write_seconds"
METRIC_PREFIXES = ("signalgate_durable_", "signalgate_cluster_messages_total")
STREAM_PREFIX = "SIGNALGATE_"
STREAM_READY = "durable session logs ready"  # the gateway's INFO line once its stream exists

# The scenarios of tests/durable.rs: name -> (test function, the name it prints, what is killed).
SCENARIOS = {
    "receivers-gateway": ("the_receivers_gateway_killed_loses_no_accepted_signal", "ReceiversGateway",
                          "SIGKILL of the receiver's gateway"),
    "senders-gateway": ("the_senders_gateway_killed_delivers_every_accepted_signal_once", "SendersGateway",
                        "SIGKILL of the sender's gateway"),
    "nats-node": ("a_nats_node_killed_loses_no_accepted_signal", "NatsNode", "SIGKILL of one NATS node"),
    "gateway-and-nats-node": ("a_gateway_and_a_nats_node_killed_together_lose_no_accepted_signal",
                              "GatewayAndNatsNode", "SIGKILL of the receiver's gateway and of a NATS node at once"),
}
ACCOUNTING = re.compile(r"(?P<scenario>\w+): (?P<sent>\d+) sent, (?P<refused>\d+) refused, (?P<received>\d+) received")
RESUMED = re.compile(r"(?P<who>\w+) \((?P<role>sender|receiver)\) resumed on gateway (?P<gateway>\d+) in "
                     r"(?P<value>[0-9.]+)(?P<unit>ns|µs|us|ms|s)\b")
RETRIED = re.compile(r"^(?P<who>\w+) \((?P<role>sender|receiver)\): (?P<message>.+)$")
UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def durable_flags(replicas: int) -> list[str]:
    return ["--durable", "true", "--durable-replicas", str(replicas)]


MODES = {
    # name: (gateway flags, replicas)
    "plain": ([], None),
    "durable": (durable_flags(3), 3),
    "durable-r1": (durable_flags(1), 1),
}


class DurableRun(Run):
    """bench/cluster.py's Run, whose durable gateways are ready only once their stream is: a
    gateway creates it in the background after connecting to NATS, and until a session's first
    record is stored its frames are not held back (see bench/README.md), so a run must not
    start before."""

    def gateways(self, nodes, what, setting, extra, resume_window=None, nats_pin=None):
        gws = super().gateways(nodes, what, setting, extra, resume_window, nats_pin)
        if "--durable" in extra:
            t0 = time.time()
            ready = wait_for(lambda: all(STREAM_READY in gw.proc.err.read_text(errors="replace") for gw in gws), 30, 0.05)
            if not ready:
                for gw in gws:
                    self.procs.stop(gw.proc)
                raise BenchError(f"the gateways' stream was not ready within 30 s: {gws[0].proc.err.read_text(errors='replace')[-1500:]}")
            log(f"  their stream is ready after {time.time() - t0:.2f} s more")
        return gws


# --------------------------------------------------------------------------------------------
# JetStream: the monitoring endpoint, and a minimal NATS client for the JetStream API
# --------------------------------------------------------------------------------------------


def nats_request(port: int, subject: str, payload: bytes = b"", timeout: float = 5.0) -> dict:
    """One request over the NATS text protocol (CONNECT, SUB to an inbox, PUB with it as the
    reply subject), its JSON answer; the JetStream API is such requests."""
    inbox = f"_INBOX.sgbench{os.getpid()}.{random.getrandbits(48):x}"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        stream = sock.makefile("rb")
        if not stream.readline().startswith(b"INFO "):
            raise BenchError(f"NATS at {port} did not greet with INFO")
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"name":"bench/durable.py"}\r\n'
                     + f"SUB {inbox} 1\r\nPUB {subject} {inbox} {len(payload)}\r\n".encode() + payload + b"\r\n")
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = stream.readline()
            if not line:
                break
            if line.startswith(b"PING"):
                sock.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise BenchError(f"NATS at {port}: {line.decode(errors='replace').strip()}")
            elif line.startswith(b"MSG "):
                size = int(line.split()[-1])
                body = stream.read(size + 2)[:size]
                return json.loads(body)
    raise BenchError(f"no answer to {subject} from NATS at {port} within {timeout:g} s")


def stream_names(nats: Nats) -> list[str]:
    answer = nats_request(nats.client[0], "$JS.API.STREAM.NAMES")
    return [s for s in answer.get("streams") or [] if s.startswith(STREAM_PREFIX)]


def delete_streams(nats: Nats) -> int:
    """Deletes every SIGNALGATE_* stream (each run's gateways made one): an idle replicated
    stream is a Raft group that keeps the NATS servers busy."""
    deleted = 0
    for name in stream_names(nats):
        answer = nats_request(nats.client[0], f"$JS.API.STREAM.DELETE.{name}")
        if not answer.get("success"):
            log(f"  could not delete the stream {name}: {answer.get('error')}")
        else:
            deleted += 1
    return deleted


def stream_state(nats: Nats, name: str) -> dict | None:
    """The stream's state as its leader reports it on the monitoring port (`/jsz?streams=true`:
    messages, bytes, sequences), with every node's own view of its replica."""
    views, leader = {}, None
    for i, port in enumerate(nats.monitor):
        status, body = http_get(f"http://127.0.0.1:{port}/jsz?streams=true&accounts=true", timeout=5)
        if status != 200:
            continue
        for account in json.loads(body).get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == name:
                    views[f"n{i}"] = detail.get("state", {})
                    leader = (detail.get("cluster") or {}).get("leader") or leader
    if not views:
        return None
    state = views.get(leader) or max(views.values(), key=lambda s: s.get("last_seq", 0))
    return {"leader": leader, "messages": state.get("messages", 0), "bytes": state.get("bytes", 0),
            "first_seq": state.get("first_seq"), "last_seq": state.get("last_seq"),
            "num_deleted": state.get("num_deleted", 0),
            "replicas": {node: {"messages": s.get("messages"), "bytes": s.get("bytes")} for node, s in views.items()}}


def jetstream_api_total(nats: Nats) -> int | None:
    """JetStream API requests the NATS servers handled (`/jsz` api.total, summed): stream
    creation and information, purges (a session log's compaction), deletions; not appends."""
    total = 0
    for port in nats.monitor:
        status, body = http_get(f"http://127.0.0.1:{port}/jsz", timeout=5)
        if status != 200:
            return None
        total += (json.loads(body).get("api") or {}).get("total", 0)
    return total


def disk_bytes(dirs: list[Path], name: str) -> int:
    """Bytes of the stream's files in every node's store dir (every replica)."""
    total = 0
    for store in dirs:
        for path in store.glob(f"jetstream/*/streams/{name}"):
            for root, _, files in os.walk(path):
                for file in files:
                    try:
                        total += os.path.getsize(os.path.join(root, file))
                    except OSError:
                        pass
    return total


# --------------------------------------------------------------------------------------------
# Histograms
# --------------------------------------------------------------------------------------------


def histogram_sum(hists: list[dict]) -> dict:
    """Several gateways' histograms of one metric, as one."""
    buckets: dict[float, float] = {}
    for h in hists:
        for le, v in h["buckets"]:
            buckets[le] = buckets.get(le, 0.0) + v
    return {"buckets": sorted(buckets.items()), "count": sum(h["count"] for h in hists),
            "sum": sum(h["sum"] for h in hists)}


def histogram_quantile(h: dict, q: float) -> float | None:
    """An estimate of the q quantile, interpolated linearly inside its bucket (as Prometheus'
    histogram_quantile), in ms; the +Inf bucket gives its lower bound."""
    count = h["count"]
    if not count:
        return None
    rank, lower, below = q * count, 0.0, 0.0
    for le, cumulative in h["buckets"]:
        if cumulative >= rank:
            if le == float("inf"):
                return round(lower * 1000, 3)
            inside = cumulative - below
            return round(1000 * (lower + (le - lower) * ((rank - below) / inside if inside else 1.0)), 3)
        lower, below = le, cumulative
    return None


def series(samples: dict, key: str) -> float:
    """A series summed over every gateway of a metrics sample."""
    return sum(m.get(key, 0.0) for m in samples.values())


def durable_summary(metrics: dict, signals: int) -> dict | None:
    """JetStream records per signal and their write latency over the sending interval (from the
    "ready" to the "sent" sample; relay_once's), plus what the set-up and the teardown wrote."""
    if not metrics or "ready" not in metrics or "sent" not in metrics:
        return None
    out: dict = {}
    for outcome in ("stored", "unavailable", "conflict"):
        key = f'{WRITES}{{outcome="{outcome}"}}'
        out[f"writes_{outcome}"] = int(series(metrics["sent"], key) - series(metrics["ready"], key))
    key = f'{WRITES}{{outcome="stored"}}'
    out["writes_setup"] = int(series(metrics["ready"], key) - series(metrics["before"], key))
    if "end" in metrics:
        out["writes_after_sending"] = int(series(metrics["end"], key) - series(metrics["sent"], key))
    out["writes_per_signal"] = round(out["writes_stored"] / signals, 3) if signals else None
    hists = [histogram_delta(histogram(metrics["ready"][node], WRITE_SECONDS), histogram(metrics["sent"][node], WRITE_SECONDS))
             for node in metrics["sent"] if node in metrics["ready"]]
    h = histogram_sum(hists)
    out["write_seconds"] = histogram_summary(h)
    out["write_p50_ms_est"] = histogram_quantile(h, 0.50)
    out["write_p99_ms_est"] = histogram_quantile(h, 0.99)
    envelopes = 'signalgate_cluster_messages_total{direction="sent"}'
    out["cluster_envelopes_per_signal"] = round(
        (series(metrics["sent"], envelopes) - series(metrics["ready"], envelopes)) / signals, 3) if signals else None
    return out


# --------------------------------------------------------------------------------------------
# 1. cost
# --------------------------------------------------------------------------------------------


def refused_of(result: dict) -> dict[str, int]:
    """Errors the senders received, by code (a refused signal; RATE_LIMITED would be the
    benchmark's own limits)."""
    return {k.split(":", 2)[2]: int(v) for k, v in (result.get("other_frames") or {}).items()
            if k.startswith("sender:error:")}


def cost_once(run: Run, rate: float, topology: str, mode: str, phase: str) -> dict:
    extra, replicas = MODES[mode]
    log(f"cost [{phase}] {mode}{' R' + str(replicas) if replicas else ''}, {topology}, {rate:g}/s")
    api_before = jetstream_api_total(run.nats)
    try:
        result = relay_once(run, rate, topology, extra, METRIC_PREFIXES)
        api_after = jetstream_api_total(run.nats)
    finally:
        if replicas:
            try:
                delete_streams(run.nats)
            except (BenchError, OSError) as error:
                log(f"  could not delete the streams: {error}")
    signals = result["sent"] + result["sent_warmup"]
    metrics = result.pop("gateway_metrics", {})
    result.update({
        "mode": mode, "replicas": replicas, "phase": phase,
        "signals_relayed": signals,
        "refused": refused_of(result),
        "durable": durable_summary(metrics, signals) if replicas else None,
        "gateway_metrics_sent": metrics.get("sent"),
    })
    d = result["durable"]
    if d:
        # Over the whole run (set-up, sending, teardown): mostly the logs' compactions (purges).
        d["jetstream_api_requests"] = api_after - api_before if api_before is not None and api_after is not None else None
        d["jetstream_api_requests_per_signal"] = round(d["jetstream_api_requests"] / signals, 3) \
            if d["jetstream_api_requests"] is not None and signals else None
        log(f"  JetStream records stored per signal {d['writes_per_signal']} ({d['writes_stored']} for {signals}; "
            f"{d['writes_unavailable']} unavailable), write p50 ≈ {d['write_p50_ms_est']} ms, p99 ≈ {d['write_p99_ms_est']} ms "
            f"(≤ {d['write_seconds']['p99_le_ms']} ms); JetStream API requests per signal {d['jetstream_api_requests_per_signal']}; "
            f"refused {sum(result['refused'].values())}")
    return result


def holds(r: dict, p99_limit_ms: float) -> tuple[bool, str]:
    """Whether a run kept up, and why not."""
    why = []
    if r["latency_ms"]["p99"] is None or r["latency_ms"]["p99"] > p99_limit_ms:
        why.append(f"p99 {r['latency_ms']['p99']} ms > {p99_limit_ms:g} ms")
    if r["lost"]:
        why.append(f"{r['lost']} lost")
    if sum(r["refused"].values()):
        why.append(f"{sum(r['refused'].values())} refused ({', '.join(r['refused'])})")
    if r.get("never_acked"):
        why.append(f"{r['never_acked']} never acknowledged")
    if r["rate_achieved"] < 0.95 * r["rate_asked"]:
        why.append(f"{r['rate_achieved']:g}/s achieved")
    if r.get("connections_closed"):
        why.append(f"{r['connections_closed']} connections closed")
    if why and (r.get("others_cpu_percent") or 0) > relay.DISTURBED_PERCENT:
        why.append(f"disturbed: other processes {r['others_cpu_percent']:g} % of a core")
    return (not why), "; ".join(why)


def cost_scenario(run: Run, results: dict) -> None:
    """The base cells in rounds, then the replica comparison, then the higher rates. A run
    that gives no result is noted (results.json "failed_runs", the report) and the rest goes on."""
    args = run.args
    out = results["cost"]

    def one(rate: float, topology: str, mode: str, phase: str, round_: int) -> None:
        try:
            r = cost_once(run, rate, topology, mode, phase)
        except BenchError as error:
            log(f"  no result: {error}")
            out["failed_runs"].append({"rate_asked": rate, "topology": topology, "mode": mode, "phase": phase,
                                       "round": round_, "error": str(error)[:3000]})
            return
        r["round"] = round_
        out["runs"].append(r)

    base = [(rate, topology, mode) for rate in args.rate_list for topology in args.topologies for mode in args.modes]
    for attempt in range(args.first_round, args.first_round + args.repeat):
        for rate, topology, mode in base:
            one(rate, topology, mode, "base", attempt)
    for replicas in args.compare_replicas:
        mode = f"durable-r{replicas}"
        MODES.setdefault(mode, (durable_flags(replicas), replicas))
        for rate in args.rate_list[:1]:
            for topology in args.topologies:
                one(rate, topology, mode, "replicas", 1)
    for attempt in range(args.limit_repeat):
        for rate in args.limit_rate_list:
            for topology in args.topologies:
                for mode in args.limit_modes:
                    one(rate, topology, mode, "limit", attempt + 1)
    if args.merge_from and args.merge_from.get("cost"):
        # The runs of an earlier result file that these did not measure again (same phase,
        # rate, topology, mode and round), first.
        def key(r: dict) -> tuple:
            return (r["phase"], r["rate_asked"], r["topology"], r["mode"], r["round"])
        again = {key(r) for r in out["runs"]}
        kept = [r for r in args.merge_from["cost"].get("runs", []) if key(r) not in again]
        for r in kept:
            r.setdefault("from_run", args.merge_from["meta"]["started"])
        order = {"base": 0, "replicas": 1, "limit": 2}
        out["runs"] = sorted(kept + out["runs"], key=lambda r: (order.get(r["phase"], 3), r["rate_asked"], r["round"]))
        out["failed_runs"] = args.merge_from["cost"].get("failed_runs", []) + out["failed_runs"]
        out["config"]["merged_with"] = args.merge_from["meta"]["command"] + " at " + args.merge_from["meta"]["started"]
    for r in out["runs"]:
        r["holds"], r["holds_not_because"] = holds(r, args.limit_p99_ms)
    out["added_p99"] = added_p99(out["runs"])
    out["limits"] = limits(out["runs"])


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def added_p99(runs: list[dict]) -> list[dict]:
    """Per rate of the base cells and topology: durable p99 − plain p99 (medians over the
    rounds; and the per-round differences)."""
    table = []
    base = [r for r in runs if r["phase"] == "base"]
    modes = list(dict.fromkeys(r["mode"] for r in base))
    for rate in sorted({r["rate_asked"] for r in base}):
        for topology in dict.fromkeys(r["topology"] for r in base):
            cell = {}
            for mode in modes:
                cell[mode] = [r for r in runs if r["phase"] == "base" and r["rate_asked"] == rate
                              and r["topology"] == topology and r["mode"] == mode]
            if "plain" not in cell or not cell["plain"]:
                continue
            # Rounds that other processes disturbed (> DISTURBED_PERCENT of a core) count only
            # when a mode has no undisturbed one.
            for mode in cell:
                quiet = [r for r in cell[mode] if (r.get("others_cpu_percent") or 0) <= relay.DISTURBED_PERCENT]
                cell[mode] = quiet or cell[mode]
            plain = [r["latency_ms"]["p99"] for r in cell["plain"]]
            row = {"rate": rate, "topology": topology, "plain_p99_ms": plain, "plain_median_ms": median(plain),
                   "plain_rounds": [r["round"] for r in cell["plain"]]}
            for mode in [m for m in modes if m != "plain"]:
                p99s = [r["latency_ms"]["p99"] for r in cell.get(mode, [])]
                by_round = {r["round"]: r["latency_ms"]["p99"] for r in cell.get(mode, [])}
                row[mode] = {
                    "p99_ms": p99s, "median_ms": median(p99s), "rounds": [r["round"] for r in cell.get(mode, [])],
                    "added_median_ms": round(median(p99s) - median(plain), 3) if p99s and plain else None,
                    "added_per_round_ms": [round(by_round[p["round"]] - p["latency_ms"]["p99"], 3)
                                           for p in cell["plain"] if p["round"] in by_round],
                    "p50_added_median_ms": round(median([r["latency_ms"]["p50"] for r in cell[mode]])
                                                 - median([r["latency_ms"]["p50"] for r in cell["plain"]]), 3) if p99s else None,
                    "max_ms": [r["latency_ms"]["max"] for r in cell[mode]],
                }
            table.append(row)
    return table


def limits(runs: list[dict]) -> list[dict]:
    """Per mode and topology, over every rate measured: the highest rate that held and the
    first that did not (every run of a rate must hold)."""
    out = []
    modes = dict.fromkeys(r["mode"] for r in runs)
    for mode in modes:
        for topology in dict.fromkeys(r["topology"] for r in runs):
            by_rate: dict[float, list[dict]] = {}
            for r in runs:
                if r["mode"] == mode and r["topology"] == topology:
                    by_rate.setdefault(r["rate_asked"], []).append(r)
            if not by_rate:
                continue
            held, failed = None, None
            for rate in sorted(by_rate):
                ok = all(r["holds"] for r in by_rate[rate])
                if ok and failed is None:
                    held = rate
                elif not ok and failed is None:
                    failed = {"rate": rate, "why": [r["holds_not_because"] for r in by_rate[rate] if not r["holds"]]}
            later = [rate for rate in sorted(by_rate) if failed and rate > failed["rate"]
                     and all(r["holds"] for r in by_rate[rate])]
            out.append({"mode": mode, "topology": topology, "rates": sorted(by_rate), "highest_held": held,
                        "first_failed": failed, "held_again_above": later})
    return out


# --------------------------------------------------------------------------------------------
# 2. storage
# --------------------------------------------------------------------------------------------


def nats_rss_mb(nats: Nats) -> float:
    return round(sum(rss_mb(pid) or 0.0 for pid in nats.pids()), 1)


def settle(nats: Nats, name: str | None, quiet_s: float = 3.0, bound: float = 60.0) -> dict | None:
    """Waits until the stream's last sequence has not moved for `quiet_s` (the gateway wrote
    what it had to), at most `bound` s; its state then. Without a stream: `quiet_s`."""
    if name is None:
        time.sleep(quiet_s)
        return None
    deadline = time.time() + bound
    last, since = None, time.time()
    while time.time() < deadline:
        state = stream_state(nats, name)
        key = state and (state["last_seq"], state["messages"])
        if key != last:
            last, since = key, time.time()
        elif time.time() - since >= quiet_s:
            return state
        time.sleep(0.5)
    return stream_state(nats, name)


def storage_once(run: Run, mode: str) -> dict:
    args = run.args
    extra, replicas = MODES[mode]
    n = args.storage_sessions
    pairs = max(1, n // 2)
    log(f"storage, {mode}: {n} idle sessions, then {2 * pairs} sessions in {pairs} pairs holding ~{args.held_signals} "
        f"signals of {args.bytes} B per receiver, away")
    gws = run.gateways(["a"], f"storage{mode.replace('-', '')}", SETTINGS["default"], BENCH_LIMITS + extra,
                       resume_window=args.storage_resume_window)
    a = gws[0]
    name = f"{STREAM_PREFIX}storage{mode.replace('-', '')}{run.sets}" if replicas else None
    clients = []
    steps = {}
    try:
        if name and not wait_for(lambda: stream_state(run.nats, name) is not None, 20, 0.3):
            raise BenchError(f"the stream {name} did not appear")

        def step(label: str, sessions: int) -> dict:
            state = settle(run.nats, name, quiet_s=args.settle)
            s = {"sessions_total": sessions, "gateway_rss_mb": rss_mb(a.pid), "nats_rss_mb": nats_rss_mb(run.nats),
                 "stream": state, "disk_bytes": disk_bytes(run.nats.store_dirs, name) if name else None,
                 "t": round(time.time(), 3)}
            metrics = a.metrics()
            s["sessions_metrics"] = {k: v for k, v in metrics.items() if k.startswith("signalgate_sessions")}
            s["durable_writes_stored"] = metrics.get(f'{WRITES}{{outcome="stored"}}')
            log(f"  {label}: {sessions} sessions; gateway RSS {s['gateway_rss_mb']} MB, NATS RSS {s['nats_rss_mb']} MB"
                + (f"; stream {state['messages']} messages, {state['bytes']} B; {s['disk_bytes']} B on disk (all replicas)"
                   if state else ""))
            return s

        steps["empty"] = step("empty", 0)
        t0 = time.time()
        for first in range(0, n, CLIENTS_PER_PROCESS):
            count = min(CLIENTS_PER_PROCESS, n - first)
            clients.append(run.clients(a.url, a.sha256, f"idle-{mode}-", count, 1, CLIENT_SOURCES, 900, 0.0,
                                       f"clients-storage-{mode}-{first}", first=first))
        readies = run.procs.wait_ready(clients, 60 + n / 20, f"{n} idle clients")
        connected = sum(r["connected"] for r in readies)
        log(f"  {connected}/{n} idle sessions in {time.time() - t0:.1f} s")
        steps["idle"] = step("idle", connected)
        steps["idle"]["connected"] = connected

        # Held: N/2 pairs; the receivers never acknowledge; each sender sends one signal a
        # second for H seconds (1 s of it "warm-up"); then the load generator exits and every
        # session is away (within the resume window), holding what it was sent.
        secs = max(1.0, args.held_signals - 1.0)
        argv = [
            str(run.bench_bin), "relay", "--url", a.url, "--cert-sha256", a.sha256,
            "--pairs", str(pairs), "--bytes", str(args.bytes), "--rate", str(pairs), "--numbered",
            "--ack-every", "0", "--secs", str(secs), "--warmup-secs", "1", "--drain-secs", "2",
            "--room-prefix", f"held-{mode}-", "--max-secs", str(int(120 + pairs / 10 + secs)),
        ]
        proc = run.procs.spawn(f"relay-held-{mode}", argv)
        try:
            proc.popen.wait(timeout=150 + pairs / 10 + secs)
        except subprocess.TimeoutExpired:
            pass
        run.procs.stop(proc)
        lines = proc.json_lines()
        held = next((l for l in lines if l.get("event") == "result"), None)
        if held is None:
            errors = [l.get("error") for l in lines if l.get("event") == "error"]
            raise BenchError(f"the held relay gave no result: {errors or proc.err.read_text(errors='replace')[-2000:]}")
        signals = held["sent"] + held["sent_warmup"]
        received = held["received"] + held["received_warmup"]
        log(f"  {pairs} pairs: {signals} signals sent, {received} received, none acknowledged; the pairs' connections ended")
        steps["held"] = step("held (away)", connected + 2 * pairs)
        steps["held"].update({"pairs": pairs, "signals": signals, "received": received,
                              "refused": refused_of(held), "setup_secs": held.get("setup_secs"),
                              "connections_closed_during": held.get("connections_closed")})
        alive = a.proc.alive()
        logsum = a.log_summary()
    finally:
        for proc in clients:
            run.procs.stop(proc)
        for gw in gws:
            run.procs.stop(gw.proc)
        if replicas:
            try:
                delete_streams(run.nats)
            except (BenchError, OSError) as error:
                log(f"  could not delete the streams: {error}")

    def per(later: dict, earlier: dict, count: int) -> dict:
        out = {"sessions": count,
               "gateway_rss_bytes_per_session": round((later["gateway_rss_mb"] - earlier["gateway_rss_mb"]) * 2**20 / count)
               if count and later["gateway_rss_mb"] is not None else None,
               "nats_rss_bytes_per_session": round((later["nats_rss_mb"] - earlier["nats_rss_mb"]) * 2**20 / count) if count else None}
        if later["stream"] and earlier["stream"] and count:
            out["stream_messages_per_session"] = round((later["stream"]["messages"] - earlier["stream"]["messages"]) / count, 2)
            out["stream_bytes_per_session"] = round((later["stream"]["bytes"] - earlier["stream"]["bytes"]) / count, 1)
            out["disk_bytes_per_session"] = round((later["disk_bytes"] - earlier["disk_bytes"]) / count, 1)
        return out

    idle = per(steps["idle"], steps["empty"], steps["idle"]["connected"])
    held_per = per(steps["held"], steps["idle"], 2 * pairs)
    signals = steps["held"]["signals"]
    # What the held sessions cost beyond as many idle ones, per signal they hold.
    per_signal = {}
    for key in ("stream_bytes_per_session", "gateway_rss_bytes_per_session", "nats_rss_bytes_per_session",
                "stream_messages_per_session", "disk_bytes_per_session"):
        if held_per.get(key) is not None and idle.get(key) is not None and signals:
            per_signal[key.replace("_per_session", "_per_signal")] = round(
                (held_per[key] - idle[key]) * 2 * pairs / signals, 2)
    result = {"mode": mode, "replicas": replicas, "sessions": n, "pairs": pairs, "held_signals_asked": args.held_signals,
              "signal_bytes": args.bytes, "resume_window_s": args.storage_resume_window, "steps": steps,
              "per_idle_session": idle, "per_held_session": held_per,
              "per_held_signal_beyond_idle": per_signal, "gateway_alive": alive, "gateway_log": logsum}
    log(f"  per idle session: {idle}; per held session: {held_per}; per held signal beyond idle: {per_signal}")
    return result


# --------------------------------------------------------------------------------------------
# 3. failures
# --------------------------------------------------------------------------------------------


def test_binary(args) -> Path:
    """The release test binary of tests/durable.rs: built (cargo's JSON messages name it), or
    with --no-build the newest one in the target dir."""
    if args.test_binary:
        return args.test_binary
    target = args.target_dir.resolve()
    if args.no_build:
        found = sorted((p for p in (target / "release" / "deps").glob("durable-*")
                        if p.is_file() and os.access(p, os.X_OK) and not p.suffix),
                       key=lambda p: p.stat().st_mtime)
        if not found:
            raise BenchError(f"no durable test binary in {target}/release/deps (drop --no-build)")
        return found[-1]
    log("building the durable test binary (cargo test --release --test durable --no-run)")
    done = subprocess.run(["cargo", "test", "--release", "--test", "durable", "--no-run", "--message-format=json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env=dict(os.environ, CARGO_TARGET_DIR=str(target)))
    if done.returncode != 0:
        raise BenchError(f"cargo test --no-run failed: {done.stderr[-2000:]}")
    for line in done.stdout.splitlines():
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (message.get("reason") == "compiler-artifact" and message.get("executable")
                and message.get("target", {}).get("name") == "durable"):
            return Path(message["executable"])
    raise BenchError("cargo did not name the durable test binary")


def failure_once(procs: Procs, binary: Path, scenario: str, attempt: int, timeout: float) -> dict:
    test, printed, _ = SCENARIOS[scenario]
    t0 = time.time()
    proc = procs.spawn(f"test-{scenario}-{attempt}", [str(binary), "--nocapture", "--test-threads", "1", "--exact", test])
    timed_out = False
    try:
        proc.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    procs.stop(proc)  # its process group: the NATS servers and gateways it started, if still there
    seconds = round(time.time() - t0, 1)
    out = proc.out.read_text(errors="replace")
    err = proc.err.read_text(errors="replace")
    accounting = [m.groupdict() for m in ACCOUNTING.finditer(err) if m.group("scenario") == printed]
    resumes = [{"who": m["who"], "role": m["role"], "gateway": int(m["gateway"]),
                "seconds": round(float(m["value"]) * UNITS[m["unit"]], 3)} for m in RESUMED.finditer(err)]
    retries = [m.groupdict() for m in map(RETRIED.match, err.splitlines()) if m and "resumed on" not in m["message"]]
    passed = proc.popen.returncode == 0 and not timed_out and "1 passed" in out
    panic = []
    lines = err.splitlines()
    for i, line in enumerate(lines):
        if "panicked at" in line:
            panic = [l[:400] for l in lines[i:i + 4]]
            break
    r = {"scenario": scenario, "test": test, "attempt": attempt, "passed": passed, "exit_code": proc.popen.returncode,
         "timed_out": timed_out, "seconds": seconds, "resumes": resumes, "storage_unavailable_retries": retries,
         "panic": panic}
    if accounting:
        a = accounting[-1]
        r.update({"sent": int(a["sent"]), "refused": int(a["refused"]), "received": int(a["received"])})
    log(f"  {scenario} #{attempt}: {'passed' if passed else 'FAILED'} in {seconds} s; "
        + (f"{r['sent']} sent, {r['refused']} refused, {r['received']} received; " if accounting else "no accounting line; ")
        + ", ".join(f"{x['who']} resumed in {x['seconds']} s" for x in resumes)
        + (f"; retries: {len(retries)}" if retries else "") + (f"; {panic[0]}" if panic else ""))
    return r


def failures_scenario(procs: Procs, args, results: dict, binary: Path, built: str) -> None:
    out = results["failures"]
    out["binary"] = str(binary)
    out["binary_built"] = built
    for attempt in range(1, args.failure_runs + 1):
        for scenario in args.scenario_list:
            log(f"failures: {scenario} ({SCENARIOS[scenario][2]}), run {attempt} of {args.failure_runs}")
            out["runs"].append(failure_once(procs, binary, scenario, attempt, args.test_timeout))
    summary = []
    for scenario in args.scenario_list:
        runs = [r for r in out["runs"] if r["scenario"] == scenario]
        resume = sorted(x["seconds"] for r in runs for x in r["resumes"])
        summary.append({
            "scenario": scenario, "killed": SCENARIOS[scenario][2], "runs": len(runs),
            "passed": sum(r["passed"] for r in runs),
            "refused": [r.get("refused") for r in runs], "received": [r.get("received") for r in runs],
            "resume_s": {"count": len(resume), "min": resume[0] if resume else None,
                         "median": median(resume), "max": resume[-1] if resume else None},
            "storage_unavailable_retries": sum(len(r["storage_unavailable_retries"]) for r in runs),
            "seconds": [r["seconds"] for r in runs],
        })
    out["summary"] = summary


# --------------------------------------------------------------------------------------------
# 4. jetstream: JetStream alone, with the gateway's pattern of writes
# --------------------------------------------------------------------------------------------


class JetStreamProbe:
    """Appends to a stream configured as the gateway's (file storage, R replicas, max age 24 h,
    duplicate window 120 s) over one NATS connection, as the gateway does: each subject is one
    session's log with at most one append in flight (a due append waits for it and is then sent
    as one: the gateway coalesces its frames into the next record), each with `Nats-Msg-Id` and
    `Nats-Expected-Last-Subject-Sequence`; optionally the gateway's compaction: once a subject
    holds more than `compact_after` records, a purge of that subject below its newest (as
    core/hub/durable.rs, COMPACT_AFTER = 32). Subjects in lockstep (every one due at the same
    moments, as the relay's pairs are) or with their phases spread. Ack latency per append: from
    its publication to JetStream's acknowledgement."""

    def __init__(self, port: int, stream: str, subjects: int, size: int, compact_after: int, spread: bool):
        self.stream, self.compact_after = stream, compact_after
        self.subjects = [f"sgprobe.{stream}.s{i}" for i in range(subjects)]
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.reader = self.sock.makefile("rb")
        if not self.reader.readline().startswith(b"INFO "):
            raise BenchError("NATS did not greet with INFO")
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"name":"bench/durable.py probe"}\r\n'
                          b"SUB _SGPROBE.* 1\r\n")
        self.payload = bytes(random.getrandbits(8) for _ in range(size))
        self.lock = threading.Lock()
        self.token = f"{os.getpid()}-{random.getrandbits(32):x}"  # message ids unique to this probe
        self.next_id = 0
        self.in_flight: dict[int, tuple[float, str, str]] = {}  # id -> (sent at, subject, kind)
        self.busy: set[str] = set()
        self.waiting: set[str] = set()
        self.last_seq: dict[str, int] = {}
        # Records each subject holds since its last purge; spread: every subject at another phase.
        self.held = {s: (random.randrange(compact_after) if spread and compact_after else 0) for s in self.subjects}
        self.latencies: list[tuple[float, float]] = []
        self.counts = {"appends": 0, "coalesced": 0, "purges": 0, "errors": 0}
        self.errors: list[str] = []
        self.done = False
        threading.Thread(target=self._read, daemon=True).start()

    def _send(self, subject: str, kind: str, body: bytes, headers: str = "") -> None:
        """With the lock held."""
        self.next_id += 1
        reply = f"_SGPROBE.{self.next_id}"
        self.in_flight[self.next_id] = (time.monotonic(), subject, kind)
        if kind == "purge":
            data = f"PUB $JS.API.STREAM.PURGE.{self.stream} {reply} {len(body)}\r\n".encode() + body + b"\r\n"
        else:
            h = f"NATS/1.0\r\n{headers}\r\n".encode()
            data = f"HPUB {subject} {reply} {len(h)} {len(h) + len(body)}\r\n".encode() + h + body + b"\r\n"
        self.sock.sendall(data)

    def _append(self, subject: str) -> None:
        """With the lock held: one append to `subject` (it has none in flight)."""
        headers = f"Nats-Msg-Id: {self.token}-{self.next_id + 1}\r\n"
        if subject in self.last_seq:
            headers += f"Nats-Expected-Last-Subject-Sequence: {self.last_seq[subject]}\r\n"
        self.busy.add(subject)
        self.counts["appends"] += 1
        self._send(subject, "append", self.payload, headers)

    def due(self, subject: str) -> None:
        with self.lock:
            if subject in self.busy:
                if subject in self.waiting:
                    self.counts["coalesced"] += 1
                self.waiting.add(subject)
            else:
                self._append(subject)

    def _read(self) -> None:
        while not self.done:
            try:
                line = self.reader.readline()
            except OSError:
                return
            if not line:
                return
            if line.startswith(b"PING"):
                with self.lock:
                    self.sock.sendall(b"PONG\r\n")
                continue
            if not line.startswith(b"MSG "):
                if line.startswith(b"-ERR"):
                    self.errors.append(line.decode(errors="replace").strip())
                continue
            parts = line.split()
            body = self.reader.read(int(parts[-1]) + 2)[:-2]
            now = time.monotonic()
            with self.lock:
                sent = self.in_flight.pop(int(parts[1].split(b".")[1]), None)
                if sent is None:
                    continue
                t, subject, kind = sent
                try:
                    answer = json.loads(body)
                except json.JSONDecodeError:
                    answer = {"error": body[:200].decode(errors="replace")}
                if answer.get("error"):
                    self.counts["errors"] += 1
                    if len(self.errors) < 5:
                        self.errors.append(f"{kind}: {answer['error']}")
                if kind == "purge":
                    continue
                self.latencies.append((t, now - t))
                self.busy.discard(subject)
                if "seq" in answer:
                    self.last_seq[subject] = answer["seq"]
                    self.held[subject] += 1
                    if self.compact_after and self.held[subject] > self.compact_after:
                        self.held[subject] = 1
                        self.counts["purges"] += 1
                        self._send(subject, "purge", json.dumps({"filter": subject, "seq": answer["seq"]}).encode())
                if subject in self.waiting:
                    self.waiting.discard(subject)
                    self._append(subject)

    def close(self) -> None:
        self.done = True
        try:
            self.sock.close()
        except OSError:
            pass


PROBE_VARIANTS = {
    # name: (replicas, purge past this many records per subject (0: never), phases spread,
    #        JetStream's own limit of records per subject (0: none; the stream is filled to it first))
    "appends": (3, 0, False, 0),
    "purges-lockstep": (3, 32, False, 0),
    "purges-spread": (3, 32, True, 0),
    "purges-lockstep-r1": (1, 32, False, 0),
    "limit-256": (3, 0, False, 256),
}


def probe_once(procs: Procs, args, variant: str) -> dict:
    replicas, compact_after, spread, per_subject = PROBE_VARIANTS[variant]
    log(f"jetstream {variant}: {args.probe_rate:g} appends/s of {args.probe_bytes} B over {args.probe_subjects} subjects, "
        f"R{replicas}{f', purge below the newest past {compact_after} records' if compact_after else ''}"
        f"{', phases spread' if spread else ''}"
        f"{f', JetStream keeps the newest {per_subject} per subject (filled to it first)' if per_subject else ''}, {args.probe_secs:g} s")
    nats = Nats(procs, jetstream=True)
    probe = None
    try:
        config = {"name": "PROBE", "subjects": ["sgprobe.PROBE.*"], "storage": "file", "num_replicas": replicas,
                  "max_age": 24 * 3600 * 10**9, "duplicate_window": 120 * 10**9,
                  **({"max_msgs_per_subject": per_subject} if per_subject else {})}
        answer = nats_request(nats.client[0], "$JS.API.STREAM.CREATE.PROBE", json.dumps(config).encode(), timeout=10)
        if answer.get("error"):
            raise BenchError(f"could not create the probe's stream: {answer['error']}")
        probe = JetStreamProbe(nats.client[0], "PROBE", args.probe_subjects, args.probe_bytes, compact_after, spread)
        if per_subject:
            # Every subject at its limit, so that each append makes JetStream drop the oldest.
            want = per_subject * len(probe.subjects)
            t_fill = time.time()
            with probe.lock:
                for k in range(per_subject):
                    for subject in probe.subjects:
                        probe.sock.sendall(f"PUB {subject} {len(probe.payload)}\r\n".encode() + probe.payload + b"\r\n")
            if not wait_for(lambda: (stream_state(nats, "PROBE") or {}).get("messages", 0) >= want, 120, 0.5):
                raise BenchError(f"the probe's stream did not fill to {want} records")
            log(f"  filled to {want} records in {time.time() - t_fill:.1f} s")
        time.sleep(1.0)
        meter = CpuMeter({"nats": nats.pids(), "probe": [os.getpid()]})
        meter.start()
        t0 = time.monotonic()
        per_subject = args.probe_rate / len(probe.subjects)
        i = 0
        while True:
            due = t0 + i / args.probe_rate
            now = time.monotonic()
            if now - t0 >= args.probe_secs:
                break
            if due > now:
                time.sleep(due - now)
            # Lockstep: subject k is due at k / rate within each round; every subject once a round.
            probe.due(probe.subjects[i % len(probe.subjects)])
            i += 1
        cpu = meter.stop()
        wait_for(lambda: not probe.in_flight, 10, 0.1)
        with probe.lock:
            lat = [(t - t0, d) for t, d in probe.latencies]
            counts = dict(probe.counts)
            left = len(probe.in_flight)
    finally:
        if probe:
            probe.close()
        for proc in nats.procs:
            procs.stop(proc)
    values = sorted(d * 1000 for _, d in lat)
    slow = sorted(t for t, d in lat if d > 0.05)
    # Stalls: runs of acknowledgements over 50 ms, apart by more than 0.5 s.
    stalls = []
    for t in slow:
        if not stalls or t - stalls[-1][-1] > 0.5:
            stalls.append([t])
        else:
            stalls[-1].append(t)
    result = {"variant": variant, "replicas": replicas, "compact_after": compact_after or None, "spread": spread,
              "max_msgs_per_subject": per_subject or None,
              "rate": args.probe_rate, "subjects": args.probe_subjects, "bytes": args.probe_bytes, "secs": args.probe_secs,
              "per_subject_rate": round(per_subject, 2), **counts, "unanswered": left, "errors_examples": probe.errors[:5],
              "ack_latency_ms": stats(values) | {"p99_9": round(percentile(values, 99.9), 3) if values else None},
              "acks_over_50ms": len(slow), "stalls": len(stalls),
              "stall_starts_s": [round(x[0], 2) for x in stalls][:20], "cpu_percent": cpu}
    s_ = result["ack_latency_ms"]
    log(f"  {counts['appends']} appends ({counts['coalesced']} coalesced), {counts['purges']} purges, {counts['errors']} errors; "
        f"ack p50 {s_.get('p50')} ms, p99 {s_.get('p99')} ms, p99.9 {s_.get('p99_9')} ms, max {s_.get('max')} ms; "
        f"{len(stalls)} stalls at {result['stall_starts_s'][:8]} s; NATS CPU {cpu['nats']} %, probe {cpu['probe']} %")
    return result


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def fmt_list(values: list, digits: int = 3) -> str:
    return ", ".join(f(v, digits) for v in values) if values else "–"


def summary(results: dict) -> list[str]:
    """The key figures, from the sections below."""
    out = []
    cost = results.get("cost") or {}
    for row in cost.get("added_p99", []):
        d = row.get("durable")
        if d and d["added_median_ms"] is not None:
            out.append(f"- {f(int(row['rate']))}/s, {row['topology']}: durable R3 adds **{f(d['added_median_ms'])} ms** to the p99 "
                       f"({f(row['plain_median_ms'])} → {f(d['median_ms'])} ms, medians of {len(d['p99_ms'])}) and "
                       f"{f(d['p50_added_median_ms'])} ms to the p50 (goal: added p99 ≤ {cost['config']['goal_added_p99_ms']:g} ms).")
    durable_runs = [r for r in cost.get("runs", []) if r.get("durable")]
    if durable_runs:
        per = [r["durable"]["writes_per_signal"] for r in durable_runs if r["rate_asked"] <= 1000 and r["replicas"] == 3]
        if per:
            out.append(f"- JetStream records per signal at ≤ 1k/s: {min(per):.2f}–{max(per):.2f}; NATS CPU "
                       f"{min(r['nats_cpu_percent'] for r in durable_runs if r['rate_asked'] <= 1000 and r['replicas'] == 3):g}–"
                       f"{max(r['nats_cpu_percent'] for r in durable_runs if r['rate_asked'] <= 1000 and r['replicas'] == 3):g} % of a core "
                       "(3 servers) at 1k signals/s with R3.")
    for lim in cost.get("limits", []):
        if lim["mode"] != "plain":
            failed = lim["first_failed"]
            out.append(f"- limit, {lim['mode']} {lim['topology']}: highest rate that held "
                       f"{f(int(lim['highest_held'])) + '/s' if lim['highest_held'] else 'none'} of {', '.join(f(int(x)) for x in lim['rates'])}/s"
                       + (f"; first that did not {f(int(failed['rate']))}/s ({failed['why'][0]})" if failed else "") + ".")
    for st in results.get("storage") or []:
        i, h = st["per_idle_session"], st["per_held_signal_beyond_idle"]
        if st["replicas"]:
            out.append(f"- storage, durable R{st['replicas']}: {f(i.get('stream_bytes_per_session'), 0)} B and "
                       f"{f(i.get('stream_messages_per_session'), 1)} records per idle session in the stream (one replica), "
                       f"{f(h.get('stream_bytes_per_signal'), 0)} B and {f(h.get('stream_messages_per_signal'), 1)} records per held "
                       f"{st['signal_bytes']}-byte signal beyond that; gateway RSS {f(i.get('gateway_rss_bytes_per_session'))} B per idle session.")
        else:
            out.append(f"- memory, plain: gateway RSS {f(i.get('gateway_rss_bytes_per_session'))} B per idle session.")
    fl = (results.get("failures") or {}).get("summary") or []
    if fl:
        out.append("- failures: " + "; ".join(
            f"{s_['scenario']} {s_['passed']}/{s_['runs']} passed, refused {fmt_list(s_['refused'], 0)}"
            + (f", resumed in {f(s_['resume_s']['min'])}–{f(s_['resume_s']['max'])} s" if s_["resume_s"]["count"] else "")
            for s_ in fl) + ".")
    for p_ in results.get("jetstream") or []:
        a = p_["ack_latency_ms"]
        out.append(f"- JetStream alone, {p_['variant']}: ack p99 {f(a.get('p99'))} ms, max {f(a.get('max'))} ms, {p_['stalls']} stalls; "
                   f"NATS CPU {f(p_['cpu_percent']['nats'], 1)} %.")
    return (["## Key figures", "", *out, ""] if out else [])


def merged_lines(meta: dict) -> list[str]:
    """Where the figures not measured by this run come from (each merged run, and what it had
    merged itself)."""
    lines, merged = [], meta.get("merged")
    while merged:
        lines.append(f"Merged: {', '.join(merged['parts_kept']) or 'no part'} (and the cost runs not measured again) from "
                     f"`{merged['from']}`, {merged['started'][:16].replace('T', ' ')} UTC (gateway source "
                     f"{merged['gateway_commit']}, binary built {(merged['gateway_built'] or '?')[:16].replace('T', ' ')} UTC).")
        merged = merged.get("earlier_merges")
    return [" ".join(lines), ""] if lines else []


def write_report(results: dict, out_dir: Path) -> str:
    meta = results["meta"]
    m = meta["machine"]
    lines = [
        "# Durable mode benchmark",
        "",
        f"`{meta['command']}`, {meta['started'][:16].replace('T', ' ')}–{meta.get('finished', '?')[11:16]} UTC, at commit "
        f"{meta['commit']} (gateway source: {meta['gateway_commit']}{' with uncommitted changes in src/' if meta['dirty'] else ''}, "
        f"binary built {meta['gateway_built'][:16].replace('T', ' ')} UTC). Machine: {m['cpus']} cores "
        f"({m['cpu_model'] or 'unknown CPU'}, a VM), kernel {m['kernel']}, {m['rustc']}, {meta.get('nats_version', 'nats-server')}; "
        f"**the 2 cores are shared by the load generator, the gateways and the NATS servers** (and by other engineers' "
        f"work: 1-min load {meta['load_start']} at the start, {meta.get('load_end', '?')} at the end). Release builds. Loopback only.",
        "",
        *([meta["note"], ""] if meta.get("note") else []),
        *([f"**Note**: {meta['note_source_changed']}.", ""] if meta.get("note_source_changed") else []),
        *merged_lines(meta),
        "NATS: 3 `nats-server` processes with routes between all three and JetStream (`-js`, file storage in a "
        "temp dir on the machine's ext4 disk; nats-server's default sync, i.e. no fsync per write). Durable mode: "
        "`--durable true --durable-replicas N` (the stream `SIGNALGATE_<cluster name>`, file storage, N replicas); "
        "every stream is deleted after its run.",
        "",
    ]
    lines += summary(results)
    cost = results.get("cost")
    if cost and cost.get("runs"):
        cfg = cost["config"]
        lines += [
            "## 1. Cost: relay latency with and without durability",
            "",
            f"`relay_once` of bench/cluster.py: {cfg['pairs']} sender/receiver pairs over wss, each pair alone in its room, "
            f"{cfg['bytes']}-byte numbered signals (as the SDK: each acknowledged to its sender), fresh gateways a and b "
            "per run in a fresh cluster name; a on NATS n0, b on n1. **same**: both ends on a; **cross**: receivers on b "
            "(a NATS route in the path; b's verdict goes back to a before the sender's Ack). **plain**: cluster mode; "
            "**durable**: `--durable true` (R3); **durable-r1**: one replica. Latency: one way, the sender's send call "
            "to the receiver's decoded frame (one process, one monotonic clock). Warm-up "
            f"{cfg['warmup_s']:g} s, measured {cfg['secs']:g} s, drain up to {cfg['drain_s']:g} s. Refused: the senders' "
            "Errors (STORAGE_UNAVAILABLE, …). JetStream records per signal: `signalgate_durable_writes_total{outcome=\"stored\"}` "
            "of both gateways over warm-up + measured interval ÷ signals sent then. Write latency: "
            "`signalgate_durable_write_seconds` of both gateways over the same interval; the histogram's buckets are "
            "0.1, 0.25, 0.5, 1, 2.5, 5, 10 … ms, so p50/p99 are given as an estimate interpolated inside the bucket and "
            "as the bucket's bound (≤). CPU: % of one core over the measured interval.",
            "",
        ]
        if cost.get("added_p99"):
            lines += [
                f"### Added p99 (durable − plain, same topology; goal ≤ {cfg['goal_added_p99_ms']:g} ms on loopback at 1k/s)",
                "",
                "Medians over the rounds (each round runs every cell once, so every cell sees the machine in each of its moods) "
                f"that other processes did not disturb (≤ {relay.DISTURBED_PERCENT:g} % of a core; all rounds if none was quiet); "
                "those rounds' values in brackets, with their round numbers.",
                "",
                "| rate (/s) | topology | plain p99 (ms) | mode | durable p99 (ms) | **added p99 (ms)** | added per round (ms) | added p50 (ms) | goal |",
                "|---:|---|---|---|---|---:|---|---:|---|",
            ]
            for row in cost["added_p99"]:
                for mode in [k for k in row if k in MODES and k != "plain"]:
                    d = row[mode]
                    goal = "–"
                    if d["added_median_ms"] is not None and row["rate"] <= 1000:
                        goal = "met" if d["added_median_ms"] <= cfg["goal_added_p99_ms"] else "**not met**"
                    lines.append(
                        f"| {f(int(row['rate']))} | {row['topology']} | {f(row['plain_median_ms'])} [{fmt_list(row['plain_p99_ms'])}] "
                        f"(rounds {', '.join(str(x) for x in row.get('plain_rounds', []))}) "
                        f"| {mode} | {f(d['median_ms'])} [{fmt_list(d['p99_ms'])}] (rounds {', '.join(str(x) for x in d.get('rounds', []))}) "
                        f"| **{f(d['added_median_ms'])}** "
                        f"| {fmt_list(d['added_per_round_ms'])} | {f(d['p50_added_median_ms'])} | {goal} |")
            lines.append("")
        lines += [
            "### Every run",
            "",
            "| phase | rate asked (/s) | topology | mode | round | achieved (/s) | p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) "
            "| lost | refused | never acked | sender's Ack p50 / p99 (ms) | JetStream records per signal | JetStream API requests per signal | write p50 / p99 (ms, est.; ≤ bucket) "
            "| NATS messages per signal | gateway a CPU % | gateway b CPU % | NATS CPU % (3) | load generator CPU % | others CPU % |",
            "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in cost["runs"]:
            lat = r["latency_ms"]
            ack = r.get("ack_latency_ms") or {}
            d = r.get("durable") or {}
            ws = d.get("write_seconds") or {}
            warn = " ⚠" if (r.get("others_cpu_percent") or 0) > relay.DISTURBED_PERCENT else ""
            refused = sum(r["refused"].values())
            lines.append(
                f"| {r['phase']}{' †' if r.get('from_run') else ''} | {f(int(r['rate_asked']))}{warn} | {r['topology']} | {r['mode']} | {r['round']} "
                f"| {f(r['rate_achieved'], 1)} | {f(lat['p50'])} | {f(lat['p99'])} | {f(lat.get('p99_9'))} | {f(lat['max'])} "
                f"| {f(r['lost'])} of {f(r['sent'])} | {f(refused)}{' ' + str(r['refused']) if refused else ''} "
                f"| {f(r.get('never_acked'))} | {f(ack.get('p50'))} / {f(ack.get('p99'))} "
                f"| {f(d.get('writes_per_signal'), 2) if d else '–'} | {f(d.get('jetstream_api_requests_per_signal'), 2) if d else '–'} "
                f"| {(f(d.get('write_p50_ms_est')) + ' / ' + f(d.get('write_p99_ms_est')) + ' (≤ ' + f(ws.get('p50_le_ms')) + ' / ≤ ' + f(ws.get('p99_le_ms')) + ')') if d else '–'} "
                f"| {f(r.get('cluster_envelopes_per_signal'), 2)} | {f(r['gateway_cpu_percent'], 1)} | {f(r['gateway_b_cpu_percent'], 1)} "
                f"| {f(r['nats_cpu_percent'], 1)} | {f(r['loadgen_cpu_percent'], 1)} | {f(r.get('others_cpu_percent'), 1)} |")
        lines += [
            "",
            ((f"†: from the earlier run merged in ({cost['config']['merged_with']}); the others from this one. "
               if cost["config"].get("merged_with") else "")
            + "⚠: other processes used more than "
            f"{relay.DISTURBED_PERCENT:g} % of a core during the run. NATS messages per signal: envelopes the gateways "
            "published to the cluster (relay, verdicts, acks; not the JetStream appends) ÷ signals. JetStream API "
            "requests: `/jsz` api.total of the 3 servers over the whole run (set-up and teardown included) ÷ signals: "
            "the session logs' compactions (purges), stream creation and information; appends are not API requests."),
            "",
            f"### Where the limit is (a rate holds when p99 ≤ {cfg['limit_p99_ms']:g} ms, nothing is lost, refused or left "
            "unacknowledged, no connection closes, and ≥ 95 % of the rate asked is reached)",
            "",
            "Per rate: p50 / p99 (ms) of every run, ✓ held, ✗ did not (why in the last column); ⚠ other processes used more "
            f"than {relay.DISTURBED_PERCENT:g} % of a core during the run.",
            "",
        ]
        rates = sorted({r["rate_asked"] for r in cost["runs"]})
        lines += [
            "| mode | topology | " + " | ".join(f"{f(int(x))}/s" for x in rates) + " | highest that held | first that did not: why |",
            "|---|---|" + "---|" * len(rates) + "---:|---|",
        ]
        for lim in cost.get("limits", []):
            cells = []
            for rate in rates:
                runs = [r for r in cost["runs"] if r["mode"] == lim["mode"] and r["topology"] == lim["topology"]
                        and r["rate_asked"] == rate]
                cells.append("; ".join(f"{'✓' if r['holds'] else '✗'} {f(r['latency_ms']['p50'], 1)} / {f(r['latency_ms']['p99'], 1)}"
                                       f"{' ⚠' if (r.get('others_cpu_percent') or 0) > relay.DISTURBED_PERCENT else ''}"
                                       for r in runs) or "–")
            failed = lim["first_failed"]
            lines.append(
                f"| {lim['mode']} | {lim['topology']} | " + " | ".join(cells)
                + f" | {f(int(lim['highest_held'])) + '/s' if lim['highest_held'] else 'none'} "
                f"| {(f(int(failed['rate'])) + '/s: ' + '; '.join(failed['why'])) if failed else '(none up to ' + f(int(max(lim['rates']))) + '/s)'}"
                f"{' (held again at ' + ', '.join(f(int(x)) for x in lim['held_again_above']) + ')' if lim['held_again_above'] else ''} |")
        lines.append("")
        warned = []
        for r in cost["runs"]:
            for node, logsum in (r.get("gateway_logs") or {}).items():
                if logsum.get("warn_error_messages"):
                    warned.append(f"- {r['mode']} {r['topology']} {f(int(r['rate_asked']))}/s round {r['round']}, gateway {node} "
                                  f"WARN/ERROR during the run: {logsum['warn_error_messages']}")
            if r.get("connections_closed"):
                warned.append(f"- {r['mode']} {r['topology']} {f(int(r['rate_asked']))}/s: {r['connections_closed']} connections "
                              f"closed, e.g. {r.get('closed_examples')}")
        if warned:
            lines += ["Gateway log lines and closed connections:", "", *warned, ""]
        for r in cost.get("failed_runs", []):
            lines.append(f"- **no result**: {r['mode']} {r['topology']} {f(int(r['rate_asked']))}/s ({r['phase']}, round "
                         f"{r['round']}): {r['error'][:600]}")
        if cost.get("failed_runs"):
            lines.append("")

    storage = results.get("storage")
    if storage:
        lines += [
            "## 2. Storage and memory per held session",
            "",
            "One gateway (cluster mode, resume window 600 s) per mode. **idle**: N sessions, each alone in its room "
            "(`signalgate-bench clients`: joined, then quiet; they never acknowledge anything, so their Joined and presence "
            "frames stay unacknowledged). **held**: then N more sessions as N/2 relay pairs (`relay --ack-every 0`): "
            "each sender sends one numbered signal a second to its receiver, which never acknowledges; then the load "
            "generator exits and every one of these sessions is *away* (its connection gone, within the resume window), "
            "holding what it was sent. Figures are differences from the step before ÷ the sessions added. Stream: the "
            "JetStream stream's `state.messages` / `state.bytes` from the stream leader's `/jsz?streams=true` (one replica's "
            "worth); disk: the stream's files in all 3 nodes' store dirs (every replica); NATS RSS: the 3 servers together. "
            "Each step waits until the stream's last sequence has stood still for a few seconds.",
            "",
            "| mode | step | sessions added | stream messages / session | stream bytes / session | disk bytes / session (all replicas) "
            "| gateway RSS / session (bytes) | NATS RSS / session (bytes, 3 servers) |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for s in storage:
            for step, key in (("idle", "per_idle_session"), ("held, away", "per_held_session")):
                p = s[key]
                lines.append(
                    f"| {s['mode']}{' R' + str(s['replicas']) if s['replicas'] else ''} | {step} | {f(p['sessions'])} "
                    f"| {f(p.get('stream_messages_per_session'), 2) if s['replicas'] else '–'} "
                    f"| {f(p.get('stream_bytes_per_session'), 1) if s['replicas'] else '–'} "
                    f"| {f(p.get('disk_bytes_per_session'), 1) if s['replicas'] else '–'} "
                    f"| {f(p.get('gateway_rss_bytes_per_session'))} | {f(p.get('nats_rss_bytes_per_session'))} |")
        lines += [
            "",
            "| mode | held signals (sent / received) | per held signal beyond an idle session: stream bytes | stream messages "
            "| disk bytes | gateway RSS bytes | NATS RSS bytes |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for s in storage:
            ps = s["per_held_signal_beyond_idle"]
            h = s["steps"]["held"]
            lines.append(
                f"| {s['mode']} | {f(h['signals'])} / {f(h['received'])} ({f(h['signals'] / max(1, h['pairs']), 1)} per receiver, "
                f"{s['signal_bytes']} B) | {f(ps.get('stream_bytes_per_signal'), 1)} | {f(ps.get('stream_messages_per_signal'), 2)} "
                f"| {f(ps.get('disk_bytes_per_signal'), 1)} | {f(ps.get('gateway_rss_bytes_per_signal'), 1)} "
                f"| {f(ps.get('nats_rss_bytes_per_signal'), 1)} |")
        lines += ["", "Absolute values after each step:", "",
                  "| mode | step | sessions | stream messages | stream bytes | disk bytes (all replicas) | gateway RSS (MB) | NATS RSS (MB) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for s in storage:
            for step in ("empty", "idle", "held"):
                st = s["steps"][step]
                stream = st.get("stream") or {}
                lines.append(f"| {s['mode']} | {step} | {f(st['sessions_total'])} | {f(stream.get('messages'))} | {f(stream.get('bytes'))} "
                             f"| {f(st.get('disk_bytes'))} | {f(st['gateway_rss_mb'], 1)} | {f(st['nats_rss_mb'], 1)} |")
        lines.append("")
        for s in storage:
            msgs = (s.get("gateway_log") or {}).get("warn_error_messages")
            if msgs:
                lines.append(f"- {s['mode']}: gateway WARN/ERROR: {msgs}")
        lines.append("")

    failures = results.get("failures")
    if failures and failures.get("summary"):
        lines += [
            "## 3. Failures, repeated (tests/durable.rs)",
            "",
            f"The release test binary (`{Path(failures['binary']).name}`, built {failures['binary_built'][:16].replace('T', ' ')} UTC), "
            "each test alone (`--nocapture --test-threads 1 --exact NAME`), the scenarios in rounds. Each run: a 3-node "
            "NATS cluster with JetStream, 3 gateways `--durable true` (R3, liveness 2 s, resume window 30 s); a sender "
            "on gateway a streams 1,000 signals to a receiver on b; the failure strikes after 300; a client whose "
            "connection dies resumes on gateway c with its token. Refused: signals the sender was told were not "
            "accepted (RECIPIENT_UNAVAILABLE / STORAGE_UNAVAILABLE); the test checks that the receiver got exactly the "
            "others, in order, once. Resume: the test's `resumed on gateway N in X` (from the client's first attempt "
            "on c to its Welcome; retries after STORAGE_UNAVAILABLE included).",
            "",
            "| scenario | killed | passed / runs | refused per run | received per run | resume min / median / max (s) | resumes | STORAGE_UNAVAILABLE retries | run time (s) |",
            "|---|---|---:|---|---|---|---:|---:|---|",
        ]
        for s in failures["summary"]:
            rs = s["resume_s"]
            lines.append(
                f"| {s['scenario']} | {s['killed']} | **{s['passed']} / {s['runs']}** | {fmt_list(s['refused'], 0)} "
                f"| {fmt_list(s['received'], 0)} | {f(rs['min'])} / {f(rs['median'])} / {f(rs['max'])} | {rs['count']} "
                f"| {s['storage_unavailable_retries']} | {fmt_list(s['seconds'], 1)} |")
        lines.append("")
        for r in failures["runs"]:
            if not r["passed"] or r["resumes"]:
                who = ", ".join(f"{x['who']} ({x['role']}) on gateway {x['gateway']} in {x['seconds']} s" for x in r["resumes"])
                lines.append(f"- {r['scenario']} run {r['attempt']}: {'passed' if r['passed'] else '**failed**'}"
                             + (f"; resumed: {who}" if who else "")
                             + (f"; {len(r['storage_unavailable_retries'])} retries after: "
                                f"{sorted({x['message'][:120] for x in r['storage_unavailable_retries']})}" if r["storage_unavailable_retries"] else "")
                             + (f"; timed out after {r['seconds']} s" if r["timed_out"] else "")
                             + (f"; `{' | '.join(r['panic'])}`" if r["panic"] else ""))
        lines.append("")
    probes = results.get("jetstream")
    if probes:
        p0 = probes[0]
        lines += [
            "## 4. JetStream alone, with the gateway's pattern of writes",
            "",
            f"No gateway: this process appends {f(p0['rate'])} records/s of {p0['bytes']} B (≈ 3 records per signal at 1k "
            f"signals/s, see 1.) to a stream configured as the gateway's (file storage, max age 24 h, duplicate window 120 s) "
            f"on a fresh 3-node NATS cluster, over {p0['subjects']} subjects (the session logs of 100 pairs), "
            f"{p0['per_subject_rate']:g} records/s each, as the gateway appends them: one NATS connection, each with "
            "`Nats-Msg-Id` and `Nats-Expected-Last-Subject-Sequence`, at most one in flight per subject (a record due "
            "meanwhile is sent when it is acknowledged, several as one). **purges**: the gateway's compaction as well — "
            "once a subject holds more than 32 records, a purge of that subject below its newest (`$JS.API.STREAM.PURGE`, "
            "as core/hub/durable.rs does with COMPACT_AFTER = 32). **lockstep**: every subject reaches 32 at the same "
            "moment, as the relay's pairs (all started together, all at one rate) do; **spread**: each subject starts at "
            "another count. **limit-256**: no purge; the stream keeps the newest 256 records per subject "
            "(`max_msgs_per_subject`, what the gateway does since 80fc3af), filled to that first so that every append "
            "makes JetStream drop its subject's oldest. Latency: publication to acknowledgement. A stall: acknowledgements over 50 ms, runs apart "
            "by more than 0.5 s. CPU: % of one core, this process included.",
            "",
            "| variant | replicas | appends (coalesced) | purges | errors | ack p50 / p99 / p99.9 / max (ms) | acks > 50 ms | stalls (starting at, s) | NATS CPU % (3) | probe CPU % | others CPU % |",
            "|---|---:|---:|---:|---:|---|---:|---|---:|---:|---:|",
        ]
        for p in probes:
            a = p["ack_latency_ms"]
            lines.append(
                f"| {p['variant']} | {p['replicas']} | {f(p['appends'])} ({f(p['coalesced'])}) | {f(p['purges'])} | {f(p['errors'])} "
                f"| {f(a.get('p50'))} / **{f(a.get('p99'))}** / {f(a.get('p99_9'))} / {f(a.get('max'))} | {f(p['acks_over_50ms'])} "
                f"| {p['stalls']}{' (' + ', '.join(str(x) for x in p['stall_starts_s'][:8]) + ')' if p['stalls'] else ''} "
                f"| {f(p['cpu_percent']['nats'], 1)} | {f(p['cpu_percent']['probe'], 1)} "
                f"| {f(p['cpu_percent'].get('others'), 1)}{' ⚠' if (p['cpu_percent'].get('others') or 0) > relay.DISTURBED_PERCENT else ''} |")
        for p in probes:
            if p["errors_examples"]:
                lines.append(f"- {p['variant']}: errors, e.g. {p['errors_examples']}")
        lines.append("")

    for e in results.get("errors", []):
        lines.append(f"- error: {e}")
    lines += ["Every figure: [results.json](results.json).", ""]
    text = "\n".join(lines)
    (out_dir / "report.md").write_text(text)
    return text


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def csv(text: str, kind=str) -> list:
    return [kind(x.strip()) for x in text.replace("_", "").split(",") if x.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description="signalgate durable-mode benchmark (no root needed; needs nats-server with JetStream)")
    ap.add_argument("--only", default="cost,storage,failures,jetstream", help="comma separated: cost, storage, failures, jetstream")
    ap.add_argument("--smoke", action="store_true", help="small sizes: < 90 s after the build")
    g1 = ap.add_argument_group("1. cost")
    g1.add_argument("--rates", default="1000", help="rates of the base cells (signals/s), each run --repeat times")
    g1.add_argument("--repeat", type=int, default=3, help="rounds over the base cells")
    g1.add_argument("--first-round", type=int, default=1,
                    help="number of the first round (with --merge: more rounds beside those of an earlier run)")
    g1.add_argument("--modes", default="plain,durable", help="modes of the base cells: plain, durable (R3)")
    g1.add_argument("--compare-replicas", default="1", help="durable runs with these --durable-replicas at the first base rate, once ('' : none)")
    g1.add_argument("--limit-rates", default="2000,5000,10000", help="higher rates, --limit-repeat times each ('' : none)")
    g1.add_argument("--limit-modes", default="plain,durable")
    g1.add_argument("--limit-repeat", type=int, default=1)
    g1.add_argument("--limit-p99-ms", type=float, default=50.0, help="a rate holds while p99 stays at or below this")
    g1.add_argument("--goal-added-p99-ms", type=float, default=2.0)
    g1.add_argument("--topologies", default="same,cross", help="same, cross (see bench/cluster.py; cross-1nats too)")
    g1.add_argument("--secs", type=float, default=10.0)
    g1.add_argument("--warmup", type=float, default=2.0)
    g1.add_argument("--drain", type=float, default=3.0)
    g1.add_argument("--pairs", type=int, default=100)
    g1.add_argument("--bytes", type=int, default=200, help="signal size (also the held signals of 2.)")
    g1.add_argument("--wait-quiet", type=float, default=30, help="before each run, wait up to this many s for a quiet machine")
    g1.add_argument("--quiet-below", type=float, default=25, help="quiet: less than this %% of one core busy")
    g1.add_argument("--quiet-hold", type=float, default=4, help="... for this many seconds in a row")
    g2 = ap.add_argument_group("2. storage")
    g2.add_argument("--storage-sessions", type=int, default=2000, help="idle sessions, then as many held (in pairs)")
    g2.add_argument("--held-signals", type=int, default=10, help="signals sent to each held receiver (one a second)")
    g2.add_argument("--storage-modes", default="plain,durable")
    g2.add_argument("--storage-resume-window", type=float, default=600.0)
    g2.add_argument("--settle", type=float, default=3.0, help="a step is measured once the stream stood still this long")
    g3 = ap.add_argument_group("3. failures")
    g3.add_argument("--failure-runs", type=int, default=3, help="runs per scenario")
    g3.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma separated: {', '.join(SCENARIOS)}")
    g3.add_argument("--test-timeout", type=float, default=240, help="a test run is stopped after this many s")
    g3.add_argument("--test-binary", type=Path, default=None, help="the durable test binary (default: built, see --no-build)")
    g4 = ap.add_argument_group("4. jetstream (JetStream alone, the gateway's pattern of writes)")
    g4.add_argument("--probe-variants", default="appends,purges-lockstep,purges-spread,purges-lockstep-r1,limit-256",
                    help="appends (no compaction), purges-lockstep, purges-spread, purges-lockstep-r1, limit-256 "
                         "(JetStream drops the oldest past 256 records per subject, the gateway since 80fc3af)")
    g4.add_argument("--probe-rate", type=float, default=3000, help="appends/s (≈ 3 records per signal at 1k signals/s)")
    g4.add_argument("--probe-subjects", type=int, default=200, help="session logs (100 pairs: 200)")
    g4.add_argument("--probe-bytes", type=int, default=400, help="record size (a held session's records average ≈ 400 B)")
    g4.add_argument("--probe-secs", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=None, help=f"results directory (default {RESULTS.relative_to(ROOT)}, a temp dir with --smoke)")
    ap.add_argument("--no-build", action="store_true", help="use the binaries in the target dir as they are (the newest durable test binary)")
    ap.add_argument("--target-dir", type=Path, default=Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")),
                    help="cargo target dir of the release binaries (default $CARGO_TARGET_DIR or ./target)")
    ap.add_argument("--keep-logs", action="store_true", help="keep every process's output (printed path)")
    ap.add_argument("--merge", action="store_true",
                    help="keep what --out's results.json holds of the parts not run now; for cost, its runs not measured again")
    args = ap.parse_args()

    if args.smoke:
        args.rates, args.repeat, args.compare_replicas, args.limit_rates = "1000", 1, "", ""
        args.secs, args.warmup, args.drain, args.wait_quiet = 2.0, 1.0, 2.0, 0
        args.storage_sessions, args.held_signals, args.settle = 200, 3, 1.5
        args.failure_runs, args.scenarios = 1, "receivers-gateway"
        args.probe_variants, args.probe_secs = "purges-lockstep", 3.0
    args.rate_list = csv(args.rates, float)
    args.limit_rate_list = csv(args.limit_rates, float)
    args.compare_replicas = csv(args.compare_replicas, int)
    args.modes = csv(args.modes)
    args.limit_modes = csv(args.limit_modes)
    args.storage_mode_list = csv(args.storage_modes)
    args.topologies = csv(args.topologies)
    args.scenario_list = csv(args.scenarios)
    args.probe_variant_list = csv(args.probe_variants)
    for name, values, known in (("--modes", args.modes + args.limit_modes + args.storage_mode_list, set(MODES)),
                                ("--topologies", args.topologies, {"same", "cross", "cross-1nats"}),
                                ("--scenarios", args.scenario_list, set(SCENARIOS)),
                                ("--probe-variants", args.probe_variant_list, set(PROBE_VARIANTS))):
        if set(values) - known:
            ap.error(f"{name}: unknown {sorted(set(values) - known)}")
    if any(not 1 <= r <= 3 for r in args.compare_replicas):
        ap.error("--compare-replicas: 1 to 3 (3 NATS servers)")
    only = set(csv(args.only))
    parts = {"cost", "storage", "failures", "jetstream"}
    if only - parts:
        ap.error(f"--only: unknown {sorted(only - parts)}")
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="sg-durable-smoke-")) if args.smoke else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    args.merge_from = None
    if args.merge and (out_dir / "results.json").exists():
        args.merge_from = json.loads((out_dir / "results.json").read_text())

    interrupt_on_signals()

    target = args.target_dir.resolve()
    if not args.no_build:
        build(target)
    gw_bin, bench_bin = target / "release" / "signalgate", target / "release" / "signalgate-bench"
    # Every binary is built (and copied) before anything is measured: others may build in the
    # same target dir meanwhile, and every part must run the same source.
    test_bin = test_binary(args) if "failures" in only else None
    for binary in (gw_bin, bench_bin):
        if not binary.exists():
            raise BenchError(f"{binary} is missing (build it, or drop --no-build)")

    def built(path: Path) -> str:
        return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds")
    gw_built, test_built = built(gw_bin), (built(test_bin) if test_bin else None)
    workdir = Path(tempfile.mkdtemp(prefix="sg-durable-"))
    (workdir / "bin").mkdir()
    gw_bin, bench_bin = (Path(shutil.copy2(b, workdir / "bin" / b.name)) for b in (gw_bin, bench_bin))
    if test_bin:
        # Its gateways are still target/release/signalgate (the path is compiled in).
        test_bin = Path(shutil.copy2(test_bin, workdir / "bin" / test_bin.name))
    procs = Procs(workdir, env={"NO_COLOR": "1"})
    results: dict = {
        "meta": {
            "command": shlex.join(["python3", "bench/durable.py", *sys.argv[1:]]),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": relay.sh("git", "rev-parse", "--short", "HEAD"),
            "gateway_commit": relay.sh("git", "log", "-1", "--format=%h", "--", ":/src", ":/proto", ":/build.rs", ":/Cargo.toml"),
            "dirty": bool(relay.sh("git", "status", "--porcelain", "--untracked-files=no", "--", ":/src", ":/proto", ":/build.rs", ":/Cargo.toml")),
            "gateway_bin": str(target / "release" / "signalgate") + " (copied into the run's work dir)",
            "gateway_built": gw_built,
            "load_start": round(os.getloadavg()[0], 2),
            "machine": relay.machine(),
            "smoke": args.smoke,
        },
    }
    if args.no_build:
        results["meta"]["gateway_commit"] = "unknown (--no-build)"
        results["meta"]["dirty"] = False
    if args.merge_from:
        old = args.merge_from
        kept = [part for part in ("cost", "storage", "failures", "jetstream") if part in old and part not in only]
        for part in kept:
            results[part] = old[part]
        results["meta"]["merged"] = {"parts_kept": kept, "from": old["meta"]["command"], "started": old["meta"]["started"],
                                     "gateway_commit": old["meta"].get("gateway_commit"), "gateway_built": old["meta"].get("gateway_built"),
                                     "nats_version": old["meta"].get("nats_version"), "earlier_merges": old["meta"].get("merged")}
        results["meta"].setdefault("nats_version", old["meta"].get("nats_version"))
    with Guarded(procs, results, log) as guard:
        # Each part on a NATS cluster of its own: the servers keep memory (and Raft state) from
        # the streams of the runs before, even deleted.
        for part in [p for p in ("cost", "storage") if p in only]:
            nats = Nats(procs, jetstream=True)
            results["meta"]["nats_version"] = nats.version
            log(f"NATS cluster with JetStream up ({nats.version}): {nats.urls()}")
            run = DurableRun(args, procs, nats, gw_bin, bench_bin)
            if part == "cost":
                results["cost"] = {"config": {
                    "rates": args.rate_list, "repeat": args.repeat, "modes": args.modes, "compare_replicas": args.compare_replicas,
                    "limit_rates": args.limit_rate_list, "limit_modes": args.limit_modes, "limit_repeat": args.limit_repeat,
                    "limit_p99_ms": args.limit_p99_ms, "goal_added_p99_ms": args.goal_added_p99_ms,
                    "topologies": args.topologies, "secs": args.secs, "warmup_s": args.warmup, "drain_s": args.drain,
                    "pairs": args.pairs, "bytes": args.bytes, "liveness": SETTINGS["default"]}, "runs": [], "failed_runs": []}
                cost_scenario(run, results)
            if part == "storage":
                results["storage"] = []
                for mode in args.storage_mode_list:
                    results["storage"].append(storage_once(run, mode))
            for proc in nats.procs:
                procs.stop(proc)
        if "jetstream" in only:
            results["jetstream"] = []
            for variant in args.probe_variant_list:
                results["jetstream"].append(probe_once(procs, args, variant))
        if "failures" in only:
            results["failures"] = {"config": {"runs": args.failure_runs, "scenarios": args.scenario_list,
                                              "timeout_s": args.test_timeout}, "runs": []}
            failures_scenario(procs, args, results, test_bin, test_built)
    status = guard.status
    # The source at the end: another engineer's commit during the run would not be in its binaries,
    # but a failure run's gateways are target/release/signalgate as it is then.
    end_commit = relay.sh("git", "log", "-1", "--format=%h", "--", ":/src", ":/proto", ":/build.rs", ":/Cargo.toml")
    if not args.no_build and end_commit != results["meta"]["gateway_commit"]:
        results["meta"]["note_source_changed"] = f"the gateway's source changed during the run: {results['meta']['gateway_commit']} at the start, {end_commit} at the end"
    publish(results, out_dir, write_report, workdir, args.keep_logs)
    log(f"results in {out_dir} ({results['meta']['duration_s']} s)")
    return status


if __name__ == "__main__":
    run_main(main, "durable.py")
