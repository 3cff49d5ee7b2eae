-- lethe's own tables. River's tables live in the same schema and are created
-- by rivermigrate before this runs.

-- run: one row per sweep.
CREATE TABLE lethe.run (
    id          bigserial PRIMARY KEY,
    trigger     text        NOT NULL CHECK (trigger IN ('schedule', 'cli')),
    job_id      bigint      UNIQUE,
    state       text        NOT NULL DEFAULT 'selecting'
                            CHECK (state IN ('selecting', 'working', 'done', 'failed')),
    started_at  timestamptz NOT NULL DEFAULT now(),
    selected_at timestamptz,
    finished_at timestamptz,
    recovered   integer     NOT NULL DEFAULT 0,
    error       text
);

-- batch: the subjects one archive-batch job moves; counts are filled in as it
-- commits.
CREATE TABLE lethe.batch (
    id          bigserial PRIMARY KEY,
    run_id      bigint      NOT NULL REFERENCES lethe.run (id),
    policy      text        NOT NULL,
    action      text        NOT NULL CHECK (action IN ('archive', 'delete')),
    state       text        NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'done', 'failed')),
    job_id      bigint,
    subjects    integer     NOT NULL,
    archived    integer     NOT NULL DEFAULT 0,
    destroyed   integer     NOT NULL DEFAULT 0,
    skipped     integer     NOT NULL DEFAULT 0,
    rows_moved  bigint      NOT NULL DEFAULT 0,
    bytes       bigint      NOT NULL DEFAULT 0,
    attempts    integer     NOT NULL DEFAULT 0,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX batch_run_id_idx ON lethe.batch (run_id);

-- work_item: a subject claimed by a sweep and not yet settled. It exists from
-- the claim until the subject is archived (and its other object versions are
-- pruned), deleted, or found no longer due. While it exists, the subject's
-- object may hold versions the manifest does not name; the row is how a later
-- run finds and removes them. It holds the subject's key only for that time.
CREATE TABLE lethe.work_item (
    subject_hmac text        PRIMARY KEY,
    subject_key  text        NOT NULL,
    batch_id     bigint      NOT NULL REFERENCES lethe.batch (id),
    policy       text        NOT NULL,
    state        text        NOT NULL DEFAULT 'claimed' CHECK (state IN ('claimed', 'committed')),
    puts         integer     NOT NULL DEFAULT 0,
    claimed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX work_item_batch_id_idx ON lethe.work_item (batch_id);

-- manifest: the archived copy that counts, one per subject.
CREATE TABLE lethe.manifest (
    subject_hmac text        PRIMARY KEY,
    object_key   text        NOT NULL,
    version_id   text        NOT NULL,
    sha256       text        NOT NULL,
    size         bigint      NOT NULL,
    policy       text        NOT NULL,
    archived_at  timestamptz NOT NULL,
    run_id       bigint
);
CREATE INDEX manifest_policy_archived_at_idx ON lethe.manifest (policy, archived_at);

-- audit_log: append-only, hash-chained. detail is JSON text, kept as the exact
-- bytes that were hashed.
CREATE TABLE lethe.audit_log (
    seq          bigint      PRIMARY KEY,
    at           timestamptz NOT NULL,
    kind         text        NOT NULL,
    actor        text        NOT NULL,
    subject_hmac text,
    detail       text        NOT NULL CHECK (detail::jsonb IS NOT NULL),
    prev_hash    bytea       NOT NULL,
    hash         bytea       NOT NULL
);
CREATE INDEX audit_log_subject_hmac_idx ON lethe.audit_log (subject_hmac) WHERE subject_hmac IS NOT NULL;

-- audit_head: the chain's last link, locked by every append so that entries
-- are chained in commit order.
CREATE TABLE lethe.audit_head (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq  bigint  NOT NULL,
    hash bytea   NOT NULL
);
INSERT INTO lethe.audit_head (id, seq, hash) VALUES (true, 0, decode(repeat('00', 32), 'hex'));

CREATE FUNCTION lethe.audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'lethe.audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON lethe.audit_log
    FOR EACH ROW EXECUTE FUNCTION lethe.audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON lethe.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION lethe.audit_log_append_only();
