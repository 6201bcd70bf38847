-- Snapshot of the schema that sql/NNNN_*.sql migrations produce, for reading; a test checks
-- it against a migrated database. Update it together with every new migration.

CREATE TABLE developer (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    tier       TEXT NOT NULL CHECK (tier IN ('developer', 'pro')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Keys are stored as SHA-256 digests; the plaintext is shown once, at creation.
CREATE TABLE api_key (
    id           TEXT PRIMARY KEY,
    developer_id TEXT NOT NULL REFERENCES developer (id),
    name         TEXT,
    prefix       TEXT NOT NULL,
    key_hash     BYTEA NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at   TIMESTAMPTZ
);

CREATE INDEX api_key_developer_idx ON api_key (developer_id);

-- Append-only. request_id is unique so a replayed write can never meter a call twice.
CREATE TABLE usage_event (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id          TEXT NOT NULL UNIQUE,
    developer_id        TEXT NOT NULL REFERENCES developer (id),
    api_key_id          TEXT NOT NULL REFERENCES api_key (id),
    customer_ref        TEXT,
    model_requested     TEXT NOT NULL,
    model_resolved      TEXT NOT NULL,
    provider            TEXT NOT NULL,
    upstream_model      TEXT NOT NULL,
    stream              BOOLEAN NOT NULL,
    input_tokens        INTEGER NOT NULL CHECK (input_tokens >= 0),
    cached_input_tokens INTEGER NOT NULL CHECK (cached_input_tokens >= 0),
    output_tokens       INTEGER NOT NULL CHECK (output_tokens >= 0),
    reasoning_tokens    INTEGER NOT NULL CHECK (reasoning_tokens >= 0),
    usage_source        TEXT NOT NULL CHECK (usage_source IN ('upstream', 'counted', 'none')),
    cost_usd            NUMERIC(24, 12) NOT NULL CHECK (cost_usd >= 0),
    latency_ms          INTEGER NOT NULL CHECK (latency_ms >= 0),
    status              TEXT NOT NULL
        CHECK (status IN ('ok', 'upstream_error', 'client_aborted', 'timeout')),
    http_status         INTEGER NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX usage_event_developer_created_idx ON usage_event (developer_id, created_at);
CREATE INDEX usage_event_customer_created_idx ON usage_event (developer_id, customer_ref, created_at)
    WHERE customer_ref IS NOT NULL;
