-- Organisations: the tenancy unit. `name_key` is the normalised name that
-- uniqueness is decided on (case-insensitive), `name` what the admin typed.
CREATE TABLE organisations (
    id             uuid        PRIMARY KEY,
    name           text        NOT NULL,
    name_key       text        NOT NULL UNIQUE,
    roles          jsonb       NOT NULL,
    created_at     timestamptz NOT NULL,
    last_modified  timestamptz NOT NULL,
    deactivated_at timestamptz
);
CREATE INDEX organisations_created_at ON organisations (created_at);

-- Users and technical users. A user has a password hash, a technical user a
-- digest of its client secret; never the secret itself.
CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    username      text        NOT NULL,
    username_key  text        NOT NULL UNIQUE,
    kind          text        NOT NULL CHECK (kind IN ('USER', 'TECHNICAL')),
    password_hash text,
    secret_digest text,
    system_roles  jsonb       NOT NULL,
    created_at    timestamptz NOT NULL,
    last_modified timestamptz NOT NULL,
    disabled_at   timestamptz
);

CREATE TABLE memberships (
    organisation_id uuid        NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (organisation_id, user_id)
);
CREATE INDEX memberships_user_id ON memberships (user_id);

-- Refresh tokens: only a SHA-256 digest is stored. One family per login;
-- `consumed_at` marks a rotated token, `revoked_at` a killed one.
CREATE TABLE refresh_tokens (
    id                uuid        PRIMARY KEY,
    digest            text        NOT NULL UNIQUE,
    family_id         uuid        NOT NULL,
    user_id           uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    organisation_id   uuid        REFERENCES organisations (id) ON DELETE CASCADE,
    issued_at         timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    family_expires_at timestamptz NOT NULL,
    consumed_at       timestamptz,
    revoked_at        timestamptz
);
CREATE INDEX refresh_tokens_family_id ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_id ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_organisation_id ON refresh_tokens (organisation_id);

-- The audit log outlives what it describes: no foreign keys on purpose.
CREATE TABLE audit_events (
    id              uuid        PRIMARY KEY,
    created_at      timestamptz NOT NULL,
    action          text        NOT NULL,
    outcome         text        NOT NULL,
    subject         text,
    actor           text,
    organisation_id uuid,
    target_id       text,
    request_id      text,
    source_ip       text,
    reason          text
);
CREATE INDEX audit_events_created_at ON audit_events (created_at);
CREATE INDEX audit_events_organisation_id ON audit_events (organisation_id);
CREATE INDEX audit_events_subject ON audit_events (subject);
