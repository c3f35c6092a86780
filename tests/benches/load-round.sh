#!/usr/bin/env bash
# The load runs behind BENCHMARKS.md. Each starts a fresh `payhook serve` (release build) on
# 127.0.0.1, drives it with payhook-load, prints acknowledgements, latency, peak memory,
# how much was still pending when the load stopped, and how long applying the rest took.
#
#   cargo build --release --locked --bins
#   tests/benches/load-round.sh sqlite   --count 300000 --duration 8 -c 64
#   tests/benches/load-round.sh postgres --count 300000 --duration 8 -c 64
#   tests/benches/load-round.sh backlog                  # 100 000 pending, time to apply
#   tests/benches/load-round.sh backlog-postgres         # the same on PostgreSQL
#   tests/benches/load-round.sh e2e sqlite   --count 30000 -c 64   # first delivery to last
#   tests/benches/load-round.sh e2e postgres --count 30000 -c 64   # applied, new checkouts
#   SERVER_ENV="PROCESS_NICE=0" tests/benches/load-round.sh sqlite ...   # server settings
#   PG_URL_QUERY="sslmode=disable" tests/benches/load-round.sh backlog-postgres  # libpq options
#
# Needs the sqlite3 CLI; `postgres` needs psql and a server at $PG_ADMIN_URL (trust auth),
# where it drops and creates the database payhook_bench. Bounded: payhook-load stops at
# --count or --duration, and waiting for the backlog stops after 120 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${CARGO_TARGET_DIR:-target}/release"
port="${PORT:-39000}"
work="${WORK_DIR:-/tmp/payhook-bench}"
pg_admin="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export STRIPE_WEBHOOK_SECRET=whsec_bench_secret
mode="${1:?sqlite | postgres | backlog | backlog-postgres | e2e sqlite|postgres}"
shift

serve() { # $1: DATABASE_URL
  # shellcheck disable=SC2086  # SERVER_ENV is a list of NAME=value words
  env ${SERVER_ENV:-} DATABASE_URL="$1" BIND="127.0.0.1:$port" RUST_LOG=warn \
    "$bin/payhook" serve >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 2000); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; exit 1; }
    sleep 0.002
  done
  echo "not ready after 4 s"; exit 1
}
stop() { kill "$server"; wait "$server" || true; }
peak_memory() { grep VmHWM "/proc/$server/status" | tr -s ' \t' ' '; }
load() { "$bin/payhook-load" --url "http://127.0.0.1:$port/webhooks/stripe" "$@" | tail -4; }
# What the running server counts as pending (`payhook_events_pending` on /metrics, read from
# the database at each scrape): one HTTP request per poll. Polling with psql started a
# process, a TLS session and a PostgreSQL backend ten times a second, which took 17 % of the
# CPU while a PostgreSQL drain was timed (perf, 30 November).
pending_now() {
  curl -sf "http://127.0.0.1:$port/metrics" | awk '$1 == "payhook_events_pending" { print $2 }'
}
# Polled less often while much is pending, more often near the end: on PostgreSQL the gauge
# is a COUNT(*) over the pending rows, 20 ms with 100 000 of them. Ten polls a second made
# 14 % of the database's time during a drain (log_min_duration_statement = 0, 30 November
# 19:50), four a second still 6 % (22:27). Now the next poll comes after a third of the time
# the rate so far says is left, between 0.05 and 1 s: about ten polls in a drain, most of
# them over few rows, and the end still seen within 50 ms. Bounded: gives up after 120 s.
wait_applied() {
  local t0 n n0 delay
  t0=$(date +%s%N)
  n0=$(pending_now)
  n=$n0
  delay=0.25
  while [ "$n" != 0 ] && [ $(( $(date +%s%N) - t0 )) -lt 120000000000 ]; do
    sleep "$delay"
    n=$(pending_now)
    delay=$(awk -v n0="$n0" -v n="$n" -v ns=$(( $(date +%s%N) - t0 )) 'BEGIN {
      rate = (n0 - n) / (ns / 1e9); d = (rate > 0) ? n / rate / 3 : 0.25
      printf "%.3f", (d < 0.05) ? 0.05 : (d > 1) ? 1 : d }')
  done
  echo "applied the rest in $(( ($(date +%s%N) - t0) / 1000000 )) ms (pending now: $n)"
}

fresh_pg() { # prints the URL of an empty database payhook_bench
  psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS payhook_bench WITH (FORCE)" \
    -c "CREATE DATABASE payhook_bench" 2>&1 | grep -v NOTICE >&2 || true
  echo "${pg_admin%/*}/payhook_bench${PG_URL_QUERY:+?$PG_URL_QUERY}"
}
# Every event pending again, derived state gone: the state of a payhook that admitted the
# events and applied none.
# The queue (webhook_event_queue, from migration 000090 on) refilled to match; a build from
# before it has no queue, and its reset leaves that statement out (for A/B rounds).
RESET_SQL="UPDATE webhook_events SET status = 'pending', attempts = 0, processed_at = NULL,
  last_error = NULL, next_attempt_at_ms = 0; DELETE FROM checkout_transitions;
  DELETE FROM outbox_attempts; DELETE FROM outbox; DELETE FROM checkouts; DELETE FROM payment_methods;
  DELETE FROM customers;"
REQUEUE_SQL="DELETE FROM webhook_event_queue; INSERT INTO webhook_event_queue
  (created, received_at, id, object_id, next_attempt_at_ms)
  SELECT created, received_at, id, object_id, 0 FROM webhook_events;"
timed_backlog() { # $1: DATABASE_URL, $2: command printing the pending count
  echo "pending before start: $($2)"
  sync
  local t0
  t0=$(date +%s%N)
  serve "$1"
  echo "ready after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  wait_applied
  echo "(the time above starts when payhook is ready; add the start-up for the whole)"
  echo "$(peak_memory)"
  stop
}

# Whatever the previous run left for the disk to do is done before this one starts: its
# database dropped (so autovacuum does not start on it meanwhile), PostgreSQL's dirty buffers
# written (a checkpoint), the page cache synced. Without it a SQLite run right after a
# PostgreSQL one met that run's checkpoint in its own fsyncs: p99 at 1 000/s of 21-23 ms
# against 3.4-5.5 ms after a SQLite run (30 November, 22:40-22:50).
settle_disk() {
  psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS payhook_bench WITH (FORCE)" \
    -c "CHECKPOINT" >/dev/null 2>&1 || true
  sync
}

rm -rf "$work"; mkdir -p "$work"
settle_disk
case "$mode" in
  sqlite)
    db="$work/payhook.sqlite3"
    serve "$db"
    load "$@"
    echo "$(peak_memory) at the end of the load"
    pending() { sqlite3 "$db" "SELECT count(*) FROM webhook_events WHERE status = 'pending'"; }
    echo "pending when the load stopped: $(pending)"
    wait_applied
    echo "$(peak_memory) after applying"
    stop
    ;;
  postgres)
    url=$(fresh_pg)
    serve "$url"
    load "$@"
    echo "$(peak_memory) at the end of the load"
    pending() { psql -At "$url" -c "SELECT count(*) FROM webhook_events WHERE status = 'pending'"; }
    echo "pending when the load stopped: $(pending)"
    wait_applied
    stop
    ;;
  backlog)
    db="$work/payhook.sqlite3"
    pending() { sqlite3 "$db" "SELECT count(*) FROM webhook_events WHERE status = 'pending'"; }
    serve "$db"
    load --count 105300 --duration 60 -c 64 --dup 0.05 >/dev/null
    wait_applied >/dev/null
    stop
    requeue=""
    [ "$(sqlite3 "$db" "SELECT count(*) FROM sqlite_master WHERE name = 'webhook_event_queue'")" = 1 ] &&
      requeue="$REQUEUE_SQL"
    sqlite3 "$db" "$RESET_SQL $requeue PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
    timed_backlog "$db" pending
    ;;
  backlog-postgres)
    url=$(fresh_pg)
    pending() { psql -At "$url" -c "SELECT count(*) FROM webhook_events WHERE status = 'pending'"; }
    serve "$url"
    load --count 105300 --duration 60 -c 64 --dup 0.05 >/dev/null
    stop # what was applied meanwhile is undone below
    # The derived tables emptied by TRUNCATE, not DELETE + ANALYZE: analysed while empty,
    # they made PostgreSQL plan every lookup as a sequential scan for the whole drain (120-155
    # events/s), a state no real backlog is in. TRUNCATE leaves them as a payhook that
    # admitted the events and applied none has them: never analysed.
    psql -q "$url" -c "UPDATE webhook_events SET status = 'pending', attempts = 0,
      processed_at = NULL, last_error = NULL, next_attempt_at_ms = 0" \
      -c "TRUNCATE checkout_transitions, outbox_attempts, outbox, checkouts, payment_methods,
      customers, app_checkouts CASCADE" -c "VACUUM ANALYZE webhook_events" >/dev/null
    # Refilled after the VACUUM, and never analysed: as admission leaves it.
    if [ "$(psql -At "$url" -c "SELECT to_regclass('webhook_event_queue') IS NOT NULL")" = t ]; then
      psql -q "$url" -c "$REQUEUE_SQL" >/dev/null
    fi
    timed_backlog "$url" pending
    ;;
  e2e)
    # First delivery to last applied, with events that each open a new checkout and queue a
    # card to save (payhook-load --mix new-checkouts, no re-deliveries).
    backend="${1:?e2e sqlite|postgres}"
    shift
    case "$backend" in
      sqlite) url="$work/payhook.sqlite3"
        pending() { sqlite3 "$url" "SELECT count(*) FROM webhook_events WHERE status = 'pending'"; }
        applied() { sqlite3 "$url" "SELECT count(*) FROM checkouts"; } ;;
      postgres) url=$(fresh_pg)
        pending() { psql -At "$url" -c "SELECT count(*) FROM webhook_events WHERE status = 'pending'"; }
        applied() { psql -At "$url" -c "SELECT count(*) FROM checkouts"; } ;;
      *) echo "e2e sqlite|postgres"; exit 2 ;;
    esac
    serve "$url"
    t0=$(date +%s%N)
    load --mix new-checkouts --dup 0 --duration 60 "$@"
    echo "pending when the load stopped: $(pending)"
    wait_applied
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    n=$(applied)
    echo "end to end: $n checkouts opened in $ms ms from the first delivery = $(( n * 1000 / (ms > 0 ? ms : 1) )) events/s"
    echo "$(peak_memory)"
    stop
    ;;
  *) echo "unknown mode $mode: sqlite | postgres | backlog"; exit 2 ;;
esac
