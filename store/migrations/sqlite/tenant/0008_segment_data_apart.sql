-- A segment's encoded postings move to a table of their own. A load claims its
-- segments (sets their source and load) at commit, and SQLite rewrites a whole row,
-- blob and all, on any update: with the blobs apart, claiming a million postings
-- rewrites a few small rows instead of every byte the load wrote.
CREATE TABLE segment_data (
    segment_id INTEGER PRIMARY KEY,
    data       BLOB NOT NULL
);
INSERT INTO segment_data (segment_id, data) SELECT id, data FROM ledger_segments;
ALTER TABLE ledger_segments DROP COLUMN data;
