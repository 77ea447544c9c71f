-- Counts changes to what a tenant's reports say, across every daemon sharing the
-- store: each daemon adds its own changes once a second and reads everyone's, so
-- its read cache follows changes made elsewhere without re-reading every report.
ALTER TABLE tenants ADD COLUMN data_version BIGINT NOT NULL DEFAULT 0;
