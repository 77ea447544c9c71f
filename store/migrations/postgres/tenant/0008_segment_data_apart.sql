-- A segment's encoded postings move to a table of their own, as on SQLite (where an
-- update rewrites a whole row): the manifest rows a load claims and lists stay small.
CREATE TABLE segment_data (
    segment_id BIGINT PRIMARY KEY,
    data       BYTEA NOT NULL
);
INSERT INTO segment_data (segment_id, data) SELECT id, data FROM ledger_segments;
ALTER TABLE ledger_segments DROP COLUMN data;
