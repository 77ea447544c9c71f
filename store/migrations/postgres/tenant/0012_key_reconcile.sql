-- When an incremental stream's keys were last read whole and the transactions the
-- source no longer has were removed; NULL until its first reconcile.
ALTER TABLE sync_cursors ADD COLUMN reconciled_at TEXT;
