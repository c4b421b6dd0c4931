-- Web console sessions (server-side, so that logout and expiry really end them) and the
-- per-session listening grants: a reviewer states a purpose once per call, the grant is
-- audited then, and the player's many Range requests for that call are served under it.
-- Only the SHA-256 of the session token is stored: a database read reveals no live session.

CREATE TABLE web_sessions (
    token_hash  text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    user_id     bigint NOT NULL REFERENCES users (id),
    username    text NOT NULL,
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL  -- absolute end, whatever the activity
);
CREATE INDEX web_sessions_user_idx ON web_sessions (user_id);
CREATE INDEX web_sessions_expires_idx ON web_sessions (expires_at);

CREATE TABLE web_listen_grants (
    token_hash  text NOT NULL REFERENCES web_sessions (token_hash) ON DELETE CASCADE,
    call_id     uuid NOT NULL,
    mode        text NOT NULL CHECK (mode IN ('listen', 'disclose')),
    purpose     text NOT NULL CHECK (purpose <> ''),
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (token_hash, call_id, mode)
);

-- Export and disclosure bundles waiting to be downloaded by the officer who made them.
CREATE TABLE web_bundles (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('access-export', 'disclosure')),
    ref         text NOT NULL,  -- case:<n> or disclosure:<n>
    file_name   text NOT NULL CHECK (file_name ~ '^[a-z0-9-]+\.zip$'),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$')
);

GRANT SELECT, INSERT, UPDATE, DELETE ON web_sessions, web_listen_grants, web_bundles
    TO callrec_app;
