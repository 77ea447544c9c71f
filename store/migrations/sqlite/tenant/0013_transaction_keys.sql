-- The key index: each transaction of an indexed source by its key, with where it is
-- stored (its segment's manifest load and number) and what it holds, so that a load
-- replacing it finds it, undoes its sums and hides it without reading segments.
-- `postings` is JSON: date (days since 1970-01-01), branch, and the postings'
-- (account, amount, memo, currency, original amount), sorted. Without a rowid, an
-- entry is one row of one B-tree: a replacement touches one page, not three.
CREATE TABLE transaction_keys (
    source   TEXT NOT NULL,
    key      TEXT NOT NULL,
    load_id  BIGINT NOT NULL,
    txn      BIGINT NOT NULL,
    postings TEXT NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;
CREATE INDEX transaction_keys_stored ON transaction_keys (load_id, txn);

-- Sources whose transactions are all in `transaction_keys`. A source's index is built
-- by the first load whose keys may meet earlier ones of it, and kept by every load
-- since.
CREATE TABLE indexed_sources (
    source TEXT PRIMARY KEY
);

-- Transactions replaced by a later version and no longer in the ledger, by their
-- segment's manifest load and number, with how many posting rows they still have
-- in storage. The rows stay until compaction drops them (and the entry with them);
-- every reader leaves them out.
CREATE TABLE replaced_transactions (
    load_id  BIGINT NOT NULL,
    txn      BIGINT NOT NULL,
    postings BIGINT NOT NULL,
    PRIMARY KEY (load_id, txn)
);

-- How many postings each rollup sums: a bucket is kept while it has some, whether its
-- sums were recomputed or changed by loads since. NULL for rollups written before.
ALTER TABLE month_rollups ADD COLUMN postings BIGINT;
