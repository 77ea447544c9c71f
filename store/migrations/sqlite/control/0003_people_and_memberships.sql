-- One person (an email and one password) may belong to several tenants, with a role
-- in each. Every user becomes a person and a membership with the user's id, so
-- membership ids (the API's user ids), invitations and sessions carry over.
CREATE TABLE people (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    created_at    TEXT NOT NULL
);

CREATE TABLE memberships (
    id          TEXT PRIMARY KEY,
    person_id   TEXT NOT NULL REFERENCES people(id),
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    role        TEXT NOT NULL,
    -- invited until the invitation is accepted, then active
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    accepted_at TEXT,
    UNIQUE (person_id, tenant_id)
);
CREATE INDEX memberships_tenant ON memberships(tenant_id);

INSERT INTO people (id, email, password_hash, created_at)
    SELECT id, email, password_hash, created_at FROM users;
INSERT INTO memberships (id, person_id, tenant_id, role, status, created_at, accepted_at)
    SELECT id, id, tenant_id, role, status, created_at, accepted_at FROM users;

-- Single-use, expiring; only a hash of the token is kept.
CREATE TABLE membership_invitations (
    token_hash    TEXT PRIMARY KEY,
    membership_id TEXT NOT NULL REFERENCES memberships(id),
    expires_at    TEXT NOT NULL,
    used_at       TEXT
);
INSERT INTO membership_invitations (token_hash, membership_id, expires_at, used_at)
    SELECT token_hash, user_id, expires_at, used_at FROM invitations;

-- A session belongs to a person and acts in one of their memberships at a time.
CREATE TABLE person_sessions (
    token_hash    TEXT PRIMARY KEY,
    person_id     TEXT NOT NULL REFERENCES people(id),
    membership_id TEXT NOT NULL REFERENCES memberships(id),
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL
);
INSERT INTO person_sessions (token_hash, person_id, membership_id, created_at, expires_at)
    SELECT token_hash, user_id, user_id, created_at, expires_at FROM sessions;

DROP TABLE sessions;
DROP TABLE invitations;
DROP TABLE users;
ALTER TABLE membership_invitations RENAME TO invitations;
ALTER TABLE person_sessions RENAME TO sessions;
CREATE INDEX invitations_membership ON invitations(membership_id);
CREATE INDEX sessions_membership ON sessions(membership_id);

-- Failed logins by address and client (client '*': the address over all clients),
-- kept for addresses with no account too, so answers do not tell which exist.
-- Times are milliseconds since the epoch. The failed-login counts of users are not
-- carried over: throttling starts afresh.
CREATE TABLE login_throttle (
    email           TEXT NOT NULL,
    client          TEXT NOT NULL,
    failures        INTEGER NOT NULL,
    blocked_until   INTEGER NOT NULL,
    last_attempt_at INTEGER NOT NULL,
    PRIMARY KEY (email, client)
);
CREATE INDEX login_throttle_age ON login_throttle(last_attempt_at);
