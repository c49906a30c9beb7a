#!/bin/sh
# End-to-end tests of the browser SDK and the demo page in headless Chromium against a real
# gateway. Builds nothing: it needs
#   - the gateway binary: $SIGNALGATE_BIN, default target/release/signalgate (or
#     target/debug/signalgate when there is no release build) at the repository root;
#   - Chromium: /usr/bin/chromium (Debian package `chromium`), or $CHROMIUM_BIN;
#   - node_modules of clients/js (`npm ci`; playwright-core, no downloaded browsers);
#   - unshare(1) and ip(8): everything runs in a network namespace with only loopback.
#
# Usage: clients/js/e2e/run.sh [test files...]   (default: every clients/js/e2e/*.test.mjs)
#        (or: cd clients/js && npm run e2e [-- e2e/kill.test.mjs])
# Environment: SIGNALGATE_E2E_OUT (logs, screenshots, measurements; default a new temp dir),
#   SIGNALGATE_E2E_SCREENSHOTS (also write the README screenshots there),
#   SIGNALGATE_E2E_NETLOG=1 (Chromium --log-net-log into the out dir),
#   SIGNALGATE_E2E_TIMEOUT (seconds for the whole suite, default 600).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
js=$(dirname "$here")
repo=$(cd "$js/../.." && pwd)

fail() {
  echo "e2e: $*" >&2
  exit 1
}

if [ -z "${SIGNALGATE_BIN:-}" ]; then
  if [ -x "$repo/target/release/signalgate" ]; then
    SIGNALGATE_BIN="$repo/target/release/signalgate"
  else
    SIGNALGATE_BIN="$repo/target/debug/signalgate"
  fi
fi
case "$SIGNALGATE_BIN" in /*) ;; *) SIGNALGATE_BIN="$(pwd)/$SIGNALGATE_BIN" ;; esac
[ -x "$SIGNALGATE_BIN" ] || fail "gateway binary $SIGNALGATE_BIN not found: run \`cargo build --release\` or set SIGNALGATE_BIN"

CHROMIUM_BIN=${CHROMIUM_BIN:-/usr/bin/chromium}
[ -x "$CHROMIUM_BIN" ] || fail "$CHROMIUM_BIN not found: install the Debian package \`chromium\` (apt-get install -y chromium) or set CHROMIUM_BIN"
[ -d "$js/node_modules/playwright-core" ] || fail "playwright-core is missing: run \`npm ci\` in clients/js"
command -v unshare >/dev/null || fail "unshare not found (util-linux)"
command -v ip >/dev/null || fail "ip not found (iproute2)"

# The embedded demo must be the one in clients/js: a stale binary tests old code.
for f in "$js/dist/demo.js" "$js/demo/index.html"; do
  [ "$SIGNALGATE_BIN" -nt "$f" ] || echo "e2e: warning: $SIGNALGATE_BIN is older than $f (rebuild the gateway to embed it)" >&2
done

if [ -z "${SIGNALGATE_E2E_OUT:-}" ]; then
  SIGNALGATE_E2E_OUT=$(mktemp -d "${TMPDIR:-/tmp}/signalgate-e2e.XXXXXX")
fi
mkdir -p "$SIGNALGATE_E2E_OUT"
SIGNALGATE_E2E_OUT=$(cd "$SIGNALGATE_E2E_OUT" && pwd)
: >"$SIGNALGATE_E2E_OUT/measurements.txt"
if [ -n "${SIGNALGATE_E2E_SCREENSHOTS:-}" ]; then
  mkdir -p "$SIGNALGATE_E2E_SCREENSHOTS"
  SIGNALGATE_E2E_SCREENSHOTS=$(cd "$SIGNALGATE_E2E_SCREENSHOTS" && pwd)
  export SIGNALGATE_E2E_SCREENSHOTS
fi
export SIGNALGATE_BIN CHROMIUM_BIN SIGNALGATE_E2E_OUT

# Test files may be given relative to the current directory or to clients/js.
for arg in "$@"; do
  shift
  if [ -f "$arg" ]; then arg=$(cd "$(dirname "$arg")" && pwd)/$(basename "$arg"); fi
  set -- "$@" "$arg"
done
cd "$js"
if [ "$#" -eq 0 ]; then
  set -- e2e/*.test.mjs
fi
for arg in "$@"; do
  [ -f "$arg" ] || fail "no such test file: $arg"
done

echo "e2e: gateway $SIGNALGATE_BIN"
echo "e2e: chromium $("$CHROMIUM_BIN" --version 2>/dev/null | tail -n 1)"
echo "e2e: output in $SIGNALGATE_E2E_OUT"
start=$(date +%s)

# One test file at a time (timing assertions), each file in its own node process, all inside
# a network namespace that has only loopback. `timeout` bounds the whole run; Node's test
# runner kills a file's process when the file ends, and every file stops its gateways and
# browsers in `after` hooks (and SIGKILLs its gateways on exit).
status=0
timeout --kill-after=10 "${SIGNALGATE_E2E_TIMEOUT:-600}" \
  unshare -rn sh -c 'ip link set lo up && exec node --test --test-concurrency=1 --test-timeout=240000 "$@"' e2e "$@" ||
  status=$?

echo
echo "e2e: measurements ($SIGNALGATE_E2E_OUT/measurements.txt):"
sed 's/^/  /' "$SIGNALGATE_E2E_OUT/measurements.txt"
echo "e2e: $(($(date +%s) - start)) s, exit status $status; logs in $SIGNALGATE_E2E_OUT"
[ "$status" -eq 124 ] && echo "e2e: the suite hit its time limit" >&2
exit "$status"
