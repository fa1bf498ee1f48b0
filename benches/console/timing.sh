#!/usr/bin/env bash
# Server time of the console's pages with N jobs in etcd (default 100,000):
# starts `augur dev` on spare ports, copies one real job record N times
# straight into etcd (through etcd's HTTP gateway, 128 puts a transaction;
# no finished-index entries, so retention leaves them alone), then times each
# page with curl (median of 3). Prints figures; asserts nothing.
#   benches/console/timing.sh [N]      (needs a built target/debug/augur)
set -euo pipefail
N="${1:-100000}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
AUGUR="${AUGUR_BIN:-$ROOT/target/debug/augur}"
DIR="$(mktemp -d)"
trap 'kill "$DEV" 2>/dev/null || true; wait "$DEV" 2>/dev/null || true; rm -rf "$DIR"' EXIT
"$AUGUR" dev --listen 127.0.0.1:17170 --metrics-listen 127.0.0.1:17171 >"$DIR/dev.log" 2>&1 &
DEV=$!
for _ in $(seq 60); do grep -q 'console' "$DIR/dev.log" && break; sleep 0.5; done
ETCD="$(grep -oE 'etcd +http://[0-9.:]+' "$DIR/dev.log" | awk '{print $2}')"
export AUGUR_ENDPOINT=http://127.0.0.1:17170
SAMPLE="$("$AUGUR" submit --wait -- sh -c 'echo sample')"
python3 "$ROOT/benches/console/fill_jobs.py" "$ETCD" "$SAMPLE" "$N"
JOB="$("$AUGUR" submit --wait -- sh -c 'echo measured')"
curl -s -c "$DIR/jar" -o /dev/null "$AUGUR_ENDPOINT/"
echo "console pages with $N jobs in etcd ($(basename "$AUGUR") at $AUGUR):"
for path in "/jobs/$JOB" "/jobs" "/" "/jobs?name=nomatch" "/workers" "/model" "/workflows"; do
  for _ in 1 2 3; do
    curl -s -b "$DIR/jar" -o /dev/null -w '%{time_total} %{size_download}\n' "$AUGUR_ENDPOINT$path"
  done | sort -n | sed -n 2p | awk -v p="$path" '{printf "  %-34s median %6.1f ms  %7d bytes\n", p, $1*1000, $2}'
done
