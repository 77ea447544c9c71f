-- What each load did to its source's transactions (see LoadCounts). Loads recorded
-- before these were counted keep NULL: unknown, not zero.
ALTER TABLE loads ADD COLUMN added INTEGER;
ALTER TABLE loads ADD COLUMN replaced INTEGER;
ALTER TABLE loads ADD COLUMN unchanged INTEGER;
ALTER TABLE loads ADD COLUMN removed INTEGER;
