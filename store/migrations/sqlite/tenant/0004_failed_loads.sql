-- Loads that were refused are recorded too (with nothing loaded), so an operator
-- sees that the last attempt failed and why.
ALTER TABLE loads ADD COLUMN status TEXT NOT NULL DEFAULT 'succeeded';
ALTER TABLE loads ADD COLUMN problem TEXT;
