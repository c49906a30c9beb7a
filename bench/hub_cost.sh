#!/usr/bin/env bash
# Hub cost per input: instructions (callgrind) and wall-clock nanoseconds per input fed to the
# sans-IO hub, with no sockets, tasks or TLS. See `signalgate-bench hub-cost --help` and the
# header of bench/src/hub_cost.rs for what is fed.
#
# Instruction counts are what to compare before/after a change of the hub: on a shared, noisy
# machine the wall clock moves by tens of percent between runs, the instruction count by a
# fraction of a percent.
#
# How the feeding phase alone is counted: `hub-cost` does its setup (a Hub with the default
# config, C connections with Hello, rooms of K joined, outputs drained) outside the function
# `feed_hub`, which feeds the N signals (and the Acks receivers owe) and drains `poll_output()`
# after each input. callgrind runs with `--toggle-collect='*feed_hub*'`: it counts only while
# `feed_hub` (and what it calls) runs, so the total Ir it reports is the feeding phase's.
# Dividing by the inputs fed (N signals + the Acks) gives Ir per input. A second callgrind run
# toggles on `feed_harness_only` — the same loop picking and cloning the frames, without the
# hub — so the harness's share can be subtracted: "net" = (feed − harness) / inputs.
#
# Usage: bench/hub_cost.sh [--no-build] [--no-wall] [--signals N] [--out DIR] [-- hub-cost options]
#   --signals N   signals fed under callgrind (default 100000; the wall-clock run uses 1,000,000)
#   --no-wall     skip the wall-clock run (best of 5, 1,000,000 signals)
#   --out DIR     also write DIR/hub_cost.json and DIR/hub_cost_profile.txt (callgrind_annotate)
#   options after `--` go to every hub-cost run (e.g. -- --connections 2000 --room-size 2)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
build=1 wall=1 signals=100000 out=""
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-build) build=0 ;;
        --no-wall) wall=0 ;;
        --signals) signals="$2"; shift ;;
        --out) out="$2"; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "hub_cost.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

command -v valgrind >/dev/null || { echo "hub_cost.sh: valgrind is needed (apt-get install -y valgrind)" >&2; exit 2; }
if [[ $build == 1 ]]; then
    echo "building signalgate-bench (release)" >&2
    (cd "$root" && timeout 1800 cargo build --release -q -p signalgate-bench)
fi
bench="$root/target/release/signalgate-bench"
tmp="$(mktemp -d -t sg-hub-cost-XXXXXX)"
trap 'rm -rf "$tmp"' EXIT

wall_json="null"
if [[ $wall == 1 ]]; then
    echo "wall clock: 1,000,000 signals, best of 5 runs" >&2
    wall_json="$(timeout 900 "$bench" hub-cost "${extra[@]}" | grep '"event":"result"')"
fi

# One callgrind run counting only inside the function named $1; prints the collected Ir.
count_in() {
    local fn="$1" name="$2"
    timeout 1200 valgrind --tool=callgrind --toggle-collect="*${fn}*" \
        --callgrind-out-file="$tmp/callgrind.$name" \
        "$bench" hub-cost --signals "$signals" --runs 1 --max-secs 1200 "${extra[@]}" \
        >"$tmp/$name.out" 2>"$tmp/$name.err"
    grep -o 'Collected : [0-9]*' "$tmp/$name.err" | grep -o '[0-9]*$'
}
echo "callgrind: $signals signals, counting in feed_hub, then in feed_harness_only" >&2
ir_feed="$(count_in feed_hub feed)"
ir_harness="$(count_in feed_harness_only harness)"
cg_json="$(grep '"event":"result"' "$tmp/feed.out")"
if [[ -n $out ]]; then
    # Where the feeding's instructions go (self, then inclusive), for comparing profiles.
    mkdir -p "$out"
    {
        echo "# callgrind profile of feed_hub ($signals signals); bench/hub_cost.sh --out"
        callgrind_annotate "$tmp/callgrind.feed" 2>/dev/null | sed -n '/file:function/,$p' | head -32
        echo
        callgrind_annotate --inclusive=yes "$tmp/callgrind.feed" 2>/dev/null | sed -n '/file:function/,$p' | head -42
    } | sed -e "s|$root/||g" -e 's/ *$//' >"$out/hub_cost_profile.txt"
fi

python3 - "$ir_feed" "$ir_harness" "$cg_json" "$wall_json" "$out" "$root" "$signals" <<'EOF'
import datetime as dt, json, os, subprocess, sys
ir_feed, ir_harness = int(sys.argv[1]), int(sys.argv[2])
cg, wall = json.loads(sys.argv[3]), json.loads(sys.argv[4])
out, root, signals = sys.argv[5], sys.argv[6], int(sys.argv[7])
git = lambda *a: subprocess.run(["git", "-C", root, *a], capture_output=True, text=True).stdout.strip()
inputs = cg["inputs"]
result = {
    "commit": git("rev-parse", "--short", "HEAD"),
    # The last commit that changed the hub's source (src/, proto/, build.rs, Cargo.toml).
    "hub_commit": git("log", "-1", "--format=%h", "--", "src", "proto", "build.rs", "Cargo.toml"),
    "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    "cpus": os.cpu_count(),
    "load_1min": round(os.getloadavg()[0], 2),
    "setup": {k: cg[k] for k in ("connections", "room_size", "bytes", "ack_every", "step_us")},
    "callgrind": {
        "signals": signals,
        "inputs": inputs,
        "acks": cg["acks"],
        "outputs": cg["outputs"],
        "ir_feeding": ir_feed,
        "ir_harness_only": ir_harness,
        "ir_per_input": round(ir_feed / inputs, 1),
        "ir_per_signal": round(ir_feed / signals, 1),
        "harness_ir_per_input": round(ir_harness / inputs, 1),
        "net_ir_per_input": round((ir_feed - ir_harness) / inputs, 1),
    },
    "wall_clock": None if wall is None else {
        k: wall[k] for k in ("signals", "runs", "inputs", "acks", "ns_per_input", "ns_per_signal",
                             "ns_per_input_all_runs", "harness_ns_per_input", "outputs",
                             "outputs_per_input", "errors", "closes")
    },
}
c = result["callgrind"]
print(f"hub cost per input at {result['commit']}{' (dirty)' if result['dirty'] else ''} (hub source {result['hub_commit']}): "
      f"{cg['connections']} connections in rooms of {cg['room_size']}, {cg['bytes']} B signals, ack every {cg['ack_every']}")
print(f"  callgrind, {signals:,} signals + {c['acks']:,} acks = {inputs:,} inputs, {c['outputs']:,} outputs:")
print(f"    {c['ir_per_input']:,.1f} Ir per input ({c['ir_feeding']:,} Ir in feed_hub); "
      f"harness alone {c['harness_ir_per_input']:,.1f}; net of the harness {c['net_ir_per_input']:,.1f}")
if wall:
    print(f"  wall clock, {wall['signals']:,} signals, best of {wall['runs']}: {wall['ns_per_input']} ns per input "
          f"(runs: {wall['ns_per_input_all_runs']}; harness alone {wall['harness_ns_per_input']} ns), "
          f"{wall['outputs']:,} outputs, {wall['errors']} errors")
if out:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "hub_cost.json"), "w") as f:
        f.write(json.dumps(result, indent=1) + "\n")
    print(f"  written to {os.path.join(out, 'hub_cost.json')}")
EOF
