-- Read models of users, establishments, memberships and invitations (projector `identity`),
-- and login sessions (plain state: a session is not a domain fact worth replaying).

CREATE TABLE rm_users (
    id             text        PRIMARY KEY,
    email          text        NOT NULL UNIQUE,
    display_name   text        NOT NULL,
    password_hash  text,
    platform_admin boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

CREATE TABLE rm_establishments (
    id         text        PRIMARY KEY,
    name       text        NOT NULL,
    timezone   text        NOT NULL,
    locale     text        NOT NULL,
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE rm_memberships (
    establishment_id text        NOT NULL,
    user_id          text        NOT NULL,
    role             text        NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (establishment_id, user_id)
);
CREATE INDEX rm_memberships_by_user ON rm_memberships (user_id);

CREATE TABLE rm_invitations (
    id               text        PRIMARY KEY,
    establishment_id text        NOT NULL,
    email            text        NOT NULL,
    role             text        NOT NULL,
    status           text        NOT NULL,
    invited_by       text        NOT NULL,
    expires_at       timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    accepted_by      text,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX rm_invitations_by_establishment ON rm_invitations (establishment_id, created_at);

CREATE TABLE sessions (
    id         text        PRIMARY KEY,
    user_id    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX sessions_by_user ON sessions (user_id);
