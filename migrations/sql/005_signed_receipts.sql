-- Signed receipts. jsonb does not keep a document's bytes (it reorders keys
-- and drops whitespace), so a signature over a receipt cannot be checked
-- against the receipt column: receipt_bytes keeps the exact bytes lethe
-- wrote into receipt, and signature is the Ed25519 signature over them, made
-- with requests.signing_key_file. Both are NULL for requests completed before
-- this migration; signature is NULL when no signing key was configured.
ALTER TABLE lethe.request
    ADD COLUMN receipt_bytes bytea,
    ADD COLUMN signature     bytea,
    ADD CHECK (signature IS NULL OR receipt_bytes IS NOT NULL),
    ADD CHECK (receipt_bytes IS NULL OR receipt IS NOT NULL);
