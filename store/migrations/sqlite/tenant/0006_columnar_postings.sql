-- Postings move to columnar segments: each is a batch of one load's postings as an
-- Arrow IPC file (LZ4), written and replaced in the same transaction as the load's
-- record, cursor and aggregates. `source` and `load_id` are NULL only inside the
-- transaction of the load that is writing them.
CREATE TABLE ledger_segments (
    id          INTEGER PRIMARY KEY,
    source      TEXT,
    load_id     INTEGER,
    first_month TEXT NOT NULL,
    last_month  TEXT NOT NULL,
    postings    INTEGER NOT NULL,
    data        BLOB NOT NULL
);
CREATE INDEX ledger_segments_source ON ledger_segments (source);
CREATE INDEX ledger_segments_load ON ledger_segments (load_id);

-- Transactions whose postings a load wrote to more than one segment: their cash
-- flow can only be told once all their segments are read.
CREATE TABLE split_transactions (
    load_id INTEGER NOT NULL,
    txn     INTEGER NOT NULL,
    PRIMARY KEY (load_id, txn)
);

-- Rollups carry their cash balance change, so opening cash is one SUM; the
-- per-metric rows are gone.
ALTER TABLE month_rollups ADD COLUMN cash BIGINT NOT NULL DEFAULT 0;
UPDATE month_rollups SET cash = COALESCE((
    SELECT m.amount FROM month_metrics m
    WHERE m.month = month_rollups.month AND m.branch = month_rollups.branch
      AND m.metric = 'class' AND m.key = 'cash'), 0);
DROP TABLE month_metrics;

-- Postings of earlier versions (one row each) are moved into segments when the
-- tenant is next opened; this marks that there are some.
INSERT INTO ledger_meta (key, value)
SELECT 'row_postings', 'pending' WHERE EXISTS (SELECT 1 FROM postings);
