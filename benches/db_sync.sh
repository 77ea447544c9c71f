#!/usr/bin/env bash
# Database Connect, measured beside its peers on one machine: a POS sales table of
# ROWS rows in the local PostgreSQL and MariaDB, read
#   - by ledgersync's first sync (read, map, write, aggregates, commit) into a fresh
#     SQLite store, whole process, with its peak memory;
#   - by ConnectorX (PyPI `connectorx`) into Arrow, the query the connector sends
#     (ordered by the cursor column, then the key) and the bare SELECT *;
#   - by `COPY (query) TO STDOUT (FORMAT binary)` through psql, the read limit
#     (PostgreSQL only; the connector's query);
# in three rounds of all of them (best of 3 each), once the servers have settled;
# then 1,000 rows are changed at the source and synced again (incremental), twice.
# Usage: bash benches/db_sync.sh [ledgersync binary] [rows=2000000]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ledgersync-target}"
bin="${1:-$CARGO_TARGET_DIR/release/ledgersync}"
rows="${2:-2000000}"
venv="$HOME/.cache/ledgersync-bench-venv"
if ! "$venv/bin/python" -c "import connectorx, pyarrow" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet connectorx pyarrow
fi
work=$(mktemp -d)
db=ls_bench_pos
trap 'rm -rf "$work"; psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; mariadb -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS $db; DROP USER IF EXISTS '"'"'ls_bench'"'"'@'"'"'%'"'"'; DROP USER IF EXISTS '"'"'ls_bench'"'"'@'"'"'localhost'"'"'" >/dev/null 2>&1 || true' EXIT
export LEDGERSYNC_LOG=warn,sqlx=error
export LEDGERSYNC_CREDENTIALS__KEY_FILE="$work/master.key"
best() { sort -g | head -1; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

echo "seeding $rows POS sales in PostgreSQL and MariaDB" >&2
psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d "$db" <<SQL
CREATE TABLE sales AS
SELECT 'S' || lpad(i::text, 9, '0') AS sale_id,
       timestamp '2024-01-01' + i * interval '13 seconds' AS sold_at,
       (ARRAY['Kemang','Senopati','Bintaro','Dago','Braga','Tunjungan'])[1 + i % 6] AS outlet,
       (ARRAY['coffee','tea','pastry','rice_bowl'])[1 + i % 4] AS category,
       (ARRAY['cash','qris','card','gofood','ovo'])[1 + (i / 7) % 5] AS payment_method,
       (15000 + (i * 7919) % 90000 + (i % 7) * 0.25)::numeric(18,4) AS net_amount,
       ((15000 + (i * 7919) % 90000) / 10)::numeric(18,4) AS tax,
       timestamp '2024-01-01' + i * interval '13 seconds' AS updated_at
FROM generate_series(1::bigint, $rows) AS i;
ALTER TABLE sales ADD PRIMARY KEY (sale_id);
CREATE INDEX sales_updated_at ON sales (updated_at, sale_id);
-- Vacuumed now, so that autovacuum does not take the fresh table's turn during a run.
VACUUM (ANALYZE) sales;
SQL
mariadb -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db"
mariadb -h 127.0.0.1 -u root "$db" <<SQL
CREATE TABLE sales (sale_id VARCHAR(16) PRIMARY KEY, sold_at DATETIME NOT NULL,
  outlet VARCHAR(20) NOT NULL, category VARCHAR(20) NOT NULL, payment_method VARCHAR(10) NOT NULL,
  net_amount DECIMAL(18,4) NOT NULL, tax DECIMAL(18,4) NOT NULL, updated_at DATETIME NOT NULL,
  KEY sales_updated_at (updated_at, sale_id));
INSERT INTO sales
SELECT CONCAT('S', LPAD(seq, 9, '0')), TIMESTAMPADD(SECOND, seq * 13, '2024-01-01'),
       ELT(1 + seq % 6, 'Kemang','Senopati','Bintaro','Dago','Braga','Tunjungan'),
       ELT(1 + seq % 4, 'coffee','tea','pastry','rice_bowl'),
       ELT(1 + (seq DIV 7) % 5, 'cash','qris','card','gofood','ovo'),
       15000 + (seq * 7919) % 90000 + (seq % 7) * 0.25, ((15000 + (seq * 7919) % 90000) DIV 10),
       TIMESTAMPADD(SECOND, seq * 13, '2024-01-01')
FROM seq_1_to_$rows;
SQL
# A reader of the bench database only, with a password made for this run.
password=$(python3 -c "import secrets; print(secrets.token_hex(12))")
mariadb -h 127.0.0.1 -u root -e "DROP USER IF EXISTS 'ls_bench'@'%'; DROP USER IF EXISTS 'ls_bench'@'localhost'; CREATE USER 'ls_bench'@'%' IDENTIFIED BY '$password'; CREATE USER 'ls_bench'@'localhost' IDENTIFIED BY '$password'; GRANT SELECT ON $db.* TO 'ls_bench'@'%'; GRANT SELECT ON $db.* TO 'ls_bench'@'localhost';"

# Both servers settle before anything is timed: PostgreSQL writes the seeded table
# out, InnoDB purges the insert's undo (waited for up to a minute).
psql -q -h 127.0.0.1 -U postgres -d "$db" -c "CHECKPOINT"
for _ in $(seq 60); do
  history=$(mariadb -h 127.0.0.1 -u root -N -e "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'INNODB_HISTORY_LIST_LENGTH'")
  [ "$history" -lt 100 ] && break
  sleep 1
done

query="SELECT * FROM sales"
ordered_query="SELECT * FROM sales ORDER BY updated_at, sale_id"
mapping="$PWD/examples/streams/pos_sales.toml"
results=()
for kind in postgres mysql; do
  if [ "$kind" = postgres ]; then
    user=postgres port=5432 url="postgresql://postgres@127.0.0.1:5432/$db"
  else
    user=ls_bench port=3306 url="mysql://ls_bench:$password@127.0.0.1:3306/$db"
  fi
  cat >"$work/$kind.toml" <<TOML
kind = "$kind"
host = "127.0.0.1"
port = $port
database = "$db"
user = "$user"
tls = "disable"
source_timezone = "UTC"

[[streams]]
name = "pos_sales"
table = "sales"
mapping = "$mapping"
cursor = { column = "updated_at", lookback = "0s" }
TOML
  # Three rounds, each a first sync into a fresh store and then each peer, so that
  # all meet the server in the same state (a server still flushing the seeded table
  # slows whichever runs first); best of 3 each. The incremental rounds below go on
  # in the last store. ConnectorX reads the query the connector sends (ordered by
  # the cursor, then the key, so that each commit's cursor is a safe place to
  # resume) and the bare SELECT * that reads in whatever order the server likes.
  for run in 1 2 3; do
    export LEDGERSYNC_STORE__URL="sqlite://$work/store-$kind-$run"
    "$bin" provision customer --name Bench --email "bench@$kind.example" --plan pro --users 1 >/dev/null
    POS_PASSWORD=$password "$bin" connector add --tenant bench --name pos --file "$work/$kind.toml" --password-env POS_PASSWORD >/dev/null
    sync "$work"
    /usr/bin/time -f "%e %M" -o "$work/sync-$kind-$run.time" "$bin" connector sync --tenant bench pos >&2
    for which in ordered bare; do
      q=$ordered_query
      [ "$which" = bare ] && q=$query
      "$venv/bin/python" -c "
import time, connectorx as cx
t = time.perf_counter(); table = cx.read_sql('$url', '$q', return_type='arrow')
print(time.perf_counter() - t, table.num_rows)" >"$work/cx-$kind-$which-$run"
    done
    if [ "$kind" = postgres ]; then
      /usr/bin/time -f "%e" -o "$work/copy-$run" psql -q -h 127.0.0.1 -U postgres -d "$db" \
        -c "\\copy ($ordered_query) TO '/dev/null' WITH (FORMAT binary)"
    fi
  done
  read -r sync_s sync_kb < <(cat "$work"/sync-$kind-*.time | best)
  read -r cx_s cx_rows < <(cat "$work"/cx-$kind-ordered-* | best)
  cx_s=$(printf '%.2f' "$cx_s")
  read -r bare_s _ < <(cat "$work"/cx-$kind-bare-* | best)
  bare_s=$(printf '%.2f' "$bare_s")
  copy_s=""
  if [ "$kind" = postgres ]; then
    copy_s=$(cat "$work"/copy-* | best)
  fi

  # 1,000 rows scattered over the table changed at the source, then synced; twice
  # (the first such sync also builds the source's key index, once), each round
  # changing other rows.
  inc=()
  for round in 1 2; do
    if [ "$kind" = postgres ]; then
      psql -q -h 127.0.0.1 -U postgres -d "$db" -c "UPDATE sales SET net_amount = net_amount + 1, updated_at = timestamp '2030-01-01' + interval '$round minutes' WHERE sale_id IN (SELECT sale_id FROM sales ORDER BY md5(sale_id || '$round') LIMIT 1000)"
    else
      mariadb -h 127.0.0.1 -u root "$db" -e "UPDATE sales SET net_amount = net_amount + 1, updated_at = TIMESTAMPADD(MINUTE, $round, '2030-01-01') ORDER BY MD5(CONCAT(sale_id, '$round')) LIMIT 1000"
    fi
    /usr/bin/time -f "%e %M" -o "$work/inc-$kind-$round.time" "$bin" connector sync --tenant bench pos >&2
    read -r inc_s _ <"$work/inc-$kind-$round.time"
    inc+=("$inc_s")
  done
  results+=("$kind|$sync_s|$((sync_kb / 1024))|$cx_s|$cx_rows|$bare_s|${copy_s:-}|${inc[0]}|${inc[1]}")
done

echo
echo "| source | ledgersync first sync, whole process (s) | peak RSS (MB) | ConnectorX, the same query (s) | ratio | ConnectorX, bare SELECT * (s) | ratio | COPY binary, the same query (s) | 1,000 changed rows, first time: key index built (s) | 1,000 other changed rows (s) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for line in "${results[@]}"; do
  IFS='|' read -r kind sync_s rss cx_s cx_rows bare_s copy_s inc_first inc_next <<<"$line"
  echo "| $kind, $cx_rows rows | $sync_s | $rss | $cx_s | $(ratio "$sync_s" "$cx_s") | $bare_s | $(ratio "$sync_s" "$bare_s") | ${copy_s:--} | $inc_first | $inc_next |"
done
