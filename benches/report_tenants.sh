#!/usr/bin/env bash
# GET /v1/reports/pnl on both store backends, side by side: one tenant, then requests
# spread over many tenants (a key each, round robin through benches/tenant_keys.lua),
# with the default 5 s read cache and with it off. Each tenant holds a small journal
# (24 months x 50 outlets). PostgreSQL is the local server (LS_BENCH_POSTGRES, default
# postgres://postgres@127.0.0.1:5432), in a database made for the run and dropped
# after it. Prints markdown table rows.
# Usage: bash benches/report_tenants.sh [BINARY] [TENANTS=300] [SECONDS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/ledgersync-target}/release/ledgersync}"
tenants="${2:-300}"
seconds="${3:-10}"
postgres="${LS_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
database="ledgersync_bench_$$"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

work=$(mktemp -d)
servers=()
cleanup() {
  for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$postgres/postgres" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export LEDGERSYNC_LOG=warn,sqlx=error LEDGERSYNC_MAIL__OUTBOX="$work/outbox"
python3 benches/gen_journal.py 5000 "$work/journal.csv"
psql -q "$postgres/postgres" -c "CREATE DATABASE $database"

provision() { # store URL, keys file → tenants provisioned, one read key each
  local url=$1 keys=$2 i slug
  export LEDGERSYNC_STORE__URL="$url"
  for i in $(seq -w 1 "$tenants"); do
    slug=$("$bin" provision customer --name "Bench $i" --email "bench$i@bench.example" \
      --plan pro --users 1 | awk '/^slug:/ {print $2}')
    "$bin" import --tenant "$slug" "$work/journal.csv" >/dev/null
    "$bin" apikey create --tenant "$slug" --name wrk | head -1 >>"$keys"
  done
}

wrk_run() { # URL, keys file → "req/s p99 non-2xx"
  wrk -t2 -c16 -d"${seconds}s" --latency -s benches/tenant_keys.lua "$1" -- "$2" >"$work/wrk.out"
  awk '/Requests\/sec/ {rps = $2} $1 == "99%" {p99 = $2} /Non-2xx/ {bad = $5}
       END {printf "%d %s %d\n", rps, p99, bad}' "$work/wrk.out"
}

serve() { # store URL, port, cache TTL (s) → a server answering on the port
  LEDGERSYNC_STORE__URL="$1" LEDGERSYNC_SERVER__LISTEN="127.0.0.1:$2" \
    LEDGERSYNC_SERVER__CACHE_TTL_SECS="$3" "$bin" serve &
  servers+=($!)
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$2/healthz" >/dev/null && return; sleep 0.2; done
  echo "the server on port $2 did not start" >&2
  exit 1
}

declare -A result
for backend in sqlite postgres; do
  if [ "$backend" = sqlite ]; then url="sqlite://$work/sqlite"; else url="$postgres/$database"; fi
  echo "provisioning $tenants tenants on $backend" >&2
  provision "$url" "$work/$backend.keys"
  head -1 "$work/$backend.keys" >"$work/$backend.one"
  # Let PostgreSQL's background work after the loads (autovacuum, checkpoint) finish
  # before measuring the server.
  if [ "$backend" = postgres ]; then psql -q "$url" -c "VACUUM ANALYZE" -c "CHECKPOINT"; fi
  serve "$url" 8093 5
  serve "$url" 8094 0
  report="/v1/reports/pnl?from=2024-01&to=2025-12"
  result[$backend,one]=$(wrk_run "http://127.0.0.1:8093$report" "$work/$backend.one")
  # The cached rows measure a warm cache: each tenant's report asked for once before
  # (the first render of 300 tenants is what the cache-off rows measure).
  while read -r key; do
    curl -sf -o /dev/null -H "Authorization: Bearer $key" "http://127.0.0.1:8093$report"
  done <"$work/$backend.keys"
  result[$backend,many]=$(wrk_run "http://127.0.0.1:8093$report" "$work/$backend.keys")
  result[$backend,cold]=$(wrk_run "http://127.0.0.1:8094$report" "$work/$backend.one")
  result[$backend,cold_many]=$(wrk_run "http://127.0.0.1:8094$report" "$work/$backend.keys")
  kill "${servers[@]}"
  wait "${servers[@]}" 2>/dev/null || true
  servers=()
done

row() { # label, result key, target
  read -r s_rps s_p99 s_bad <<<"${result[sqlite,$2]}"
  read -r p_rps p_p99 p_bad <<<"${result[postgres,$2]}"
  echo "| $1 | $p_rps (p99 $p_p99, non-2xx $p_bad) | SQLite: $s_rps (p99 $s_p99, non-2xx $s_bad) | $(python3 -c "print(f'{$p_rps / $s_rps:.3f}')") | $3 |"
}
row "GET /v1/reports/pnl on PostgreSQL (req/s), 1 tenant, default 5 s cache" one "p99 < 5 ms"
row "the same over $tenants tenants (a key each, round robin), default cache" many "p99 < 5 ms"
row "the same, 1 tenant, cache off (every request reads the aggregates)" cold ""
row "the same over $tenants tenants, cache off" cold_many ""
