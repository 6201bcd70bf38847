"""Threads and their messages (OpenAI Assistants v2).

A thread is an internal *conversation* (``conv_…``) reached through its public alias
(``thread_…``, ``api_thread_aliases``); only the alias is ever on the wire. A thread belongs to
the developer and, when it was created for one, to a customer: a client token reaches only its
customer's threads, and anything else (another developer's thread, another customer's, a
customer-less one) is a 404, never a 403.

A thread holds at most 5,000 live messages (``409 conversation_full``), enforced by the one
conditional UPDATE that gives a message its ordinal (see ``store/messages.py``). Deleting a
message frees a slot; ordinals never go back, so the order of a thread is stable. While a run
holds the thread, clients cannot post or delete messages or delete the thread
(``409 conversation_locked``).
"""

from __future__ import annotations

from typing import Any

from ringside.domain import customers
from ringside.domain.auth import Caller
from ringside.domain.thread_input import (
    NewMessage,
    ThreadSpec,
    conversation_full,
    parse_message_update,
    parse_new_message,
    parse_thread_body,
    parse_thread_update,
)
from ringside.errors import Conflict, NotFound, RingsideError
from ringside.ids import new_id
from ringside.pagination import PageRequest, page_of, resolve_window
from ringside.store import messages as message_store
from ringside.store import run_segments
from ringside.store import threads as store
from ringside.store.bridge import Conn, Database
from ringside.store.messages import MessageRow, MessageValues
from ringside.store.run_steps import StepRow
from ringside.store.threads import MAX_MESSAGES, ThreadRow
from ringside.timestamps import unix

__all__ = [
    "MAX_MESSAGES",
    "MessageRow",
    "NewMessage",
    "ThreadRow",
    "ThreadSpec",
    "add_message",
    "create_thread",
    "delete_message",
    "delete_thread",
    "get_message",
    "get_thread",
    "hold_for_run",
    "list_messages",
    "list_threads_by_source",
    "message_json",
    "open_thread",
    "parse_message_update",
    "parse_new_message",
    "parse_thread_body",
    "parse_thread_update",
    "post_message",
    "prompt_messages",
    "thread_customer",
    "thread_json",
    "update_message",
    "update_message_metadata",
    "update_thread",
]

# --- wire shapes --------------------------------------------------------------------------


def thread_json(row: ThreadRow) -> dict[str, Any]:
    return {
        "id": row.thread_id,
        "object": "thread",
        "created_at": int(row.created_at.timestamp()),
        "metadata": row.metadata,
        "tool_resources": row.tool_resources if row.tool_resources is not None else {},
    }


def message_json(row: MessageRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "thread.message",
        "created_at": int(row.created_at.timestamp()),
        "thread_id": row.thread_id,
        "status": row.status,
        "incomplete_details": row.incomplete_details,
        "completed_at": unix(row.completed_at),
        "incomplete_at": unix(row.incomplete_at),
        "role": row.role,
        "content": row.content,
        "assistant_id": row.assistant_id,
        "run_id": row.run_id,
        "attachments": row.attachments if row.attachments is not None else [],
        "metadata": row.metadata,
    }


# --- threads ------------------------------------------------------------------------------


def _thread_not_found(thread_id: str) -> NotFound:
    return NotFound(f"No thread found with id {thread_id!r}.", param="thread_id")


def _locked(what: str) -> Conflict:
    return Conflict(
        f"{what} while a run is active on the thread; wait for it to end or cancel it.",
        code="conversation_locked",
    )


async def get_thread(db: Conn | Database, caller: Caller, thread_id: str) -> ThreadRow:
    """The caller's live thread: the developer's, and for a client token only one created for
    its customer. Anything else is a 404."""
    row = await store.select_thread(db, caller.developer_id, thread_id, caller.customer_id)
    if row is None:
        raise _thread_not_found(thread_id)
    return row


async def thread_customer(conn: Conn | Database, caller: Caller, ref: str | None) -> str | None:
    """The customer a new thread belongs to: a client token's own, else the customer ``ref``
    names (FC-Customer or ``user``; see api.client_tokens.attributed_customer), created as a
    stub when unknown; None: the developer's own thread."""
    if caller.customer_id is not None:
        return caller.customer_id
    if ref is None:
        return None
    return await customers.resolve_or_create_stub(conn, caller.developer_id, ref)


def _values(msg: NewMessage, **extra: Any) -> MessageValues:
    return MessageValues(
        id=new_id("msg"),
        role=msg.role,
        content=msg.content,
        attachments=msg.attachments,
        metadata=msg.metadata,
        **extra,
    )


async def create_thread(
    conn: Conn, caller: Caller, customer_id: str | None, body: Any
) -> tuple[ThreadRow, list[MessageRow]]:
    """A new thread with its initial messages, in the caller's transaction (create_and_run
    shares it). ``body`` is OpenAI's thread create body, or a parsed ThreadSpec."""
    spec = body if isinstance(body, ThreadSpec) else parse_thread_body(body)
    thread = await store.insert_thread(
        conn,
        conversation_id=new_id("conv"),
        thread_id=new_id("thread"),
        developer_id=caller.developer_id,
        customer_id=customer_id,
        tool_resources=spec.tool_resources,
        metadata=spec.metadata,
        message_count=len(spec.messages),
    )
    messages = await message_store.insert_initial_messages(
        conn, thread, [_values(m) for m in spec.messages]
    )
    return thread, messages


async def open_thread(
    db: Database, caller: Caller, customer_ref: str | None, spec: ThreadSpec
) -> tuple[ThreadRow, list[MessageRow]]:
    """``POST /v1/threads``: the thread, for the customer ``customer_ref`` names (a stub is
    created for an unknown one, in the same transaction, so a failure leaves nothing)."""
    async with db.transaction() as conn:
        customer_id = await thread_customer(conn, caller, customer_ref)
        return await create_thread(conn, caller, customer_id, spec)


async def update_thread(
    db: Database, caller: Caller, thread_id: str, changes: dict[str, Any]
) -> ThreadRow:
    thread = await get_thread(db, caller, thread_id)
    row = await store.update_thread(db, thread.conversation_id, changes)
    if row is None:
        raise _thread_not_found(thread_id)
    return row


async def delete_thread(db: Database, caller: Caller, thread_id: str) -> None:
    """Soft; refused (409 conversation_locked) while a run is active on the thread."""
    thread = await get_thread(db, caller, thread_id)
    async with db.transaction() as conn:
        if not await store.lock_thread(conn, thread.conversation_id, for_delete=True):
            raise _thread_not_found(thread_id)
        if (await store.select_thread_state(conn, thread.conversation_id)).locked:
            raise _locked("A thread cannot be deleted")
        await store.soft_delete_thread(conn, thread.conversation_id)


async def hold_for_run(conn: Conn, thread: ThreadRow) -> None:
    """In a run's creating transaction, before the run is inserted: the thread is still live
    and cannot be deleted until the transaction ends (then the delete sees the run). A thread
    deleted meanwhile is a 404."""
    if not await store.lock_thread(conn, thread.conversation_id, for_delete=False):
        raise _thread_not_found(thread.thread_id)


async def list_threads_by_source(
    db: Database, caller: Caller, source_thread_id: str, page: PageRequest
) -> tuple[list[ThreadRow], bool]:
    """The caller's threads whose ``metadata.source_thread_id`` is the given id (a migrated
    thread's id at OpenAI), newest first by default."""

    async def key_of(id: str) -> int | None:
        return await store.select_thread_seq(db, caller.developer_id, id)

    win = await resolve_window(page, key_of)
    rows = await store.select_threads_by_source(
        db, caller.developer_id, source_thread_id, caller.customer_id, win
    )
    return page_of(rows, win)


# --- messages -----------------------------------------------------------------------------


def _message_not_found(message_id: str) -> NotFound:
    return NotFound(f"No message found with id {message_id!r}.", param="message_id")


async def _why_not_appended(db: Conn | Database, thread: ThreadRow) -> RingsideError:
    state = await store.select_thread_state(db, thread.conversation_id)
    if not state.live:
        return _thread_not_found(thread.thread_id)
    if state.message_count >= MAX_MESSAGES:
        return conversation_full()
    return _locked("Messages cannot be added")


async def add_message(
    conn: Conn | Database,
    thread: ThreadRow,
    msg: NewMessage,
    *,
    assistant_id: str | None = None,
    run_id: str | None = None,
    status: str = "completed",
) -> MessageRow:
    """Append a message with the thread's next ordinal (runs use this for their messages, so
    it does not look at the thread's lock). A full thread is 409 conversation_full."""
    values = _values(msg, assistant_id=assistant_id, run_id=run_id, status=status)
    row = await message_store.append_message(conn, thread, values, unless_locked=False)
    if row is None:
        raise await _why_not_appended(conn, thread)
    return row


async def open_run_message(
    db: Database,
    thread: ThreadRow,
    *,
    assistant_id: str,
    run_id: str,
    step_id: str,
    request_id: str,
) -> tuple[MessageRow, StepRow]:
    """A run's message, empty and ``in_progress``, with its message_creation step (one
    statement), when the model starts writing. A full thread is 409 conversation_full."""
    values = _values(
        NewMessage("assistant", [], None, {}),
        assistant_id=assistant_id,
        run_id=run_id,
        status="in_progress",
    )
    opened = await run_segments.open_message(
        db,
        thread.thread_id,
        thread.conversation_id,
        values,
        step_id=step_id,
        request_id=request_id,
    )
    if opened is None:
        raise await _why_not_appended(db, thread)
    return opened


async def post_message(db: Database, thread: ThreadRow, msg: NewMessage) -> MessageRow:
    """``POST /v1/threads/{id}/messages``: as add_message, but refused (409
    conversation_locked) while a run is active on the thread."""
    row = await message_store.append_message(db, thread, _values(msg), unless_locked=True)
    if row is None:
        raise await _why_not_appended(db, thread)
    return row


async def update_message(
    conn: Conn | Database,
    message_id: str,
    *,
    content: list[dict[str, Any]],
    status: str,
    incomplete_details: dict[str, Any] | None = None,
) -> MessageRow:
    """A run finishing its message: content, status (completed_at / incomplete_at follow)."""
    row = await message_store.finish_message(
        conn, message_id, content=content, status=status, incomplete_details=incomplete_details
    )
    if row is None:
        raise _message_not_found(message_id)
    return row


async def get_message(db: Database, thread: ThreadRow, message_id: str) -> MessageRow:
    row = await message_store.select_message(db, thread, message_id)
    if row is None:
        raise _message_not_found(message_id)
    return row


async def update_message_metadata(
    db: Database, thread: ThreadRow, message_id: str, metadata: dict[str, str] | None
) -> MessageRow:
    if metadata is None:
        return await get_message(db, thread, message_id)
    row = await message_store.set_message_metadata(db, thread, message_id, metadata)
    if row is None:
        raise _message_not_found(message_id)
    return row


async def delete_message(db: Database, thread: ThreadRow, message_id: str) -> None:
    """Hard delete (the slot under the cap is freed); refused while a run is active."""
    if await message_store.delete_message(db, thread, message_id):
        return
    if await message_store.select_message(db, thread, message_id) is None:
        raise _message_not_found(message_id)
    raise _locked("Messages cannot be deleted")


async def list_messages(
    db: Database, thread: ThreadRow, page: PageRequest, *, run_id: str | None = None
) -> tuple[list[MessageRow], bool]:
    """A page of the thread's messages in thread order (``order=desc``, the default: newest
    first), optionally only those a run created."""

    async def key_of(id: str) -> int | None:
        return await message_store.select_message_ordinal(db, thread.conversation_id, id)

    win = await resolve_window(page, key_of)
    return page_of(await message_store.select_messages(db, thread, run_id, win), win)


async def prompt_messages(
    db: Conn | Database, conversation_id: str, last: int | None = None
) -> list[MessageRow]:
    """The thread's messages in order, oldest first; only the ``last`` newest when given."""
    return await message_store.select_prompt_messages(db, conversation_id, last)
