-- What lethe sweep --wait reports of a failing batch: which attempt failed
-- (attempts counts the one in progress too), and how many attempts in a
-- row failed the same way, so that it stops waiting on a batch that
-- cannot succeed. An outage (the object store or the database unreachable)
-- does not count as the same failure: retrying is what ends it.
ALTER TABLE lethe.batch
    ADD COLUMN failed_attempt int,
    ADD COLUMN same_failures int NOT NULL DEFAULT 0,
    ADD COLUMN last_cause text;
