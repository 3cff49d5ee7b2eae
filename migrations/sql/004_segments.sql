-- The archive becomes immutable segments, one per batch, each subject's part
-- encrypted to a key of its own. The one-object-per-subject manifest goes:
-- there are no deployments to migrate.

DROP TABLE lethe.manifest;

-- segment: one object in the bucket, the concatenation of a batch's parts.
-- It is recorded before it is put; a segment that never commits holds only
-- parts whose keys were never stored, and nobody can read them.
CREATE TABLE lethe.segment (
    id           bigserial   PRIMARY KEY,
    name         text        NOT NULL UNIQUE,
    batch_id     bigint      REFERENCES lethe.batch (id),
    state        text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'committed', 'abandoned')),
    size         bigint      NOT NULL,
    sha256       text        NOT NULL,
    version_id   text,
    lock_mode    text        NOT NULL CHECK (lock_mode IN ('governance', 'compliance', 'none')),
    retain_until timestamptz,
    -- the S3 Object Lock legal hold as lethe last set it
    legal_hold   boolean     NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    committed_at timestamptz,
    CHECK ((state = 'committed') = (version_id IS NOT NULL AND committed_at IS NOT NULL))
);
CREATE INDEX segment_uncommitted_idx ON lethe.segment (created_at) WHERE state <> 'committed';
CREATE INDEX segment_batch_idx ON lethe.segment (batch_id);

-- manifest: every archival of a subject. A subject has at most one archived
-- entry; an older one is superseded, and keeps its key only while a hold
-- covers the subject. Erasure and expiry destroy the key (wrapped_key NULL):
-- the part stays in its segment, unreadable.
CREATE TABLE lethe.manifest (
    id             bigserial   PRIMARY KEY,
    subject_hmac   text        NOT NULL,
    state          text        NOT NULL CHECK (state IN ('archived', 'superseded', 'erased', 'expired')),
    policy         text        NOT NULL,
    archived_at    timestamptz NOT NULL,
    retain_until   timestamptz,
    segment_id     bigint      NOT NULL REFERENCES lethe.segment (id),
    part_offset    bigint      NOT NULL CHECK (part_offset >= 0),
    part_length    bigint      NOT NULL CHECK (part_length > 0),
    part_sha256    text        NOT NULL,
    -- the subject's age identity, encrypted to the master recipients; only
    -- here, never in the bucket
    wrapped_key    bytea,
    -- which master recipients wrapped_key is encrypted to (lethe keys rewrap)
    wrapped_to     text,
    run_id         bigint,
    batch_id       bigint,
    destroyed_at   timestamptz,
    -- why the key was destroyed: a request id, expiry, superseded, a replay
    destroyed_by   text,
    CHECK (state <> 'archived' OR wrapped_key IS NOT NULL),
    CHECK (state NOT IN ('erased', 'expired') OR wrapped_key IS NULL),
    CHECK ((wrapped_key IS NULL) = (destroyed_at IS NOT NULL))
);
CREATE UNIQUE INDEX manifest_live_idx ON lethe.manifest (subject_hmac) WHERE state = 'archived';
CREATE INDEX manifest_subject_idx ON lethe.manifest (subject_hmac, id);
CREATE INDEX manifest_segment_idx ON lethe.manifest (segment_id);
CREATE INDEX manifest_expiry_idx ON lethe.manifest (retain_until) WHERE state = 'archived' AND retain_until IS NOT NULL;
CREATE INDEX manifest_keys_idx ON lethe.manifest (id) WHERE wrapped_key IS NOT NULL;

-- A work item lives from the claim to the commit (or release): nothing is
-- left to prune after a commit.
ALTER TABLE lethe.work_item DROP COLUMN state, DROP COLUMN puts;

-- A request now erases in one transaction: nothing to carry between steps.
ALTER TABLE lethe.request DROP COLUMN rows_deleted, DROP COLUMN versions_found;

-- A request's job erases other waiting requests with its own, the longest
-- waiting first.
CREATE INDEX request_waiting_idx ON lethe.request (id) WHERE state IN ('received', 'processing');
