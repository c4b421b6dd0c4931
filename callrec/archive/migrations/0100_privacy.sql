-- Privacy operations (privacy statement §8-§11): personal accounts, a tamper-evident audit
-- log, legal holds, access and erasure requests, the disclosure register and the purge queue.
-- Runs as the owner role. callrec_app gets only the privileges the service layer uses.

-- Accounts: one per named person (§10). Never deleted, only disabled, so that audit entries
-- keep naming a real account.
CREATE TABLE users (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username            text NOT NULL UNIQUE CHECK (username ~ '^[a-z][a-z0-9._-]{1,31}$'),
    full_name           text NOT NULL DEFAULT '',
    password_hash       text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    roles               text[] NOT NULL CHECK (
                            cardinality(roles) > 0
                            AND roles <@ ARRAY['admin', 'reviewer', 'privacy', 'processor']),
    can_listen          boolean NOT NULL DEFAULT false,  -- processors only listen if granted
    expires_at          timestamptz,
    disabled            boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    -- a subcontractor's account always ends (§8)
    CHECK (NOT ('processor' = ANY (roles)) OR expires_at IS NOT NULL)
);

-- Failed logins inside the lockout window; keyed by the name typed, known or not.
CREATE TABLE login_failures (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_username_idx ON login_failures (username, at);

-- Audit log: append-only hash chain. seq is gapless and chosen by the writer under a lock;
-- hash = sha256(canonical(entry including prev_hash)). audit_head is the anchor that makes a
-- deleted tail detectable; only the insert trigger (running as the owner) moves it.
CREATE TABLE audit_log (
    seq       bigint PRIMARY KEY CHECK (seq > 0),
    at        timestamptz NOT NULL,
    actor     text NOT NULL,
    action    text NOT NULL CHECK (action IN (
                  'search', 'listen', 'download', 'export', 'erase', 'erase_refused', 'purge',
                  'retention', 'hold', 'hold_release', 'disclose', 'login', 'login_failed',
                  'user_change', 'config_change', 'request', 'audit_view', 'audit_verify',
                  'denied')),
    target    text NOT NULL DEFAULT '',
    reason    text NOT NULL DEFAULT '',
    details   jsonb NOT NULL DEFAULT '{}',
    prev_hash text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash      text NOT NULL UNIQUE CHECK (hash ~ '^[0-9a-f]{64}$')
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, at);
CREATE INDEX audit_log_action_idx ON audit_log (action, at);
CREATE INDEX audit_log_target_idx ON audit_log (target, at);

CREATE TABLE audit_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq  bigint NOT NULL,
    hash text NOT NULL
);
INSERT INTO audit_head (one, seq, hash) VALUES (true, 0, repeat('0', 64));

CREATE FUNCTION audit_log_append_guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    head_seq  bigint;
    head_hash text;
BEGIN
    SELECT seq, hash INTO head_seq, head_hash FROM audit_head WHERE one FOR UPDATE;
    IF NEW.seq <> head_seq + 1 OR NEW.prev_hash <> head_hash THEN
        RAISE EXCEPTION 'audit entry % does not extend the chain head %', NEW.seq, head_seq
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE one;
    RETURN NEW;
END $$;

CREATE FUNCTION audit_log_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER audit_log_append BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_guard();
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_immutable();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_immutable();
REVOKE ALL ON FUNCTION audit_log_append_guard() FROM PUBLIC;

-- Legal holds on one call or on every call of a number (kept only as a keyed hash).
CREATE TABLE legal_holds (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id        uuid,
    number_hmac    text CHECK (number_hmac ~ '^[0-9a-f]{64}$'),
    reason         text NOT NULL CHECK (reason <> ''),
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    released_by    text,
    released_at    timestamptz,
    release_reason text,
    CHECK ((call_id IS NULL) <> (number_hmac IS NULL))
);
CREATE INDEX legal_holds_active_call_idx ON legal_holds (call_id) WHERE released_at IS NULL;
CREATE INDEX legal_holds_active_number_idx ON legal_holds (number_hmac)
    WHERE released_at IS NULL;

-- Defence in depth: a call under an active call hold cannot be deleted by anyone.
CREATE FUNCTION calls_hold_guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM legal_holds WHERE call_id = OLD.id AND released_at IS NULL) THEN
        RAISE EXCEPTION 'call % is under legal hold', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER calls_hold_guard BEFORE DELETE ON calls
    FOR EACH ROW EXECUTE FUNCTION calls_hold_guard();
REVOKE ALL ON FUNCTION calls_hold_guard() FROM PUBLIC;

-- Access and erasure requests (§11). The number is kept in clear only while an access case
-- is open (it is needed to find the calls); number_hmac stays for the record.
CREATE TABLE privacy_requests (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind                text NOT NULL CHECK (kind IN ('access', 'erasure')),
    number_hmac         text NOT NULL CHECK (number_hmac ~ '^[0-9a-f]{64}$'),
    number              text,
    received_on         date NOT NULL,
    due_on              date NOT NULL,
    verified_by         text NOT NULL,
    verification_method text NOT NULL CHECK (verification_method <> ''),
    opened_by           text NOT NULL,
    opened_at           timestamptz NOT NULL DEFAULT now(),
    status              text NOT NULL CHECK (status IN (
                            'open', 'answered', 'erasing', 'erased', 'partially_refused',
                            'refused')),
    closed_at           timestamptz,
    refusal_reason      text,
    result              jsonb NOT NULL DEFAULT '{}',
    CHECK (kind = 'access' OR number IS NULL)
);
CREATE INDEX privacy_requests_open_idx ON privacy_requests (due_on) WHERE closed_at IS NULL;

-- Disclosures to authorities (§8): who, why, what range, which checksums. Append-only.
CREATE TABLE disclosures (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id         uuid NOT NULL,  -- no foreign key: the register outlives the call
    from_ms         integer NOT NULL CHECK (from_ms >= 0),
    to_ms           integer NOT NULL,
    start_sample    bigint NOT NULL,
    end_sample      bigint NOT NULL,
    sample_rate     integer NOT NULL,
    recipient       text NOT NULL CHECK (recipient <> ''),
    legal_basis     text NOT NULL CHECK (legal_basis <> ''),
    approved_by     text NOT NULL,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    original_sha256 text NOT NULL CHECK (original_sha256 ~ '^[0-9a-f]{64}$'),
    clip_sha256     text NOT NULL CHECK (clip_sha256 ~ '^[0-9a-f]{64}$'),
    CHECK (to_ms > from_ms)
);

-- Calls being deleted (retention or erasure). A queued call is invisible to every reader; its
-- file is removed first and its rows last, so a crash leaves nothing half-deleted in view and
-- the next run finishes the queue.
CREATE TABLE purge_queue (
    call_id   uuid PRIMARY KEY REFERENCES calls (id) ON DELETE CASCADE,
    path      text,
    cause     text NOT NULL CHECK (cause IN ('retention', 'erasure')),
    case_id   bigint REFERENCES privacy_requests (id),
    queued_at timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE ON users TO callrec_app;
GRANT SELECT, INSERT, DELETE ON login_failures TO callrec_app;
GRANT SELECT, INSERT ON audit_log TO callrec_app;
GRANT SELECT ON audit_head TO callrec_app;
GRANT SELECT, INSERT ON legal_holds TO callrec_app;
GRANT UPDATE (released_by, released_at, release_reason) ON legal_holds TO callrec_app;
GRANT SELECT, INSERT ON privacy_requests TO callrec_app;
GRANT UPDATE (number, status, closed_at, refusal_reason, result) ON privacy_requests
    TO callrec_app;
GRANT SELECT, INSERT ON disclosures TO callrec_app;
GRANT SELECT, INSERT, DELETE ON purge_queue TO callrec_app;
