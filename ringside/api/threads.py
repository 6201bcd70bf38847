"""``/v1/threads`` and ``/v1/threads/{id}/messages``: OpenAI Assistants v2 threads and
messages. A developer API key reaches every thread of its developer; a client token only
those created for its customer. Updates are POSTs, as at OpenAI.

Ringside extensions: a thread is created for the customer that ``FC-Customer`` or a body
``user`` names (or a client token's), and ``GET /v1/threads?source_thread_id=…`` finds the
threads whose ``metadata.source_thread_id`` is that id (a migrated thread).
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from ringside import validation
from ringside.api.client_tokens import attributed_customer, inference_caller
from ringside.api.common import json_response, read_json, services
from ringside.domain import threads
from ringside.errors import InvalidRequest
from ringside.pagination import PageRequest, list_json

threads_bp = Blueprint("threads", __name__)
_THREAD = "/v1/threads/<thread_id>"
_MESSAGES = f"{_THREAD}/messages"


@threads_bp.post("/v1/threads")
async def create_thread() -> Response:
    caller = await inference_caller()
    spec = threads.parse_thread_body(await read_json(optional=True))
    ref = attributed_customer(caller, request.headers.get("FC-Customer"), spec.user)
    thread, _ = await threads.open_thread(services().db, caller, ref, spec)
    return json_response(threads.thread_json(thread))


@threads_bp.get("/v1/threads")
async def list_threads() -> Response:
    caller = await inference_caller()
    page = PageRequest.from_args(request.args)
    source = request.args.get("source_thread_id")
    if source is None:
        raise InvalidRequest(
            "Listing threads needs 'source_thread_id' (the Ringside extension that finds a"
            " migrated thread by its metadata.source_thread_id).",
            param="source_thread_id",
        )
    source = validation.text(source, "source_thread_id", max_len=512)
    rows, has_more = await threads.list_threads_by_source(services().db, caller, source, page)
    return json_response(list_json([threads.thread_json(r) for r in rows], has_more))


@threads_bp.get(_THREAD)
async def get_thread(thread_id: str) -> Response:
    caller = await inference_caller()
    thread = await threads.get_thread(services().db, caller, thread_id)
    return json_response(threads.thread_json(thread))


@threads_bp.post(_THREAD)
async def update_thread(thread_id: str) -> Response:
    caller = await inference_caller()
    changes = threads.parse_thread_update(await read_json())
    thread = await threads.update_thread(services().db, caller, thread_id, changes)
    return json_response(threads.thread_json(thread))


@threads_bp.delete(_THREAD)
async def delete_thread(thread_id: str) -> Response:
    caller = await inference_caller()
    await threads.delete_thread(services().db, caller, thread_id)
    return json_response({"id": thread_id, "object": "thread.deleted", "deleted": True})


@threads_bp.post(_MESSAGES)
async def create_message(thread_id: str) -> Response:
    caller = await inference_caller()
    msg = threads.parse_new_message(await read_json())
    db = services().db
    thread = await threads.get_thread(db, caller, thread_id)
    return json_response(threads.message_json(await threads.post_message(db, thread, msg)))


@threads_bp.get(_MESSAGES)
async def list_messages(thread_id: str) -> Response:
    caller = await inference_caller()
    page = PageRequest.from_args(request.args)
    run_id = request.args.get("run_id")
    if run_id is not None:
        run_id = validation.text(run_id, "run_id", max_len=256, strip_ok=False)
    db = services().db
    thread = await threads.get_thread(db, caller, thread_id)
    rows, has_more = await threads.list_messages(db, thread, page, run_id=run_id)
    return json_response(list_json([threads.message_json(r) for r in rows], has_more))


@threads_bp.get(f"{_MESSAGES}/<message_id>")
async def get_message(thread_id: str, message_id: str) -> Response:
    caller = await inference_caller()
    db = services().db
    thread = await threads.get_thread(db, caller, thread_id)
    return json_response(threads.message_json(await threads.get_message(db, thread, message_id)))


@threads_bp.post(f"{_MESSAGES}/<message_id>")
async def update_message(thread_id: str, message_id: str) -> Response:
    caller = await inference_caller()
    metadata = threads.parse_message_update(await read_json())
    db = services().db
    thread = await threads.get_thread(db, caller, thread_id)
    row = await threads.update_message_metadata(db, thread, message_id, metadata)
    return json_response(threads.message_json(row))


@threads_bp.delete(f"{_MESSAGES}/<message_id>")
async def delete_message(thread_id: str, message_id: str) -> Response:
    caller = await inference_caller()
    db = services().db
    thread = await threads.get_thread(db, caller, thread_id)
    await threads.delete_message(db, thread, message_id)
    return json_response({"id": message_id, "object": "thread.message.deleted", "deleted": True})
