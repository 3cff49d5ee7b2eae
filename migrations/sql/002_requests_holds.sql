-- Deletion requests, legal holds, hold syncs and suppression.

-- request: one deletion request per ticket. subject_key is kept only while
-- the request is open (received, processing, blocked_by_hold); it is erased
-- when the request ends. The receipt holds no personal data.
CREATE TABLE lethe.request (
    id             bigserial   PRIMARY KEY,
    ticket         text        NOT NULL UNIQUE CHECK (btrim(ticket) <> ''),
    subject_hmac   text        NOT NULL,
    subject_key    text,
    requested_by   text        NOT NULL CHECK (btrim(requested_by) <> ''),
    force          boolean     NOT NULL DEFAULT false,
    state          text        NOT NULL DEFAULT 'received'
                               CHECK (state IN ('received', 'processing', 'blocked_by_hold', 'completed', 'rejected', 'failed')),
    reason         text,
    received_at    timestamptz NOT NULL DEFAULT now(),
    deadline       timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    completed_at   timestamptz,
    -- what processing has done so far, so that a retry after a crash can
    -- write a whole receipt
    rows_deleted   jsonb,
    versions_found jsonb,
    receipt        jsonb,
    CHECK ((state IN ('received', 'processing', 'blocked_by_hold')) = (subject_key IS NOT NULL))
);
CREATE INDEX request_open_subject_idx ON lethe.request (subject_hmac)
    WHERE state IN ('received', 'processing', 'blocked_by_hold');
CREATE INDEX request_state_idx ON lethe.request (state, deadline);

-- hold: a legal hold of one subject for one matter. subject_key is kept
-- while the hold is active (the subject is preserved anyway) and erased on
-- release.
CREATE TABLE lethe.hold (
    id           bigserial   PRIMARY KEY,
    matter       text        NOT NULL CHECK (btrim(matter) <> ''),
    subject_hmac text        NOT NULL,
    subject_key  text,
    reason       text        NOT NULL CHECK (btrim(reason) <> ''),
    placed_by    text        NOT NULL CHECK (btrim(placed_by) <> ''),
    placed_at    timestamptz NOT NULL DEFAULT now(),
    released_by  text,
    released_at  timestamptz,
    CHECK ((released_at IS NULL) = (subject_key IS NOT NULL))
);
CREATE UNIQUE INDEX hold_active_idx ON lethe.hold (matter, subject_hmac) WHERE released_at IS NULL;
CREATE INDEX hold_active_subject_idx ON lethe.hold (subject_hmac) WHERE released_at IS NULL;

-- hold_sync: the S3 legal-hold state a subject's object should have, until a
-- job has made it so. generation orders changes: a job only marks done the
-- generation it applied.
CREATE TABLE lethe.hold_sync (
    subject_hmac text        PRIMARY KEY,
    held         boolean     NOT NULL,
    generation   bigint      NOT NULL DEFAULT 1,
    synced       bigint      NOT NULL DEFAULT 0,
    requested_at timestamptz NOT NULL DEFAULT now(),
    synced_at    timestamptz,
    last_error   text
);
CREATE INDEX hold_sync_pending_idx ON lethe.hold_sync (requested_at) WHERE synced < generation;

-- suppression: subjects erased on request. If one reappears in the hot
-- tables, the next sweep erases it again instead of archiving it.
CREATE TABLE lethe.suppression (
    subject_hmac text        PRIMARY KEY,
    request_id   bigint      NOT NULL REFERENCES lethe.request (id),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- batch actions gain erase (a suppressed subject found again) and expire.
ALTER TABLE lethe.batch DROP CONSTRAINT batch_action_check;
ALTER TABLE lethe.batch ADD CONSTRAINT batch_action_check CHECK (action IN ('archive', 'delete', 'erase'));
ALTER TABLE lethe.batch ADD COLUMN held integer NOT NULL DEFAULT 0;
