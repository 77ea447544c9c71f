-- What each load did to its source's transactions (see LoadCounts). Loads recorded
-- before these were counted keep NULL: unknown, not zero.
ALTER TABLE loads ADD COLUMN added BIGINT;
ALTER TABLE loads ADD COLUMN replaced BIGINT;
ALTER TABLE loads ADD COLUMN unchanged BIGINT;
ALTER TABLE loads ADD COLUMN removed BIGINT;
