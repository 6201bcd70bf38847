"""SQL for the runs sweeper (``workers/runs.py``): runs past ``expires_at`` become ``expired``,
``cancelling`` runs whose executing process is gone become ``cancelled``, and ``in_progress``
runs whose executing process is gone become ``failed``.

Either way the run leaves the states of ``run_active_conversation_idx``, which releases its
thread's lock. A claim takes the runs ``FOR UPDATE SKIP LOCKED``, so several sweepers never
finish one run twice, and a gateway finishing the same run at the same moment either holds the
row first (the sweeper skips it) or waits and then finds it no longer active: the gateway's
own transitions are conditional on the run's status, so a finished run is never overwritten.
"""

from __future__ import annotations

from collections.abc import Sequence

from ringside.store.bridge import Conn

RUN_CANCEL_CHANNEL = "ringside_run_cancel"
RUN_FAILED = "run.failed"

_EXPIRE_DUE = """
    UPDATE run AS r
       SET status = 'expired', required_action = NULL, process_id = NULL
      FROM (SELECT id FROM run
             WHERE status IN ('queued', 'in_progress', 'requires_action', 'cancelling')
               AND expires_at <= now()
             ORDER BY expires_at, id
             LIMIT $1
               FOR UPDATE SKIP LOCKED) AS due
     WHERE r.id = due.id
 RETURNING r.id"""

# Runs whose executing process is gone (never picked up, died, or silent past
# process_dead_after_s): nobody else will end them. A cancel is carried out by the executing
# process (it got the NOTIFY), so an orphaned one is finished here; an orphaned in_progress run
# is failed now rather than at its expiry (its hold is the settlement worker's, settled at the
# reserved amount). $1 dead_after_s, $2 batch.
_ORPHANED = """
    UPDATE run AS r
       SET {ending}, required_action = NULL, process_id = NULL
      FROM (SELECT c.id FROM run AS c
              LEFT JOIN gateway_process AS p ON p.id = c.process_id
             WHERE {which}
               AND (p.id IS NULL OR p.heartbeat_at < now() - make_interval(secs => $1))
             ORDER BY c.id
             LIMIT $2
               FOR UPDATE OF c SKIP LOCKED) AS gone
     WHERE r.id = gone.id
 RETURNING r.id"""
_CANCEL_ORPHANED = _ORPHANED.format(
    ending="status = 'cancelled', cancelled_at = now()", which="c.status = 'cancelling'"
)
_FAIL_ORPHANED = _ORPHANED.format(
    ending="""status = 'failed', failed_at = now(),
           last_error = jsonb_build_object(
               'code', 'server_error',
               'message', 'The gateway process executing the run stopped.')""",
    which="c.status = 'in_progress' AND c.process_id IS NOT NULL",
)

# What a run ended by the sweeper leaves behind, in the sweep's transaction: its open step and
# its message closed, the run.failed event in the outbox (its data ringside_run_event_data's, as
# for the gateway's own run events), and a NOTIFY for a process that may still be
# executing it (delivered at commit). $1 run ids, $2 the runs' (and steps') new status, $3 the
# event's reason, $4 the message's incomplete reason. Messages are found through their
# conversations (indexed), not by run_id (which is not).
_CLOSE_OUT = f"""
    WITH ended AS (
        SELECT r.id, r.developer_id, r.conversation_id, r.assistant_id, r.customer_id,
               r.status, r.model, r.last_error, r.incomplete_details, r.prompt_tokens,
               r.completion_tokens, r.created_at, a.thread_id
          FROM run AS r
          JOIN api_thread_aliases AS a ON a.conversation_id = r.conversation_id
         WHERE r.id = ANY($1::text[])
    ), steps AS (
        UPDATE run_step AS s
           SET status = $2::text,
               expired_at = CASE WHEN $2::text = 'expired' THEN now() ELSE s.expired_at END,
               cancelled_at = CASE WHEN $2::text = 'cancelled' THEN now() ELSE s.cancelled_at END,
               failed_at = CASE WHEN $2::text = 'failed' THEN now() ELSE s.failed_at END
         WHERE s.run_id = ANY($1::text[]) AND s.status = 'in_progress'
    ), messages AS (
        UPDATE thread_message AS m
           SET status = 'incomplete', incomplete_at = now(),
               incomplete_details = jsonb_build_object('reason', $4::text)
         WHERE m.conversation_id IN (SELECT conversation_id FROM ended)
           AND m.run_id = ANY($1::text[]) AND m.status = 'in_progress'
    ), events AS (
        INSERT INTO webhook_event (id, developer_id, type, data)
        SELECT ringside_new_id('evt'), e.developer_id, 'run.failed',
               ringside_run_event_data(e.id, e.thread_id, e.assistant_id, e.customer_id,
                                       e.status, e.model, $3::text, e.last_error,
                                       e.incomplete_details, e.prompt_tokens,
                                       e.completion_tokens, e.created_at)
          FROM ended AS e
         ORDER BY e.id
    )
    SELECT pg_notify('{RUN_CANCEL_CHANNEL}', id) FROM unnest($1::text[]) AS u(id)"""


async def expire_due(conn: Conn, *, batch: int) -> list[str]:
    """Flip up to ``batch`` overdue active runs to ``expired``; their ids."""
    return [r["id"] for r in await conn.fetch(_EXPIRE_DUE, batch)]


async def cancel_orphaned(conn: Conn, *, dead_after_s: float, batch: int) -> list[str]:
    """Finish up to ``batch`` ``cancelling`` runs that no live process is executing."""
    return [r["id"] for r in await conn.fetch(_CANCEL_ORPHANED, dead_after_s, batch)]


async def fail_orphaned(conn: Conn, *, dead_after_s: float, batch: int) -> list[str]:
    """Fail up to ``batch`` ``in_progress`` runs whose executing process is gone."""
    return [r["id"] for r in await conn.fetch(_FAIL_ORPHANED, dead_after_s, batch)]


async def close_out(
    conn: Conn, run_ids: Sequence[str], *, status: str, reason: str, message_reason: str
) -> None:
    """Steps, message, ``run.failed`` event and cancel signal of runs just ended as ``status``."""
    if run_ids:
        await conn.execute(_CLOSE_OUT, list(run_ids), status, reason, message_reason)
