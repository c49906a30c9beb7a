#!/usr/bin/env bash
# Does a gateway that served a peak give its memory back? Prints the gateway's RSS before, at
# the peak (N quiet sessions), and 10 / 30 / 60 s after every client vanished (kill -9; the
# sessions end when their 2 s resume window runs out). Loopback only, no root; bounded (~2 min).
#
#   bench/peak_memory.sh [N] [ws|wt]      (release builds of signalgate and signalgate-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
case "${2:-ws}" in
  ws) URL=wss://127.0.0.1:7443/ws ;;
  wt) URL=https://127.0.0.1:7443/wt ;;
  *) echo "transport must be ws or wt, got ${2}" >&2; exit 2 ;;
esac
GW=${GATEWAY_BIN:-target/release/signalgate}
BENCH=${BENCH_BIN:-target/release/signalgate-bench}
D=$(mktemp -d)
trap 'kill $GP $CP 2>/dev/null || true; rm -rf "$D"' EXIT
"$GW" serve --listen 127.0.0.1:7443 --http-listen off --metrics-listen off --dev-cert-dir "$D" \
  --max-connections-per-ip 0 --new-connections-per-ip-per-sec 0 --max-handshakes 8192 \
  --max-pending-hellos 65536 --resume-window 2s --log warn > "$D/gw.log" 2>&1 &
GP=$!
CP=
for _ in $(seq 50); do [ -n "$(ls "$D"/*.pem 2>/dev/null)" ] && break; sleep 0.1; done
sleep 0.5
HASH=$(openssl x509 -in "$(ls "$D"/*cert*.pem | head -1)" -outform der | sha256sum | cut -d' ' -f1)
rss() { awk '/VmRSS/{printf "%.1f MB", $2/1024}' "/proc/$GP/status"; }
echo "gateway $("$GW" --version 2>/dev/null || echo "$GW"), $N ${2:-ws} sessions"
echo "before:   $(rss)"
"$BENCH" clients --url "$URL" --cert-sha256 "$HASH" --count "$N" --room-prefix m- --concurrency 200 \
  --max-secs 60 --bind 127.0.0.2,127.0.0.3,127.0.0.4 > "$D/clients.log" 2>&1 &
CP=$!
for _ in $(seq 60); do grep -q '"ready"' "$D/clients.log" && break; sleep 1; done
sleep 3
echo "peak:     $(rss) ($(grep -o '"connected":[0-9]*' "$D/clients.log"))"
kill -9 "$CP"; wait "$CP" 2>/dev/null || true; CP=
sleep 10; echo "+10 s:    $(rss)"
sleep 20; echo "+30 s:    $(rss)"
sleep 30; echo "+60 s:    $(rss)"
