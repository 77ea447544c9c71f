-- Facts about how the ledger was built; `timezone` is the one its dates are in, so a
-- change of the tenant's timezone is finished even after a crash midway.
CREATE TABLE ledger_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
