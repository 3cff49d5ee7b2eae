-- Demo schema: a telecom carrier's customer tables, filled only with synthetic
-- data by Seed. {{schema}} is replaced by the quoted schema name.
--
-- The subject graph is subscribers -> accounts -> lines, and subscribers ->
-- addresses, identity_documents, credit_checks. Foreign keys have no ON DELETE
-- action: whoever removes a subscriber deletes the children first. Every
-- foreign-key column is indexed, and so are the retention clocks.

-- Serialises concurrent CreateSchema calls, whose IF NOT EXISTS checks would
-- otherwise race on the catalog. Held until this implicit transaction ends.
SELECT pg_advisory_xact_lock(7810693945215952239);

CREATE SCHEMA IF NOT EXISTS {{schema}};

CREATE TABLE IF NOT EXISTS {{schema}}.subscribers (
    id               bigint PRIMARY KEY,
    status           text NOT NULL CHECK (status IN ('active', 'former', 'prospect')),
    first_name       text NOT NULL,
    last_name        text NOT NULL,
    date_of_birth    date NOT NULL,
    ssn              text NOT NULL,
    email            text NOT NULL,
    phone            text NOT NULL,
    created_at       timestamptz NOT NULL,
    closed_at        timestamptz,
    marketing_opt_in boolean NOT NULL DEFAULT false,
    CONSTRAINT subscribers_closed_at_check CHECK ((status = 'former') = (closed_at IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS subscribers_status_closed_at_idx ON {{schema}}.subscribers (status, closed_at);
CREATE INDEX IF NOT EXISTS subscribers_status_created_at_idx ON {{schema}}.subscribers (status, created_at);

CREATE TABLE IF NOT EXISTS {{schema}}.accounts (
    id             bigint PRIMARY KEY,
    subscriber_id  bigint NOT NULL REFERENCES {{schema}}.subscribers (id),
    account_number text NOT NULL,
    plan           text NOT NULL,
    balance        numeric(12, 2) NOT NULL DEFAULT 0,
    opened_at      timestamptz NOT NULL,
    closed_at      timestamptz
);
CREATE INDEX IF NOT EXISTS accounts_subscriber_id_idx ON {{schema}}.accounts (subscriber_id);

CREATE TABLE IF NOT EXISTS {{schema}}.lines (
    id             bigint PRIMARY KEY,
    account_id     bigint NOT NULL REFERENCES {{schema}}.accounts (id),
    msisdn         text NOT NULL,
    imei           text NOT NULL,
    imsi           text NOT NULL,
    device         text NOT NULL,
    activated_at   timestamptz NOT NULL,
    deactivated_at timestamptz
);
CREATE INDEX IF NOT EXISTS lines_account_id_idx ON {{schema}}.lines (account_id);

CREATE TABLE IF NOT EXISTS {{schema}}.addresses (
    id            bigint PRIMARY KEY,
    subscriber_id bigint NOT NULL REFERENCES {{schema}}.subscribers (id),
    kind          text NOT NULL CHECK (kind IN ('billing', 'service')),
    line1         text NOT NULL,
    city          text NOT NULL,
    state         text NOT NULL,
    postal_code   text NOT NULL
);
CREATE INDEX IF NOT EXISTS addresses_subscriber_id_idx ON {{schema}}.addresses (subscriber_id);

CREATE TABLE IF NOT EXISTS {{schema}}.identity_documents (
    id            bigint PRIMARY KEY,
    subscriber_id bigint NOT NULL REFERENCES {{schema}}.subscribers (id),
    kind          text NOT NULL CHECK (kind IN ('drivers_license', 'passport', 'state_id')),
    number        text NOT NULL,
    issuing_state text NOT NULL,
    expires_on    date NOT NULL
);
CREATE INDEX IF NOT EXISTS identity_documents_subscriber_id_idx ON {{schema}}.identity_documents (subscriber_id);

CREATE TABLE IF NOT EXISTS {{schema}}.credit_checks (
    id            bigint PRIMARY KEY,
    subscriber_id bigint NOT NULL REFERENCES {{schema}}.subscribers (id),
    bureau        text NOT NULL,
    score         integer NOT NULL CHECK (score BETWEEN 300 AND 850),
    decision      text NOT NULL CHECK (decision IN ('approved', 'declined', 'review')),
    checked_at    timestamptz NOT NULL,
    report        jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS credit_checks_subscriber_id_idx ON {{schema}}.credit_checks (subscriber_id);
