-- Customers and money: end-customers, wallets with an append-only ledger, monthly budgets,
-- holds reserved before a provider is called, daily usage aggregates, the webhook outbox.
--
-- Amounts a customer or developer is charged are USD with 6 decimals (micro-dollars); costs
-- are exact to 12 decimals. Locks are always taken in the same order: customer, budget month,
-- customer wallet, developer wallet (see ringside_reserve / ringside_settle).

-- Pricing overrides per developer: NULL markup_percent means the tier's default.
ALTER TABLE developer
ADD COLUMN markup_percent NUMERIC(9, 6) CHECK (markup_percent >= 0),
ADD COLUMN rate_multiplier NUMERIC(12, 6) NOT NULL DEFAULT 1 CHECK (rate_multiplier >= 0);

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

ALTER TABLE usage_event
ADD COLUMN customer_id TEXT REFERENCES customer (id),
ADD COLUMN billable_usd NUMERIC(18, 6) NOT NULL DEFAULT 0 CHECK (billable_usd >= 0),
DROP CONSTRAINT usage_event_usage_source_check,
ADD CONSTRAINT usage_event_usage_source_check
CHECK (usage_source IN ('upstream', 'counted', 'none', 'reserved')),
DROP CONSTRAINT usage_event_status_check,
ADD CONSTRAINT usage_event_status_check
CHECK (status IN ('ok', 'upstream_error', 'client_aborted', 'timeout', 'interrupted',
                      'internal_error'));

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

CREATE FUNCTION ringside_new_id(prefix TEXT) RETURNS TEXT
LANGUAGE sql VOLATILE AS $$
    SELECT prefix || '_' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 24)
$$;

-- Reserve a call's worst case before the provider is called, in one statement (so one
-- round trip and one transaction). Resolves the customer (creating a stub for an unknown
-- id, once however many calls race), checks budget, customer wallet and developer wallet,
-- and writes the hold. A call that does not fit is refused with nothing held; a budget
-- refusal writes one customer.budget_exceeded event per customer and month.
-- When the worst case is more than what is left but something is left, the call is admitted
-- holding what is left only if no other call holds anything: spend can pass a cap (or take a
-- wallet below zero) by at most that one call's overshoot, however many calls race.
CREATE FUNCTION ringside_reserve(
    p_request_id TEXT,
    p_process_id TEXT,
    p_developer_id TEXT,
    p_api_key_id TEXT,
    p_customer_ref TEXT,
    p_model_requested TEXT,
    p_model_resolved TEXT,
    p_provider TEXT,
    p_upstream_model TEXT,
    p_stream BOOLEAN,
    p_cost NUMERIC,
    p_amount NUMERIC,
    OUT outcome TEXT,
    OUT customer_id TEXT,
    OUT wallet_balance_usd NUMERIC,
    OUT wallet_held_usd NUMERIC
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c customer%ROWTYPE;
    b customer_budget_month%ROWTYPE;
    w wallet%ROWTYPE;
    dw wallet%ROWTYPE;
    v_month DATE := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    v_budget_hold NUMERIC := 0;
    v_wallet_hold NUMERIC := 0;
    v_dev_hold NUMERIC := 0;
    v_has_budget BOOLEAN := false;
    v_left NUMERIC;
BEGIN
    outcome := 'ok';
    IF p_customer_ref IS NOT NULL THEN
        SELECT * INTO c FROM customer AS cu
         WHERE cu.developer_id = p_developer_id AND cu.deleted_at IS NULL
           AND (cu.id = p_customer_ref OR cu.external_id = p_customer_ref)
         ORDER BY (cu.id = p_customer_ref) DESC LIMIT 1
           FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO customer (id, developer_id, external_id, stub)
            VALUES (ringside_new_id('cus'), p_developer_id, p_customer_ref, true)
            ON CONFLICT (developer_id, external_id)
            WHERE deleted_at IS NULL AND external_id IS NOT NULL DO NOTHING;
            SELECT * INTO STRICT c FROM customer AS cu
             WHERE cu.developer_id = p_developer_id AND cu.deleted_at IS NULL
               AND cu.external_id = p_customer_ref
               FOR UPDATE;
        END IF;
        customer_id := c.id;

        IF c.monthly_budget_usd IS NOT NULL THEN
            v_has_budget := true;
            INSERT INTO customer_budget_month (customer_id, month) VALUES (c.id, v_month)
            ON CONFLICT DO NOTHING;
            SELECT * INTO STRICT b FROM customer_budget_month AS m
             WHERE m.customer_id = c.id AND m.month = v_month FOR UPDATE;
            v_left := c.monthly_budget_usd - b.spent_usd - b.held_usd;
            IF v_left <= 0 OR (v_left < p_amount AND b.held_usd > 0) THEN
                outcome := 'customer_budget_exceeded';
                IF v_left <= 0 AND NOT b.exceeded_notified THEN
                    UPDATE customer_budget_month AS m SET exceeded_notified = true
                     WHERE m.customer_id = c.id AND m.month = v_month;
                    INSERT INTO webhook_event (id, developer_id, type, data)
                    VALUES (ringside_new_id('evt'), p_developer_id, 'customer.budget_exceeded',
                            jsonb_build_object(
                                'customer_id', c.id,
                                'external_id', c.external_id,
                                'month', to_char(v_month, 'YYYY-MM'),
                                'monthly_budget_usd', c.monthly_budget_usd::text,
                                'spent_usd', b.spent_usd::text,
                                'request_id', p_request_id));
                END IF;
                RETURN;
            END IF;
            v_budget_hold := LEAST(p_amount, v_left);
        END IF;

        SELECT * INTO w FROM wallet AS wa WHERE wa.customer_id = c.id FOR UPDATE;
        IF FOUND THEN
            wallet_balance_usd := w.balance_usd;
            v_left := w.balance_usd - w.held_usd;
            IF v_left <= 0 OR (v_left < p_amount AND w.held_usd > 0) THEN
                outcome := 'customer_wallet_empty';
                RETURN;
            END IF;
            v_wallet_hold := LEAST(p_amount, v_left);
        END IF;
    END IF;

    SELECT * INTO dw FROM wallet AS wa
     WHERE wa.developer_id = p_developer_id AND wa.customer_id IS NULL FOR UPDATE;
    IF FOUND THEN
        v_left := dw.balance_usd - dw.held_usd;
        IF v_left <= 0 OR (v_left < p_amount AND dw.held_usd > 0) THEN
            outcome := 'wallet_empty';
            RETURN;
        END IF;
        v_dev_hold := LEAST(p_amount, v_left);
    END IF;

    IF v_has_budget THEN
        UPDATE customer_budget_month AS m SET held_usd = m.held_usd + v_budget_hold
         WHERE m.customer_id = c.id AND m.month = v_month;
    END IF;
    IF w.id IS NOT NULL THEN
        UPDATE wallet AS wa SET held_usd = wa.held_usd + v_wallet_hold WHERE wa.id = w.id;
    END IF;
    IF dw.id IS NOT NULL THEN
        UPDATE wallet AS wa SET held_usd = wa.held_usd + v_dev_hold WHERE wa.id = dw.id;
    END IF;
    wallet_held_usd := v_wallet_hold;
    INSERT INTO billing_hold (
        request_id, process_id, developer_id, api_key_id, customer_id, customer_ref,
        model_requested, model_resolved, provider, upstream_model, stream, cost_usd, amount_usd,
        budget_month, budget_held_usd, wallet_id, wallet_held_usd, developer_wallet_id,
        developer_wallet_held_usd
    ) VALUES (
        p_request_id, p_process_id, p_developer_id, p_api_key_id, c.id, p_customer_ref,
        p_model_requested, p_model_resolved, p_provider, p_upstream_model, p_stream, p_cost,
        p_amount, CASE WHEN v_has_budget THEN v_month END, v_budget_hold, w.id, v_wallet_hold,
        dw.id, v_dev_hold
    );
END
$$;

-- Settle a hold, once, in one statement: the usage event, the budget spend, the wallet
-- debits (with their ledger rows), wallet.low events and the daily aggregate. Returns
-- settled = false when the hold was already settled (the sweeper and the request raced).
CREATE FUNCTION ringside_settle(
    p_request_id TEXT,
    p_status TEXT,
    p_http_status INTEGER,
    p_usage_source TEXT,
    p_model_resolved TEXT,
    p_provider TEXT,
    p_upstream_model TEXT,
    p_input INTEGER,
    p_cached_input INTEGER,
    p_output INTEGER,
    p_reasoning INTEGER,
    p_cost NUMERIC,
    p_billable NUMERIC,
    p_latency_ms INTEGER,
    OUT settled BOOLEAN,
    OUT wallet_balance_usd NUMERIC
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    h billing_hold%ROWTYPE;
    v_balance NUMERIC;
    v_notified BOOLEAN;
    v_threshold NUMERIC;
    v_day DATE := (now() AT TIME ZONE 'UTC')::date;
BEGIN
    DELETE FROM billing_hold AS bh WHERE bh.request_id = p_request_id RETURNING * INTO h;
    IF NOT FOUND THEN
        settled := false;
        RETURN;
    END IF;
    settled := true;
    INSERT INTO usage_event (
        request_id, developer_id, api_key_id, customer_ref, customer_id, model_requested,
        model_resolved, provider, upstream_model, stream, input_tokens, cached_input_tokens,
        output_tokens, reasoning_tokens, usage_source, cost_usd, billable_usd, latency_ms,
        status, http_status
    ) VALUES (
        h.request_id, h.developer_id, h.api_key_id, h.customer_ref, h.customer_id,
        h.model_requested, p_model_resolved, p_provider, p_upstream_model, h.stream, p_input,
        p_cached_input, p_output, p_reasoning, p_usage_source, p_cost, p_billable, p_latency_ms,
        p_status, p_http_status
    );

    IF h.customer_id IS NOT NULL THEN
        INSERT INTO customer_budget_month AS m (customer_id, month, spent_usd)
        VALUES (h.customer_id,
                COALESCE(h.budget_month, date_trunc('month', now() AT TIME ZONE 'UTC')::date),
                p_billable)
        ON CONFLICT (customer_id, month) DO UPDATE
           SET spent_usd = m.spent_usd + p_billable, held_usd = m.held_usd - h.budget_held_usd;
    END IF;

    IF h.wallet_id IS NOT NULL THEN
        UPDATE wallet AS wa
           SET held_usd = wa.held_usd - h.wallet_held_usd, balance_usd = wa.balance_usd - p_billable
         WHERE wa.id = h.wallet_id
        RETURNING wa.balance_usd, wa.low_notified INTO v_balance, v_notified;
        wallet_balance_usd := v_balance;
        IF p_billable > 0 THEN
            INSERT INTO wallet_transaction (id, wallet_id, type, amount_usd, balance_after_usd,
                                            request_id)
            VALUES (ringside_new_id('wtx'), h.wallet_id, 'debit', -p_billable, v_balance,
                    h.request_id);
            SELECT cu.wallet_low_threshold_usd INTO v_threshold FROM customer AS cu
             WHERE cu.id = h.customer_id;
            IF v_threshold IS NOT NULL AND v_balance < v_threshold AND NOT v_notified THEN
                UPDATE wallet AS wa SET low_notified = true WHERE wa.id = h.wallet_id;
                INSERT INTO webhook_event (id, developer_id, type, data)
                VALUES (ringside_new_id('evt'), h.developer_id, 'wallet.low',
                        jsonb_build_object(
                            'customer_id', h.customer_id,
                            'balance_usd', v_balance::text,
                            'wallet_low_threshold_usd', v_threshold::text,
                            'request_id', h.request_id));
            END IF;
        END IF;
    END IF;

    IF h.developer_wallet_id IS NOT NULL THEN
        UPDATE wallet AS wa
           SET held_usd = wa.held_usd - h.developer_wallet_held_usd,
               balance_usd = wa.balance_usd - p_billable
         WHERE wa.id = h.developer_wallet_id
        RETURNING wa.balance_usd INTO v_balance;
        IF p_billable > 0 THEN
            INSERT INTO wallet_transaction (id, wallet_id, type, amount_usd, balance_after_usd,
                                            request_id)
            VALUES (ringside_new_id('wtx'), h.developer_wallet_id, 'debit', -p_billable,
                    v_balance, h.request_id);
        END IF;
    END IF;

    INSERT INTO usage_daily AS d (
        developer_id, day, customer_id, model, requests, input_tokens, cached_input_tokens,
        output_tokens, reasoning_tokens, cost_usd, billable_usd
    ) VALUES (
        h.developer_id, v_day, COALESCE(h.customer_id, ''), p_model_resolved, 1, p_input,
        p_cached_input, p_output, p_reasoning, p_cost, p_billable
    )
    ON CONFLICT (developer_id, day, customer_id, model) DO UPDATE SET
        requests = d.requests + 1,
        input_tokens = d.input_tokens + p_input,
        cached_input_tokens = d.cached_input_tokens + p_cached_input,
        output_tokens = d.output_tokens + p_output,
        reasoning_tokens = d.reasoning_tokens + p_reasoning,
        cost_usd = d.cost_usd + p_cost,
        billable_usd = d.billable_usd + p_billable;
END
$$;
