-- A tenant's data key, which seals its connectors' credentials, wrapped (AES-256-GCM)
-- by the master key named by its id. Rotating the master key rewrites `wrapped`.
CREATE TABLE tenant_data_keys (
    tenant_id     TEXT PRIMARY KEY REFERENCES tenants(id),
    master_key_id TEXT NOT NULL,
    wrapped       TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    rotated_at    TEXT
);

-- A customer database a tenant's data is synced from. `spec` is the definition as
-- JSON without the password; `secret` is the password sealed with the tenant's data
-- key (the tenant and connector ids as associated data).
CREATE TABLE connectors (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    spec         TEXT NOT NULL,
    secret       TEXT NOT NULL,
    -- Set while paused, by a person or after too many failed runs in a row.
    paused_at    TEXT,
    pause_reason TEXT,
    failures     BIGINT NOT NULL DEFAULT 0,
    -- Which daemon runs the connector now, until when (ms since the epoch).
    lease_holder TEXT,
    lease_until  BIGINT,
    -- The last scheduled tick (seconds since the epoch) a daemon claimed: each tick
    -- runs once, however many daemons fire it.
    last_tick    BIGINT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- Every run of a connector's stream, kept after the connector is removed.
CREATE TABLE sync_runs (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    connector_id  TEXT NOT NULL,
    connector     TEXT NOT NULL,
    stream        TEXT NOT NULL,
    -- `schedule` or `manual`
    trigger_kind  TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    ended_at      TEXT,
    -- `running`, `succeeded` or `failed`
    status        TEXT NOT NULL,
    rows_read     BIGINT NOT NULL DEFAULT 0,
    -- Size of the rows read, as text columns in memory.
    bytes_read    BIGINT NOT NULL DEFAULT 0,
    rows_written  BIGINT NOT NULL DEFAULT 0,
    rows_rejected BIGINT NOT NULL DEFAULT 0,
    -- Transactions removed because the source no longer has them (full refresh).
    rows_removed  BIGINT NOT NULL DEFAULT 0,
    -- Sum of the absolute amounts committed, in ten-thousandths.
    control_sum   BIGINT NOT NULL DEFAULT 0,
    cursor_before TEXT,
    cursor_after  TEXT,
    error         TEXT
);
CREATE INDEX sync_runs_connector ON sync_runs(tenant_id, connector, id);
