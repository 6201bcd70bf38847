-- Snapshot of the schema that sql/NNNN_*.sql migrations produce, for reading; a test checks
-- it against a migrated database. Update it together with every new migration.

CREATE TABLE developer (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    tier       TEXT NOT NULL CHECK (tier IN ('developer', 'pro')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Pricing overrides: NULL markup_percent means the tier's default.
    markup_percent  NUMERIC(9, 6) CHECK (markup_percent >= 0),
    rate_multiplier NUMERIC(12, 6) NOT NULL DEFAULT 1 CHECK (rate_multiplier >= 0)
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

CREATE TABLE customer (
    seq                      BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                       TEXT PRIMARY KEY,
    developer_id             TEXT NOT NULL REFERENCES developer (id),
    external_id              TEXT CHECK (length(external_id) BETWEEN 1 AND 256),
    name                     TEXT,
    email                    TEXT,
    metadata                 JSONB NOT NULL DEFAULT '{}',
    monthly_budget_usd       NUMERIC(18, 6) CHECK (monthly_budget_usd >= 0),
    rpm_limit                INTEGER CHECK (rpm_limit > 0),
    tpm_limit                INTEGER CHECK (tpm_limit > 0),
    wallet_low_threshold_usd NUMERIC(18, 6) CHECK (wallet_low_threshold_usd >= 0),
    -- Created by the first call that named an unknown customer.
    stub                     BOOLEAN NOT NULL DEFAULT false,
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Soft delete: the ledger and usage stay; the external id is free again.
    deleted_at               TIMESTAMPTZ
);

CREATE UNIQUE INDEX customer_external_id_idx ON customer (developer_id, external_id)
WHERE deleted_at IS NULL AND external_id IS NOT NULL;
CREATE INDEX customer_developer_seq_idx ON customer (developer_id, seq) WHERE deleted_at IS NULL;

-- A wallet exists from its first top-up on. customer_id NULL: the developer's own wallet.
-- balance_usd is a cached sum of the wallet's transactions (a test recomputes it); held_usd
-- is what open holds have reserved and not yet settled.
CREATE TABLE wallet (
    id           TEXT PRIMARY KEY,
    developer_id TEXT NOT NULL REFERENCES developer (id),
    customer_id  TEXT REFERENCES customer (id),
    balance_usd  NUMERIC(18, 6) NOT NULL DEFAULT 0,
    held_usd     NUMERIC(18, 6) NOT NULL DEFAULT 0 CHECK (held_usd >= 0),
    -- Set when a wallet.low event was written; cleared when the balance is back above the
    -- threshold, so each downward crossing notifies once.
    low_notified BOOLEAN NOT NULL DEFAULT false,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX wallet_customer_idx ON wallet (customer_id) WHERE customer_id IS NOT NULL;
CREATE UNIQUE INDEX wallet_developer_idx ON wallet (developer_id) WHERE customer_id IS NULL;

-- Append-only: rows are inserted, never updated or deleted.
CREATE TABLE wallet_transaction (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                TEXT NOT NULL UNIQUE,
    wallet_id         TEXT NOT NULL REFERENCES wallet (id),
    type              TEXT NOT NULL CHECK (type IN ('topup', 'debit', 'adjust', 'refund')),
    amount_usd        NUMERIC(18, 6) NOT NULL,
    balance_after_usd NUMERIC(18, 6) NOT NULL,
    request_id        TEXT,
    description       TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (type <> 'topup' OR amount_usd > 0),
    CHECK (type <> 'debit' OR amount_usd < 0),
    CHECK (type <> 'refund' OR amount_usd > 0)
);

CREATE INDEX wallet_transaction_wallet_idx ON wallet_transaction (wallet_id, seq);
-- A call is debited at most once per wallet.
CREATE UNIQUE INDEX wallet_transaction_debit_idx ON wallet_transaction (wallet_id, request_id)
WHERE type = 'debit';

-- Refunds of one call are summed under the wallet lock before another is written (their
-- total never exceeds the call's debit): found by index, not by reading the whole ledger.
CREATE INDEX wallet_transaction_refund_idx ON wallet_transaction (wallet_id, request_id)
WHERE type = 'refund';

-- Spend against a monthly budget (calendar month, UTC), kept for every attributed call.
CREATE TABLE customer_budget_month (
    customer_id       TEXT NOT NULL REFERENCES customer (id),
    month             DATE NOT NULL,
    spent_usd         NUMERIC(18, 6) NOT NULL DEFAULT 0,
    held_usd          NUMERIC(18, 6) NOT NULL DEFAULT 0 CHECK (held_usd >= 0),
    exceeded_notified BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (customer_id, month)
);

-- Webhook outbox: written in the same transaction as what caused the event; delivery is the
-- worker's job.
CREATE TABLE webhook_event (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    developer_id TEXT NOT NULL REFERENCES developer (id),
    type         TEXT NOT NULL,
    data         JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX webhook_event_developer_idx ON webhook_event (developer_id, seq);

-- Every web process registers here and beats every few seconds; the settlement worker
-- treats the holds of a process whose heartbeat stopped as orphans.
CREATE TABLE gateway_process (
    id           TEXT PRIMARY KEY,
    pid          INTEGER NOT NULL,
    hostname     TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per call in flight, durable before the provider is called; settling deletes it.
CREATE TABLE billing_hold (
    request_id               TEXT PRIMARY KEY,
    process_id               TEXT NOT NULL,
    developer_id             TEXT NOT NULL REFERENCES developer (id),
    api_key_id               TEXT NOT NULL REFERENCES api_key (id),
    customer_id              TEXT REFERENCES customer (id),
    customer_ref             TEXT,
    model_requested          TEXT NOT NULL,
    model_resolved           TEXT NOT NULL,
    provider                 TEXT NOT NULL,
    upstream_model           TEXT NOT NULL,
    stream                   BOOLEAN NOT NULL,
    -- The call's worst case: what an orphaned hold is settled at.
    cost_usd                 NUMERIC(24, 12) NOT NULL CHECK (cost_usd >= 0),
    amount_usd               NUMERIC(18, 6) NOT NULL CHECK (amount_usd >= 0),
    budget_month             DATE,
    budget_held_usd          NUMERIC(18, 6) NOT NULL DEFAULT 0,
    wallet_id                TEXT REFERENCES wallet (id),
    wallet_held_usd          NUMERIC(18, 6) NOT NULL DEFAULT 0,
    developer_wallet_id      TEXT REFERENCES wallet (id),
    developer_wallet_held_usd NUMERIC(18, 6) NOT NULL DEFAULT 0,
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX billing_hold_process_idx ON billing_hold (process_id);

-- Usage reports are read from here: kept current by ringside_settle, in the same transaction
-- as the usage event. customer_id '' is usage no customer was named for.
CREATE TABLE usage_daily (
    developer_id        TEXT NOT NULL REFERENCES developer (id),
    day                 DATE NOT NULL,
    customer_id         TEXT NOT NULL,
    model               TEXT NOT NULL,
    requests            BIGINT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    reasoning_tokens    BIGINT NOT NULL,
    cost_usd            NUMERIC(30, 12) NOT NULL,
    billable_usd        NUMERIC(24, 6) NOT NULL,
    PRIMARY KEY (developer_id, day, customer_id, model)
);

CREATE INDEX usage_daily_customer_idx ON usage_daily (customer_id, day) WHERE customer_id <> '';

-- Two smaller aggregates of usage_daily, kept current by ringside_settle in the same
-- statement as it (0005): per (developer, day, model) for the developer's report by model or day and
-- for its totals, and per (developer, customer, day) for the report by customer (keyed in
-- customer order, so that report pages by customer without sorting). customer_id '' is usage
-- no customer was named for.
CREATE TABLE usage_daily_model (
    developer_id        TEXT NOT NULL REFERENCES developer (id),
    day                 DATE NOT NULL,
    model               TEXT NOT NULL,
    requests            BIGINT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    reasoning_tokens    BIGINT NOT NULL,
    cost_usd            NUMERIC(30, 12) NOT NULL,
    billable_usd        NUMERIC(24, 6) NOT NULL,
    PRIMARY KEY (developer_id, day, model)
);

CREATE TABLE usage_daily_customer (
    developer_id        TEXT NOT NULL REFERENCES developer (id),
    customer_id         TEXT NOT NULL,
    day                 DATE NOT NULL,
    requests            BIGINT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    reasoning_tokens    BIGINT NOT NULL,
    cost_usd            NUMERIC(30, 12) NOT NULL,
    billable_usd        NUMERIC(24, 6) NOT NULL,
    PRIMARY KEY (developer_id, customer_id, day)
);

-- Idempotency keys (Stripe's semantics), scoped per developer, kept 24 hours.
CREATE TABLE idempotency_key (
    developer_id     TEXT NOT NULL REFERENCES developer (id),
    key              TEXT NOT NULL,
    request_hash     BYTEA NOT NULL,
    request_id       TEXT NOT NULL,
    -- The process executing it while in flight; a key whose process died is not taken over
    -- (its call was settled at its hold): the settlement worker stores an error to replay.
    process_id       TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
    response_status  INTEGER,
    response_headers JSONB,
    response_body    BYTEA,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (developer_id, key)
);

CREATE INDEX idempotency_key_request_idx ON idempotency_key (request_id);

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
    usage_source        TEXT NOT NULL
        CHECK (usage_source IN ('upstream', 'counted', 'none', 'reserved')),
    cost_usd            NUMERIC(24, 12) NOT NULL CHECK (cost_usd >= 0),
    latency_ms          INTEGER NOT NULL CHECK (latency_ms >= 0),
    status              TEXT NOT NULL
        CHECK (status IN ('ok', 'upstream_error', 'client_aborted', 'timeout', 'interrupted',
                      'internal_error')),
    http_status         INTEGER NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    customer_id         TEXT REFERENCES customer (id),
    billable_usd        NUMERIC(18, 6) NOT NULL DEFAULT 0 CHECK (billable_usd >= 0)
);

CREATE INDEX usage_event_developer_created_idx ON usage_event (developer_id, created_at);
CREATE INDEX usage_event_customer_created_idx ON usage_event (developer_id, customer_ref, created_at)
    WHERE customer_ref IS NOT NULL;

-- The money functions (ringside_new_id, ringside_reserve, ringside_settle) are defined in
-- sql/0002_customers_billing.sql (ringside_settle as replaced by 0005_usage_rollups.sql,
-- ringside_reserve by 0007_reserve_lock_mode.sql).

CREATE TABLE webhook_endpoint (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id           TEXT PRIMARY KEY,
    developer_id TEXT NOT NULL REFERENCES developer (id),
    url          TEXT NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    -- Event types, or '*' for all of them.
    events       TEXT [] NOT NULL,
    enabled      BOOLEAN NOT NULL DEFAULT true,
    description  TEXT,
    -- Kept in clear: the worker signs with it (the database is the trust boundary).
    secret       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at   TIMESTAMPTZ
);

CREATE INDEX webhook_endpoint_developer_seq_idx ON webhook_endpoint (developer_id, seq)
WHERE deleted_at IS NULL;

-- next_attempt_at is also the lease: a claim moves it forward by the lease, so the claim of a
-- worker that died becomes due again; attempts is the fencing token of the current claim.
CREATE TABLE webhook_delivery (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id              TEXT PRIMARY KEY,
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoint (id),
    event_id        TEXT NOT NULL REFERENCES webhook_event (id),
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivering', 'succeeded', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Retries stop this long after retry_from (the event, or the last manual redelivery).
    retry_from      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_status     INTEGER,
    last_latency_ms INTEGER,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ,
    UNIQUE (event_id, endpoint_id)
);

CREATE INDEX webhook_delivery_due_idx ON webhook_delivery (next_attempt_at)
WHERE state IN ('pending', 'delivering');
CREATE INDEX webhook_delivery_endpoint_seq_idx ON webhook_delivery (endpoint_id, seq);

-- One row per attempt, written when it is claimed and completed when it ends (an attempt
-- whose worker died stays without finished_at).
CREATE TABLE webhook_attempt (
    delivery_id TEXT NOT NULL REFERENCES webhook_delivery (id),
    attempt     INTEGER NOT NULL,
    worker      TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    status_code INTEGER,
    latency_ms  INTEGER,
    error       TEXT,
    PRIMARY KEY (delivery_id, attempt)
);

-- The fan-out trigger on webhook_event (ringside_webhook_fan_out) is defined in
-- sql/0003_webhooks.sql.

-- Client tokens (browser JWTs, signed by the gateway; nothing is stored per token).
-- The signing key generated when RINGSIDE_CLIENT_TOKEN_KEYS is unset: one row, shared by every
-- process.
CREATE TABLE client_token_key (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    kid        TEXT NOT NULL,
    secret     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Revoking a customer's client tokens bumps its epoch; a token minted in an earlier epoch is
-- refused (no row: epoch 0).
CREATE TABLE client_token_epoch (
    customer_id TEXT PRIMARY KEY REFERENCES customer (id),
    epoch       BIGINT NOT NULL CHECK (epoch > 0),
    revoked_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE assistant (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id             TEXT PRIMARY KEY,
    developer_id   TEXT NOT NULL REFERENCES developer (id),
    name           TEXT CHECK (length(name) <= 256),
    description    TEXT CHECK (length(description) <= 512),
    instructions   TEXT CHECK (length(instructions) <= 256000),
    -- A model reference (fc:, slot:, match:), resolved again at every run.
    model          TEXT NOT NULL,
    tools          JSONB NOT NULL DEFAULT '[]',
    tool_resources JSONB,
    -- Sampling parameters (not money): floats as OpenAI has them.
    temperature    DOUBLE PRECISION,
    top_p          DOUBLE PRECISION,
    -- NULL is "auto".
    response_format JSONB,
    metadata       JSONB NOT NULL DEFAULT '{}',
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Soft delete: runs keep naming the assistant they ran.
    deleted_at     TIMESTAMPTZ
);

CREATE INDEX assistant_developer_seq_idx ON assistant (developer_id, seq)
WHERE deleted_at IS NULL;

CREATE TABLE conversation (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id             TEXT PRIMARY KEY,
    developer_id   TEXT NOT NULL REFERENCES developer (id),
    -- The customer the thread was created for (FC-Customer, user, or a client token's);
    -- NULL: the developer's own. A client token reaches only its customer's conversations.
    customer_id    TEXT REFERENCES customer (id),
    tool_resources JSONB,
    metadata       JSONB NOT NULL DEFAULT '{}',
    -- Live messages (at most 5,000) and the next message's ordinal, both moved by one
    -- conditional UPDATE of this row, so concurrent posts cannot overshoot and get a stable
    -- order.
    message_count  INTEGER NOT NULL DEFAULT 0 CHECK (message_count BETWEEN 0 AND 5000),
    next_ordinal   INTEGER NOT NULL DEFAULT 0 CHECK (next_ordinal >= 0),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at     TIMESTAMPTZ
);

-- GET /v1/threads?source_thread_id=... finds a migrated thread.
CREATE INDEX conversation_source_thread_idx
ON conversation (developer_id, (metadata ->> 'source_thread_id'))
WHERE deleted_at IS NULL AND metadata ? 'source_thread_id';

CREATE TABLE api_thread_aliases (
    thread_id       TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL UNIQUE REFERENCES conversation (id)
);

CREATE TABLE thread_message (
    seq                BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                 TEXT PRIMARY KEY,
    conversation_id    TEXT NOT NULL REFERENCES conversation (id),
    -- The order of the thread (the list's keyset key), from conversation.next_ordinal.
    ordinal            INTEGER NOT NULL,
    role               TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    -- OpenAI's content parts, as on the wire.
    content            JSONB NOT NULL,
    attachments        JSONB,
    assistant_id       TEXT,
    run_id             TEXT,
    status             TEXT NOT NULL DEFAULT 'completed'
                       CHECK (status IN ('in_progress', 'incomplete', 'completed')),
    incomplete_details JSONB,
    metadata           JSONB NOT NULL DEFAULT '{}',
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at       TIMESTAMPTZ,
    incomplete_at      TIMESTAMPTZ,
    UNIQUE (conversation_id, ordinal)
);

CREATE TABLE run (
    seq                   BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                    TEXT PRIMARY KEY,
    developer_id          TEXT NOT NULL REFERENCES developer (id),
    conversation_id       TEXT NOT NULL REFERENCES conversation (id),
    assistant_id          TEXT NOT NULL,
    customer_id           TEXT REFERENCES customer (id),
    -- The key that created the run: later model calls of the run (after tool outputs) are
    -- billed to it.
    api_key_id            TEXT NOT NULL REFERENCES api_key (id),
    status                TEXT NOT NULL
                          CHECK (status IN ('queued', 'in_progress', 'requires_action',
                                            'cancelling', 'cancelled', 'failed', 'completed',
                                            'incomplete', 'expired')),
    model                 TEXT NOT NULL,
    instructions          TEXT NOT NULL DEFAULT '',
    tools                 JSONB NOT NULL DEFAULT '[]',
    tool_resources        JSONB,
    temperature           DOUBLE PRECISION,
    top_p                 DOUBLE PRECISION,
    max_prompt_tokens     INTEGER CHECK (max_prompt_tokens >= 256),
    max_completion_tokens INTEGER CHECK (max_completion_tokens >= 16),
    truncation_strategy   JSONB NOT NULL DEFAULT '{"type": "auto", "last_messages": null}',
    -- "auto" | "none" | "required" | {"type": "function", "function": {"name": ...}}
    tool_choice           JSONB NOT NULL DEFAULT '"auto"',
    parallel_tool_calls   BOOLEAN NOT NULL DEFAULT true,
    response_format       JSONB,
    metadata              JSONB NOT NULL DEFAULT '{}',
    required_action       JSONB,
    last_error            JSONB,
    incomplete_details    JSONB,
    -- Summed over the run's model calls.
    prompt_tokens         INTEGER NOT NULL DEFAULT 0,
    completion_tokens     INTEGER NOT NULL DEFAULT 0,
    -- The process executing the run right now (NULL while queued elsewhere or waiting for
    -- tool outputs); a cancel is signalled with NOTIFY ringside_run_cancel, '<run id>'.
    process_id            TEXT,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at            TIMESTAMPTZ,
    expires_at            TIMESTAMPTZ NOT NULL,
    cancelled_at          TIMESTAMPTZ,
    failed_at             TIMESTAMPTZ,
    completed_at          TIMESTAMPTZ
);

CREATE UNIQUE INDEX run_active_conversation_idx ON run (conversation_id)
WHERE status IN ('queued', 'in_progress', 'requires_action', 'cancelling');
CREATE INDEX run_conversation_seq_idx ON run (conversation_id, seq);
-- The sweeper's scan: overdue active runs.
CREATE INDEX run_expiry_idx ON run (expires_at)
WHERE status IN ('queued', 'in_progress', 'requires_action', 'cancelling');

CREATE TABLE run_step (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                TEXT PRIMARY KEY,
    run_id            TEXT NOT NULL REFERENCES run (id),
    type              TEXT NOT NULL CHECK (type IN ('message_creation', 'tool_calls')),
    status            TEXT NOT NULL
                      CHECK (status IN ('in_progress', 'cancelled', 'failed', 'completed',
                                        'expired')),
    step_details      JSONB NOT NULL,
    last_error        JSONB,
    -- The model call this step came from: usage_event.request_id (one usage event per model
    -- call, grouped by run through this column).
    request_id        TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    metadata          JSONB NOT NULL DEFAULT '{}',
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    cancelled_at      TIMESTAMPTZ,
    failed_at         TIMESTAMPTZ,
    completed_at      TIMESTAMPTZ,
    expired_at        TIMESTAMPTZ
);

CREATE INDEX run_step_run_seq_idx ON run_step (run_id, seq);
CREATE INDEX run_step_request_idx ON run_step (request_id) WHERE request_id IS NOT NULL;
