"""DuckDB computing the same aggregates as ledgersync's rebuild (sums by month,
branch and class; by category; the direct cash flow classified by counterpart
postings) over the same postings, loaded into memory first. Best of three, seconds."""
import sys
import time

import duckdb

journal, chart = sys.argv[1], sys.argv[2]
db = duckdb.connect()
db.execute(f"CREATE TABLE postings AS SELECT txn_id, substr(CAST(date AS VARCHAR), 1, 7) AS month, "
           f"coalesce(branch, '') AS branch, CAST(account AS VARCHAR) AS account, "
           f"CAST(round(amount * 10000) AS BIGINT) AS amount FROM read_csv_auto('{journal}', all_varchar=false)")
db.execute(f"CREATE TABLE accounts AS SELECT CAST(code AS VARCHAR) AS code, class, category, section "
           f"FROM read_csv_auto('{chart}')")
rows = db.execute("SELECT count(*) FROM postings").fetchone()[0]
queries = [
    """SELECT p.month, p.branch, a.class, sum(p.amount) FROM postings p JOIN accounts a ON a.code = p.account
       GROUP BY ALL""",
    """SELECT p.month, p.branch, a.class, coalesce(a.category, ''), sum(p.amount) FROM postings p
       JOIN accounts a ON a.code = p.account WHERE a.class IN ('revenue', 'cogs', 'expense') GROUP BY ALL""",
    """WITH cash_txns AS (SELECT DISTINCT p.txn_id FROM postings p JOIN accounts a ON a.code = p.account
                          WHERE a.class = 'cash'),
            per_txn AS (SELECT p.month, p.branch, p.txn_id, a.section, -sum(p.amount) AS flow
                        FROM postings p JOIN accounts a ON a.code = p.account
                        WHERE a.class <> 'cash' AND p.txn_id IN (SELECT txn_id FROM cash_txns)
                        GROUP BY ALL)
       SELECT month, branch, section, flow > 0 AS inflow, sum(flow) FROM per_txn WHERE flow <> 0 GROUP BY ALL""",
]
best = float("inf")
for _ in range(3):
    started = time.perf_counter()
    for query in queries:
        db.execute(query).fetchall()
    best = min(best, time.perf_counter() - started)
print(f"{best:.4f} {rows}")
