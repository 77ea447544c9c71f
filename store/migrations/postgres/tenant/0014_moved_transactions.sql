-- Compaction moves a small segment's block of transaction numbers whole into the
-- committing load. The key index keeps the place each transaction was indexed at, and
-- a lookup follows these moves to where it is now: compaction rewrites no index entry,
-- and the index needs no second B-tree by place. A transaction moved again is found
-- by following the moves in turn. Only moves of indexed sources are noted.
CREATE TABLE moved_transactions (
    from_load BIGINT NOT NULL,
    first_txn BIGINT NOT NULL,
    last_txn  BIGINT NOT NULL,
    to_load   BIGINT NOT NULL,
    shift     BIGINT NOT NULL,
    PRIMARY KEY (from_load, first_txn),
    -- Forward only, so that following moves ends.
    CHECK (to_load > from_load OR (to_load = from_load AND shift > 0))
);
DROP INDEX transaction_keys_stored;
-- With no index on what a replacement changes (place and postings), the new version of
-- an entry can stay on its page (a heap-only update, writing no index) while the page
-- has room.
ALTER TABLE transaction_keys SET (fillfactor = 70);

-- The stamp of the last transaction that wrote the key index, also kept in
-- `ledger_meta` (`key_index_stamp`). Here both commit together; the table exists so
-- that both backends run one check (SQLite keeps the index in a file of its own).
CREATE TABLE index_state (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    stamp BIGINT NOT NULL
);
