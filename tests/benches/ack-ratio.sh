#!/usr/bin/env bash
# Acknowledging on SQLite against storing nothing (issue 13): runs the verify-only reference
# receiver (tests/benches/verify_only.rs: payhook's HTTP server and door, no storage) and
# `payhook serve` (SQLite, default FULL durability, a fresh file each run) alternately with
# the same payhook-load settings, and prints each round's ratio payhook / reference and the
# median. Absolute figures on shared cores swing from minute to minute; the ratio of two runs
# a few seconds apart is what this measures.
#
#   cargo build --release --locked --bins --examples
#   tests/benches/ack-ratio.sh [rounds] [payhook-load arguments…]
#   tests/benches/ack-ratio.sh 5 --count 300000 --duration 8 -c 64      # the default
#   SERVER_ENV="SQLITE_DURABILITY=normal" tests/benches/ack-ratio.sh 3  # payhook settings
#
# The order alternates (reference first in odd rounds, payhook first in even ones), so a
# machine whose load drifts favours neither. Bounded: each run stops at --count or --duration.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${CARGO_TARGET_DIR:-target}/release"
port="${PORT:-39010}"
work="${WORK_DIR:-/tmp/payhook-ack-ratio}"
export STRIPE_WEBHOOK_SECRET=whsec_bench_secret
rounds="${1:-5}"
shift || true
[ $# -gt 0 ] || set -- --count 300000 --duration 8 -c 64
[ -x "$bin/examples/verify-only" ] || { echo "build it: cargo build --release --examples"; exit 1; }

start() { # $1: reference | payhook
  rm -rf "$work"; mkdir -p "$work"
  local program=("$bin/payhook" serve)
  [ "$1" = reference ] && program=("$bin/examples/verify-only")
  # shellcheck disable=SC2086  # SERVER_ENV is a list of NAME=value words
  env ${SERVER_ENV:-} DATABASE_URL="$work/payhook.sqlite3" BIND="127.0.0.1:$port" RUST_LOG=warn \
    "${program[@]}" >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 2000); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; exit 1; }
    sleep 0.002
  done
  echo "not ready after 4 s"; exit 1
}
stop() { kill "$server"; wait "$server" || true; }
run() { # $1: reference | payhook; prints acknowledged/s, then the load's summary on stderr
  local who=$1 out
  shift
  start "$who"
  out=$("$bin/payhook-load" --url "http://127.0.0.1:$port/webhooks/stripe" "$@" | tail -4)
  stop
  echo "  $who: $(echo "$out" | sed -n 2,4p | tr '\n' ' ')" >&2
  echo "$out" | sed -n 's/.* \([0-9]*\) acknowledged (2xx)\/s/\1/p'
}
ratios=()
echo "load: $*, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then
    reference=$(run reference "$@"); payhook=$(run payhook "$@")
  else
    payhook=$(run payhook "$@"); reference=$(run reference "$@")
  fi
  ratio=$(awk -v p="$payhook" -v r="$reference" 'BEGIN { printf "%.3f", p / r }')
  ratios+=("$ratio")
  echo "round $r: payhook $payhook acks/s, reference $reference acks/s, ratio $ratio (load average $(cut -d' ' -f1 /proc/loadavg))"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
echo "median ratio payhook / reference: $median over $rounds rounds"
