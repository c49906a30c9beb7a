#!/usr/bin/env python3
"""Draws bench/results/detection.png from results.json: the detection-latency distribution of
every system, transport and setting on a log scale (needs matplotlib: pip install matplotlib).

    python3 bench/plot.py [results.json] [detection.png]
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
# `orientation` replaced `vert` in matplotlib 3.10.
_MPL = tuple(int(x) for x in matplotlib.__version__.split(".")[:2])
HORIZONTAL = {"orientation": "horizontal"} if _MPL >= (3, 10) else {"vert": False}


def rows(results: dict) -> list[tuple[str, list[float], int, str, str]]:
    """(label, samples, sessions never noticed within the bound, colour, note)."""
    out = []
    for r in results.get("detection", []):
        transport = "WebSocket" if r["transport"] == "ws" else "WebTransport"
        colour = "tab:blue" if r["setting"] == "aggressive" else "tab:green"
        label = f"signalgate {transport}, timeout {r['liveness_timeout_s']:g} s, N={r['n']:,}"
        notes = []
        if r.get("closed_before_cut"):
            notes.append(f"{r['closed_before_cut']:,} dropped before the cut (overload)")
        if r["observer"].get("missing"):
            notes.append(f"{r['observer']['missing']:,} lost with observer sessions")
        out.append((label, r["samples_observer_s"], 0, colour, "; ".join(notes)))
    for r in results.get("baselines", []):
        names = {"seed": "seed design (keep-alive 20 s, no reply)", "socketio": "Socket.IO 4 (25 s + 20 s)",
                 "websockets": "python websockets (20 s + 20 s)"}
        out.append((f"{names.get(r['system'], r['system'])}, N={r['n']}", r["samples_server_s"],
                    r["server"].get("missing", 0), "tab:red", ""))
    return out


def main() -> int:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results" / "results.json"
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else src.with_name("detection.png")
    results = json.loads(src.read_text())
    data = rows(results)
    if not data:
        print("nothing to plot", file=sys.stderr)
        return 1
    bound = max((r.get("bound_s", 120) for r in results.get("baselines", [])), default=120)
    never_x = bound * 1.35
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(data) + 1.8))
    for y, (label, samples, missing, colour, note) in enumerate(reversed(data)):
        if note:
            ax.annotate(note, (max(samples, default=1.0), y), xytext=(12, -3),
                        textcoords="offset points", fontsize=7, color="dimgrey")
        if samples:
            ax.boxplot([samples], positions=[y], widths=0.55, whis=(1, 99), **HORIZONTAL,
                       showfliers=True, flierprops={"markersize": 2, "alpha": 0.4},
                       medianprops={"color": "black"}, patch_artist=True,
                       boxprops={"facecolor": colour, "alpha": 0.55})
        if missing:
            ax.plot([never_x], [y], marker=">", color=colour, markersize=9)
            ax.annotate(f"{missing} not noticed in {bound:g} s", (never_x, y), xytext=(-6, 7),
                        textcoords="offset points", ha="right", fontsize=7)
    ax.set_yticks(range(len(data)))
    ax.set_yticklabels([d[0] for d in reversed(data)], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(0.3, bound * 1.6)
    ax.set_ylim(-0.7, len(data) - 0.1)
    for x, text in [(2, "2 s"), (10, "10 s"), (bound, f"bound {bound:g} s")]:
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
        ax.text(x * 1.03, -0.6, text, fontsize=7, color="grey", ha="left")
    ax.set_xlabel("seconds from the silent cut until the peer is noticed gone (log scale)\n"
                  "signalgate: the observer receives PeerState UNREACHABLE; baselines: the server drops the client")
    ax.set_title("Dead-peer detection after a silent network cut (whiskers p1–p99)", fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.2)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
