-- One tenant's ledger. Amounts are integers of ten-thousandths of the base currency
-- (exact fixed-point); dates are tenant-local ISO text, months 'YYYY-MM'.
CREATE TABLE accounts (
    code     TEXT PRIMARY KEY,
    name     TEXT NOT NULL,
    class    TEXT NOT NULL,
    category TEXT,
    -- Section of the direct cash-flow statement a cash movement against this
    -- account lands in.
    cash_flow_section TEXT NOT NULL
);

CREATE TABLE transactions (
    id          INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,
    source_key  TEXT NOT NULL,
    date        TEXT NOT NULL,
    month       TEXT NOT NULL,
    branch      TEXT NOT NULL,
    memo        TEXT NOT NULL,
    occurred_at TEXT,
    load_id     INTEGER NOT NULL,
    UNIQUE (source, source_key)
);
CREATE INDEX transactions_bucket ON transactions(month, branch);

CREATE TABLE postings (
    txn_id          INTEGER NOT NULL REFERENCES transactions(id),
    seq             INTEGER NOT NULL,
    account         TEXT NOT NULL REFERENCES accounts(code),
    amount          INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    original_amount INTEGER NOT NULL,
    PRIMARY KEY (txn_id, seq)
);
CREATE INDEX postings_account ON postings(account);

-- Precomputed aggregates per (month, branch); branch '*' holds the all-branch total.
CREATE TABLE month_metrics (
    month  TEXT NOT NULL,
    branch TEXT NOT NULL,
    metric TEXT NOT NULL,
    key    TEXT NOT NULL,
    amount INTEGER NOT NULL,
    PRIMARY KEY (month, branch, metric, key)
);

-- Every load (file import, sync run): what it read and what it changed.
CREATE TABLE loads (
    id            INTEGER PRIMARY KEY,
    source        TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    stream        TEXT NOT NULL,
    origin        TEXT NOT NULL,
    rows_read     INTEGER NOT NULL,
    transactions  INTEGER NOT NULL,
    postings      INTEGER NOT NULL,
    control_sum   INTEGER NOT NULL,
    loaded_at     TEXT NOT NULL,
    UNIQUE (source, fingerprint)
);

-- Where each scheduled source resumes; advanced in the same transaction as its data.
CREATE TABLE sync_cursors (
    source     TEXT PRIMARY KEY,
    position   TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
