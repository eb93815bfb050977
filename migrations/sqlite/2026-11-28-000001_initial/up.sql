-- SQLite twin of the PostgreSQL migration: the same tables, with text for
-- uuid, timestamptz (fixed-width RFC 3339, UTC) and jsonb (JSON text).
-- Organisations: the tenancy unit. `name_key` is the normalised name that
-- uniqueness is decided on (case-insensitive), `name` what the admin typed.
CREATE TABLE organisations (
    id             text        PRIMARY KEY,
    name           text        NOT NULL,
    name_key       text        NOT NULL UNIQUE,
    roles          text       NOT NULL,
    created_at     text NOT NULL,
    last_modified  text NOT NULL,
    deactivated_at text
);
CREATE INDEX organisations_created_at ON organisations (created_at);

-- Users and technical users. A user has a password hash, a technical user a
-- digest of its client secret; never the secret itself.
CREATE TABLE users (
    id            text        PRIMARY KEY,
    username      text        NOT NULL,
    username_key  text        NOT NULL UNIQUE,
    kind          text        NOT NULL CHECK (kind IN ('USER', 'TECHNICAL')),
    password_hash text,
    secret_digest text,
    system_roles  text       NOT NULL,
    created_at    text NOT NULL,
    last_modified text NOT NULL,
    disabled_at   text
);

CREATE TABLE memberships (
    organisation_id text        NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    user_id         text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at      text NOT NULL,
    PRIMARY KEY (organisation_id, user_id)
);
CREATE INDEX memberships_user_id ON memberships (user_id);

-- Refresh tokens: only a SHA-256 digest is stored. One family per login;
-- `consumed_at` marks a rotated token, `revoked_at` a killed one.
CREATE TABLE refresh_tokens (
    id                text        PRIMARY KEY,
    digest            text        NOT NULL UNIQUE,
    family_id         text        NOT NULL,
    user_id           text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    organisation_id   text        REFERENCES organisations (id) ON DELETE CASCADE,
    issued_at         text NOT NULL,
    expires_at        text NOT NULL,
    family_expires_at text NOT NULL,
    consumed_at       text,
    revoked_at        text
);
CREATE INDEX refresh_tokens_family_id ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_id ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_organisation_id ON refresh_tokens (organisation_id);

-- The audit log outlives what it describes: no foreign keys on purpose.
CREATE TABLE audit_events (
    id              text        PRIMARY KEY,
    created_at      text NOT NULL,
    action          text        NOT NULL,
    outcome         text        NOT NULL,
    subject         text,
    actor           text,
    organisation_id text,
    target_id       text,
    request_id      text,
    source_ip       text,
    reason          text
);
CREATE INDEX audit_events_created_at ON audit_events (created_at);
CREATE INDEX audit_events_organisation_id ON audit_events (organisation_id);
CREATE INDEX audit_events_subject ON audit_events (subject);
