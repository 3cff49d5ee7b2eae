-- Several kinds of subject, then: minimize policies, and subjects a foreign
-- key kept in place.
--
-- A request, a hold and a batch name the kind of subject they are about.
-- Everything written before kinds existed was about the only kind, which
-- subject: configures and lethe calls default. HMACs already carry the
-- subject table, so the kinds' subjects never share one.
ALTER TABLE lethe.request ADD COLUMN kind text NOT NULL DEFAULT 'default' CHECK (btrim(kind) <> '');
ALTER TABLE lethe.hold ADD COLUMN kind text NOT NULL DEFAULT 'default' CHECK (btrim(kind) <> '');
ALTER TABLE lethe.batch ADD COLUMN kind text NOT NULL DEFAULT 'default' CHECK (btrim(kind) <> '');

-- A minimise batch changes columns in place: minimized counts its subjects,
-- minimized_rows their rows.
ALTER TABLE lethe.batch DROP CONSTRAINT batch_action_check;
ALTER TABLE lethe.batch ADD CONSTRAINT batch_action_check CHECK (action IN ('archive', 'delete', 'erase', 'minimize'));
ALTER TABLE lethe.batch ADD COLUMN minimized integer NOT NULL DEFAULT 0, ADD COLUMN minimized_rows bigint NOT NULL DEFAULT 0;

-- A manifest entry is the subject's archived copy (part 'subject'; one live
-- one per subject), or the original values of columns that a then: minimize
-- policy with archive: true changed (part 'minimized'; as many as there were
-- minimisations). Erasing or expiring a subject destroys the keys of both.
ALTER TABLE lethe.manifest ADD COLUMN part text NOT NULL DEFAULT 'subject' CHECK (part IN ('subject', 'minimized'));
ALTER TABLE lethe.manifest ADD CHECK (part = 'subject' OR state <> 'superseded');
DROP INDEX lethe.manifest_live_idx;
CREATE UNIQUE INDEX manifest_live_idx ON lethe.manifest (subject_hmac) WHERE state = 'archived' AND part = 'subject';

-- blocked_subject: subjects whose delete a foreign key stopped at run time
-- (a table outside the graph still references their rows). They are left
-- in place and reported by lethe status until a later run removes them.
CREATE TABLE lethe.blocked_subject (
    subject_hmac    text        PRIMARY KEY,
    policy          text        NOT NULL,
    constraint_name text        NOT NULL,
    table_name      text        NOT NULL,
    first_at        timestamptz NOT NULL DEFAULT now(),
    last_at         timestamptz NOT NULL DEFAULT now(),
    times           int         NOT NULL DEFAULT 1
);
ALTER TABLE lethe.batch ADD COLUMN blocked int NOT NULL DEFAULT 0;
