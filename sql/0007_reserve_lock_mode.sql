-- ringside_reserve locks the customer row FOR NO KEY UPDATE instead of FOR UPDATE: it never
-- changes the row's key, and FOR UPDATE conflicts with the FOR KEY SHARE lock that every
-- insert referencing the customer takes (a run, a thread). Two run creations for one customer
-- each insert their run (KEY SHARE) and then reserve in the same transaction; with FOR UPDATE
-- each waited for the other's KEY SHARE (a deadlock). Reservations still serialise on the row
-- (NO KEY UPDATE conflicts with itself). The body is otherwise 0002's, unchanged.

CREATE OR REPLACE FUNCTION ringside_reserve(
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
           FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            INSERT INTO customer (id, developer_id, external_id, stub)
            VALUES (ringside_new_id('cus'), p_developer_id, p_customer_ref, true)
            ON CONFLICT (developer_id, external_id)
            WHERE deleted_at IS NULL AND external_id IS NOT NULL DO NOTHING;
            SELECT * INTO STRICT c FROM customer AS cu
             WHERE cu.developer_id = p_developer_id AND cu.deleted_at IS NULL
               AND cu.external_id = p_customer_ref
               FOR NO KEY UPDATE;
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
