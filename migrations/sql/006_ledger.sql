-- The audit chain's anchors in the bucket, and replays after a database
-- restore.

-- anchor: the anchors this database wrote. The bucket holds them; this is
-- for status.
CREATE TABLE lethe.anchor (
    seq        bigint      PRIMARY KEY,
    hash       bytea       NOT NULL,
    name       text        NOT NULL UNIQUE,
    version_id text        NOT NULL,
    erased     int         NOT NULL,
    expired    int         NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);

-- anchor_state: how anchoring fares, for status and metrics.
CREATE TABLE lethe.anchor_state (
    id            boolean     PRIMARY KEY DEFAULT true CHECK (id),
    last_error    text,
    failing_since timestamptz,
    failures      bigint      NOT NULL DEFAULT 0
);
INSERT INTO lethe.anchor_state DEFAULT VALUES;

-- ledger_replay: the newest anchor each replay reconciled, after a restore
-- left the database behind it. The worker checks its chain against the
-- newest anchor: the chain holds it, or a replay reconciled it.
CREATE TABLE lethe.ledger_replay (
    id           bigserial   PRIMARY KEY,
    anchor_seq   bigint      NOT NULL,
    anchor_hash  bytea       NOT NULL,
    anchor_name  text        NOT NULL,
    restored_seq bigint      NOT NULL,
    replayed_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (anchor_seq, anchor_hash)
);

-- A replay puts back on the suppression list subjects erased by requests
-- that the restored database no longer has.
ALTER TABLE lethe.suppression ALTER COLUMN request_id DROP NOT NULL;
