-- The data of a run's webhook event (run.completed / run.failed), in one place: the gateway
-- writes it in the statement that ends a run segment, the sweeper in the one that expires or
-- fails runs, and cancelling a run waiting on tool outputs in its own. ``reason`` (run.failed
-- only: error, cancelled or expired) is left out when NULL; ``ended_at`` is the statement's
-- now(), the same instant as the run's completed_at / failed_at / cancelled_at.

CREATE OR REPLACE FUNCTION ringside_run_event_data(
    p_run_id TEXT,
    p_thread_id TEXT,
    p_assistant_id TEXT,
    p_customer_id TEXT,
    p_status TEXT,
    p_model TEXT,
    p_reason TEXT,
    p_last_error JSONB,
    p_incomplete_details JSONB,
    p_prompt_tokens INTEGER,
    p_completion_tokens INTEGER,
    p_created_at TIMESTAMPTZ
) RETURNS JSONB
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
               'run_id', p_run_id,
               'thread_id', p_thread_id,
               'assistant_id', p_assistant_id,
               'customer_id', p_customer_id,
               'status', p_status,
               'model', p_model,
               'last_error', p_last_error,
               'incomplete_details', p_incomplete_details,
               'usage', jsonb_build_object(
                   'prompt_tokens', p_prompt_tokens,
                   'completion_tokens', p_completion_tokens,
                   'total_tokens', p_prompt_tokens + p_completion_tokens),
               'created_at', floor(extract(epoch FROM p_created_at))::bigint,
               'ended_at', floor(extract(epoch FROM now()))::bigint)
           || CASE WHEN p_reason IS NULL THEN '{}'::jsonb
                   ELSE jsonb_build_object('reason', p_reason) END
$$;
