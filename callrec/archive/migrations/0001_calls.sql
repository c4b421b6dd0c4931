-- Calls and their recordings (privacy statement §6: conversation, caller number,
-- time of the call, service number, agent name).
-- Runs as the owner role; the service connects as callrec_app (created with the cluster).

CREATE TABLE calls (
    id                uuid PRIMARY KEY,
    caller_number     text NOT NULL DEFAULT '',  -- verbatim from caller ID, may be hostile
    caller_name       text NOT NULL DEFAULT '',
    service_number    text NOT NULL,
    service_name      text,
    language          text,
    agent_id          text,
    agent_name        text,
    agent_endpoint    text,
    started_at        timestamptz NOT NULL,
    notice_started_at timestamptz,
    answered_at       timestamptz,
    ended_at          timestamptz,
    end_reason        text CHECK (end_reason IN (
                          'completed', 'no_agent', 'abandoned', 'unknown_service',
                          'closed', 'failed', 'interrupted')),
    abandoned_phase   text,
    notice_prompt     text,     -- exact audio version of the notice played
    notice_language   text,
    notice_completed  boolean NOT NULL DEFAULT false,
    -- Asterisk-side names, kept so that a restarted service can finish the call.
    caller_channel_id text,
    agent_channel_id  text,
    bridge_id         text,
    recording_name    text UNIQUE,
    state             text NOT NULL DEFAULT 'new',
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX calls_caller_number_idx ON calls (caller_number, started_at);
CREATE INDEX calls_started_at_idx ON calls (started_at);
CREATE INDEX calls_ended_at_idx ON calls (ended_at);
CREATE INDEX calls_service_idx ON calls (service_number, started_at);
CREATE INDEX calls_agent_idx ON calls (agent_name, started_at);
CREATE INDEX calls_open_idx ON calls (started_at) WHERE ended_at IS NULL;

CREATE TABLE recordings (
    call_id     uuid PRIMARY KEY REFERENCES calls (id) ON DELETE CASCADE,
    path        text NOT NULL UNIQUE,  -- relative to the archive root
    sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    bytes       bigint NOT NULL CHECK (bytes >= 0),
    duration_ms integer NOT NULL CHECK (duration_ms >= 0),
    format      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE, DELETE ON calls, recordings TO callrec_app;
