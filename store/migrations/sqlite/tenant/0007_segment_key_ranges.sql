-- Each segment's smallest and largest key (byte order), so a load looks for the
-- transactions it replaces only in segments whose range overlaps its own keys.
-- NULL for segments written before: they are always searched.
ALTER TABLE ledger_segments ADD COLUMN first_key TEXT;
ALTER TABLE ledger_segments ADD COLUMN last_key TEXT;
