-- The job that works each request and each hold sync, so that a job lost
-- with its process can be told apart from one still queued.
ALTER TABLE lethe.request ADD COLUMN job_id bigint;
ALTER TABLE lethe.hold_sync ADD COLUMN job_id bigint;
