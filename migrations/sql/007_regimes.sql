-- Deletion-request regimes (requests.regimes). A request keeps the name of
-- the regime it was received under, its acknowledge-by date (NULL when the
-- regime has none), and, once its deadline was moved by the regime's
-- extension, when, by whom and why. deadline is then the extended one; the
-- deadline before it is in the request_extended audit entry.
--
-- Requests received before this migration had lethe's only deadline, 45
-- days: CCPA's, which the column's default gives them (and any row written
-- without a regime, as lethe before this migration wrote them). They get
-- no acknowledge-by date, since none was promised when they arrived.
ALTER TABLE lethe.request
    ADD COLUMN regime           text NOT NULL DEFAULT 'ccpa' CHECK (btrim(regime) <> ''),
    ADD COLUMN acknowledge_by   timestamptz,
    ADD COLUMN extended_at      timestamptz,
    ADD COLUMN extended_by      text CHECK (btrim(extended_by) <> ''),
    ADD COLUMN extension_reason text CHECK (btrim(extension_reason) <> ''),
    ADD CHECK ((extended_at IS NULL) = (extended_by IS NULL)),
    ADD CHECK ((extended_at IS NULL) = (extension_reason IS NULL));

-- status lists the open requests still to acknowledge, oldest date first.
CREATE INDEX request_acknowledge_idx ON lethe.request (acknowledge_by)
    WHERE state IN ('received', 'processing', 'blocked_by_hold') AND acknowledge_by IS NOT NULL;
