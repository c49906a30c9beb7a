#!/usr/bin/env python3
"""Before/after tables of two network-cut benchmark results (bench/run.py's results.json):
false UNREACHABLE per 1,000 sessions, detection p99, and the idle cost when measured.

    python3 bench/compare.py BEFORE.json[,MORE.json...] AFTER.json > bench/results/comparison.md

Several "before" files are merged (later ones win per cell), e.g. a full run plus a
1,000-session false-positive run. Python 3 standard library only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

LABEL = {"ws": "WebSocket", "wt": "WebTransport", "wsn": "WebSocket via nginx"}
SETTING = {"default": "10 s / 4 s", "aggressive": "2 s / 0.8 s"}
# Issue 15: false UNREACHABLE per 1,000 sessions in 5 minutes.
GOALS = {("default", 10): 0, ("default", 30): 10, ("aggressive", 10): 10}


def load(paths: str) -> tuple[dict, list[str]]:
    merged: dict = {"detection": {}, "false_positives": {}, "idle_cost": []}
    sources = []
    for path in paths.split(","):
        data = json.loads(Path(path).read_text())
        meta = data.get("meta", {})
        sources.append(f"`{path}` ({meta.get('command', '?')}, {meta.get('started', '?')[:10]}, checkout at {meta.get('commit', '?')})")
        for r in data.get("detection", []):
            merged["detection"][(r["transport"], r["setting"], r["n"])] = r
        for r in data.get("false_positives", []):
            key = (r["transport"], r["setting"], r["loss_percent_each_way"])
            old = merged["false_positives"].get(key)
            # Per cell, the run with the most sessions.
            if old is None or r["sessions"] >= old["sessions"]:
                merged["false_positives"][key] = r
        merged["idle_cost"] += data.get("idle_cost", [])
    return merged, sources


def per_1000(r: dict | None) -> str:
    if not r or not r["sessions"]:
        return "–"
    return f"{1000 * r['false_unreachable_sessions'] / r['sessions']:.0f} ({r['false_unreachable_sessions']}/{r['sessions']})"


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    before, bsrc = load(sys.argv[1])
    after, asrc = load(sys.argv[2])
    out = ["# Before / after: liveness on lossy links (probing harder, TCP evidence from direct clients)", ""]
    out.append("Before: " + "; ".join(bsrc) + ".")
    out.append("")
    out.append("After: " + "; ".join(asrc) + " (merged runs: the latest command is named; "
               "report.md beside it lists every run).")
    out.append("")
    out.append("## False UNREACHABLE per 1,000 sessions (5 minutes, loss each way, +200 ms RTT)")
    out.append("")
    out.append("| setting | loss | transport | before | after | goal | after meets it |")
    out.append("|---|---:|---|---:|---:|---:|---|")
    keys = sorted(set(before["false_positives"]) | set(after["false_positives"]),
                  key=lambda k: (k[1] != "default", k[2], ["ws", "wt", "wsn"].index(k[0]) if k[0] in LABEL else 9))
    for t, setting, loss in keys:
        b, a = before["false_positives"].get((t, setting, loss)), after["false_positives"].get((t, setting, loss))
        goal = GOALS.get((setting, loss))
        met = "–"
        if goal is not None and a and a["sessions"]:
            met = "yes" if 1000 * a["false_unreachable_sessions"] / a["sessions"] <= goal else "**no**"
        out.append(f"| {SETTING.get(setting, setting)} | {loss}% | {LABEL.get(t, t)} | {per_1000(b)} | **{per_1000(a)}** | "
                   f"{'≤ ' + str(goal) if goal is not None else 'none'} | {met} |")
    out.append("")
    out.append("## Detection after a silent cut: observer UNREACHABLE p50 / p99 / max (s)")
    out.append("")
    out.append("| setting | transport | N | before | after | after p99 ≤ timeout + 0.5 s |")
    out.append("|---|---|---:|---|---|---|")
    keys = sorted(set(before["detection"]) | set(after["detection"]),
                  key=lambda k: (k[1] != "default", ["ws", "wt", "wsn"].index(k[0]) if k[0] in LABEL else 9, k[2]))
    for t, setting, n in keys:
        def cell(r):
            if not r or not r["observer"].get("count"):
                return "–"
            o = r["observer"]
            return f"{o['p50']:.2f} / {o['p99']:.2f} / {o['max']:.2f}"
        a = after["detection"].get((t, setting, n))
        out.append(f"| {SETTING.get(setting, setting)} | {LABEL.get(t, t)} | {n:,} | {cell(before['detection'].get((t, setting, n)))} | "
                   f"{cell(a)} | {('yes' if a['within_limit'] else '**no**') if a else '–'} |")
    out.append("")
    idle = after["idle_cost"]
    if idle:
        out.append("## Idle cost: IP bytes per idle session per minute, up / down")
        out.append("")
        out.append("| system | transport | liveness | up | down | packets up / down |")
        out.append("|---|---|---|---:|---:|---|")
        for r in idle:
            liveness = SETTING.get(r.get("setting"), "25 s + 20 s heartbeat") if r["system"] == "signalgate" else "25 s + 20 s heartbeat"
            out.append(f"| {r['label']} | {LABEL.get(r['transport'], r['transport']) if r['system'] == 'signalgate' else 'WebSocket (no TLS)'} | {liveness} | "
                       f"{r['up']['ip_bytes_per_session_per_min']:,.0f} | {r['down']['ip_bytes_per_session_per_min']:,.0f} | "
                       f"{r['up']['packets_per_session_per_min']:.1f} / {r['down']['packets_per_session_per_min']:.1f} |")
        out.append("")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
