-- Each segment's format version (docs/segments.md). Segments written before versions
-- were kept are format 1; a reader refuses a segment newer than it knows.
ALTER TABLE ledger_segments ADD COLUMN format BIGINT NOT NULL DEFAULT 1;
-- A segment compacted from several loads' postings: the first of those loads (its
-- load_id is the last, and each posting keeps its own). NULL for a segment of one
-- load.
ALTER TABLE ledger_segments ADD COLUMN first_load BIGINT;
-- Compaction and the ledger's readers look segments up by source and month.
CREATE INDEX ledger_segments_months ON ledger_segments (first_month, last_month);
