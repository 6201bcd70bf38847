-- Usage rollups: usage reports by model, day and customer read these instead of grouping the
-- whole of usage_daily (one row per developer, day, customer and model).

-- Two smaller aggregates of usage_daily, kept current by ringside_settle in the same
-- statement as it: per (developer, day, model) for the developer's report by model or day and
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

INSERT INTO usage_daily_model (
    developer_id, day, model, requests, input_tokens, cached_input_tokens, output_tokens,
    reasoning_tokens, cost_usd, billable_usd
)
SELECT developer_id, day, model, sum(requests), sum(input_tokens), sum(cached_input_tokens), sum(output_tokens),
       sum(reasoning_tokens), sum(cost_usd), sum(billable_usd)
  FROM usage_daily
 GROUP BY developer_id, day, model;

INSERT INTO usage_daily_customer (
    developer_id, customer_id, day, requests, input_tokens, cached_input_tokens, output_tokens,
    reasoning_tokens, cost_usd, billable_usd
)
SELECT developer_id, customer_id, day, sum(requests), sum(input_tokens), sum(cached_input_tokens), sum(output_tokens),
       sum(reasoning_tokens), sum(cost_usd), sum(billable_usd)
  FROM usage_daily
 GROUP BY developer_id, customer_id, day;

-- As in 0002, plus the two rollups next to usage_daily.
CREATE OR REPLACE FUNCTION ringside_settle(
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

    INSERT INTO usage_daily_model AS d (
        developer_id, day, model, requests, input_tokens, cached_input_tokens,
        output_tokens, reasoning_tokens, cost_usd, billable_usd
    ) VALUES (
        h.developer_id, v_day, p_model_resolved, 1, p_input, p_cached_input, p_output,
        p_reasoning, p_cost, p_billable
    )
    ON CONFLICT (developer_id, day, model) DO UPDATE SET
        requests = d.requests + 1,
        input_tokens = d.input_tokens + p_input,
        cached_input_tokens = d.cached_input_tokens + p_cached_input,
        output_tokens = d.output_tokens + p_output,
        reasoning_tokens = d.reasoning_tokens + p_reasoning,
        cost_usd = d.cost_usd + p_cost,
        billable_usd = d.billable_usd + p_billable;

    INSERT INTO usage_daily_customer AS d (
        developer_id, customer_id, day, requests, input_tokens, cached_input_tokens,
        output_tokens, reasoning_tokens, cost_usd, billable_usd
    ) VALUES (
        h.developer_id, COALESCE(h.customer_id, ''), v_day, 1, p_input, p_cached_input,
        p_output, p_reasoning, p_cost, p_billable
    )
    ON CONFLICT (developer_id, customer_id, day) DO UPDATE SET
        requests = d.requests + 1,
        input_tokens = d.input_tokens + p_input,
        cached_input_tokens = d.cached_input_tokens + p_cached_input,
        output_tokens = d.output_tokens + p_output,
        reasoning_tokens = d.reasoning_tokens + p_reasoning,
        cost_usd = d.cost_usd + p_cost,
        billable_usd = d.billable_usd + p_billable;
END
$$;

