"""Assistants API: runs, run steps, tool outputs, cancel, and ``POST /v1/threads/runs``
(create_and_run). Developer API keys and client tokens (for their customer's threads)."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable

import orjson
import trio
from quart import Blueprint, Response, request

from ringside.api import rate_limits
from ringside.api.client_tokens import attributed_customer, inference_caller
from ringside.api.common import json_response, read_json, replay_response, request_log, services
from ringside.domain import idempotency, run_calls, run_params, run_segment, runs, threads
from ringside.domain.auth import Caller
from ringside.domain.rate_limits import Admission
from ringside.domain.run_events import TERMINAL, drop, run_json, step_json
from ringside.domain.run_executor import EventStream
from ringside.errors import InvalidRequest, ServiceUnavailable
from ringside.pagination import PageRequest, list_json
from ringside.services import Services
from ringside.store.bridge import Conn
from ringside.store.runs import RunRow

runs_bp = Blueprint("runs", __name__)

_RUNS = "/v1/threads/<thread_id>/runs"
_RUN = f"{_RUNS}/<run_id>"
_SSE = "text/event-stream; charset=utf-8"
_JSON = "application/json"
_START_DEADLINE_S = 30.0
# The only include OpenAI defines for steps; there are no file_search steps yet.
_STEP_INCLUDE = "step_details.tool_calls[*].file_search.results[*].content"


def _poll_after(run: RunRow) -> dict[str, str]:
    """``openai-poll-after-ms``: the SDK's poll helpers wait this long between reads (they
    read it once), so a fresh run is polled briskly and an old one gently."""
    if run.status in TERMINAL or run.status == "requires_action":
        return {}
    age = time.time() - run.created_at.timestamp()
    return {"openai-poll-after-ms": "50" if age < 5 else "250"}


def _run_response(run: RunRow, thread_id: str) -> Response:
    return json_response(run_json(run, thread_id), headers=_poll_after(run))


def _origin(svc: Services, caller: Caller) -> run_calls.Origin:
    async def admit(customer_ref: str | None, tokens: int, conn: Conn) -> Admission:
        return await rate_limits.admit(svc, caller, customer_ref, tokens, conn)

    return run_calls.Origin(request_log().request_id, admit)


def _check_include() -> None:
    for value in request.args.getlist("include[]") + request.args.getlist("include"):
        if value != _STEP_INCLUDE:
            raise InvalidRequest(f"'include' cannot be {value!r}.", param="include")


def _launch(svc: Services, started: runs.Started, stream: bool) -> Response:
    """Hand the segment to the executor: answer the run (polled) or its events (streamed)."""
    segment = started.segment
    thread_id = started.thread.thread_id
    if not stream:
        svc.runs.start(
            segment.run.id, lambda register: run_segment.execute(svc, segment, drop, register)
        )
        return _run_response(segment.run, thread_id)
    events = EventStream(svc.runs, segment.run.id, svc.unstarted_streams)

    async def work(register: Callable[[trio.CancelScope], None]) -> None:
        try:
            await run_segment.execute(svc, segment, events.sink, register)
        finally:
            events.end()

    events.done = svc.runs.start(segment.run.id, work)
    response = Response(
        events,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        content_type=_SSE,
    )
    response.timeout = None
    return response


async def _idempotent(
    svc: Services,
    caller: Caller,
    body: object,
    stream: bool,
    start: Callable[[], Awaitable[runs.Started]],
) -> Response:
    """Start a run under the request's ``Idempotency-Key``: the run object is stored as soon
    as the run exists, so a retry replays it (as JSON, even for a stream) and never starts or
    bills a second run."""
    claim = await idempotency.begin_for_request(
        svc.db,
        header=request.headers.get("Idempotency-Key"),
        models=1,
        developer_id=caller.developer_id,
        path=request.path,
        body=body,
        request_id=request_log().request_id,
        process_id=svc.process_id,
    )
    if isinstance(claim, idempotency.Replay):
        return replay_response(claim)
    try:
        started, response = await _start_and_launch(svc, start, stream)
    except BaseException:
        if claim is not None:
            await claim.release()  # nothing exists and nothing was billed
        raise
    if claim is not None:
        shown = run_json(started.run, started.thread.thread_id)
        await claim.store(200, {"Content-Type": _JSON}, orjson.dumps(shown))
    request_log().model = started.run.model
    return response


async def _start_and_launch(
    svc: Services, start: Callable[[], Awaitable[runs.Started]], stream: bool
) -> tuple[runs.Started, Response]:
    """Start the run and hand it to the executor, shielded from the client going away: a
    cancel landing on the COMMIT could otherwise leave a committed run nobody executes."""
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + _START_DEADLINE_S
        started = await start()
        return started, _launch(svc, started, stream)
    raise ServiceUnavailable("The run could not be started in time; retry.")


def _admitted(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """A handler that starts a run segment, admitted at most ``RINGSIDE_RUN_STARTS`` at a time
    in this process (``RunExecutor.starts``, first come first served): a burst of new runs
    waits before its runs exist instead of slowing down the runs already executing."""

    @functools.wraps(handler)
    async def admitted(**route: str) -> Response:
        async with services().runs.starts:
            return await handler(**route)

    return admitted


@runs_bp.post(_RUNS)
@_admitted
async def create_run(thread_id: str) -> Response:
    svc = services()
    caller = await inference_caller()
    body = await read_json()
    _check_include()
    spec, _ = run_params.parse_create(svc, body)
    thread = await threads.get_thread(svc.db, caller, thread_id)
    attribution = attributed_customer(caller, request.headers.get("FC-Customer"), spec.user)

    def start() -> Awaitable[runs.Started]:
        return runs.start_run(svc, caller, thread, spec, attribution, _origin(svc, caller))

    return await _idempotent(svc, caller, body, spec.stream, start)


@runs_bp.post("/v1/threads/runs")
@_admitted
async def create_thread_and_run() -> Response:
    svc = services()
    caller = await inference_caller()
    body = await read_json()
    spec, thread_spec = run_params.parse_create(svc, body, with_thread=True)
    assert thread_spec is not None
    user = spec.user if spec.user is not None else thread_spec.user
    attribution = attributed_customer(caller, request.headers.get("FC-Customer"), user)

    def start() -> Awaitable[runs.Started]:
        return runs.start_thread_and_run(
            svc, caller, spec, thread_spec, attribution, _origin(svc, caller)
        )

    return await _idempotent(svc, caller, body, spec.stream, start)


@runs_bp.get(_RUNS)
async def list_runs(thread_id: str) -> Response:
    svc = services()
    caller = await inference_caller()
    page = PageRequest.from_args(request.args)
    thread = await threads.get_thread(svc.db, caller, thread_id)
    rows, more = await runs.list_runs(svc, thread, page)
    return json_response(list_json([run_json(r, thread.thread_id) for r in rows], more))


@runs_bp.get(_RUN)
async def retrieve_run(thread_id: str, run_id: str) -> Response:
    svc = services()
    caller = await inference_caller()
    thread = await threads.get_thread(svc.db, caller, thread_id)
    return _run_response(await runs.get_run(svc, thread, run_id), thread.thread_id)


@runs_bp.post(_RUN)
async def update_run(thread_id: str, run_id: str) -> Response:
    svc = services()
    caller = await inference_caller()
    metadata = run_params.parse_update(await read_json(optional=True))
    thread = await threads.get_thread(svc.db, caller, thread_id)
    row = await runs.update_run(svc, thread, run_id, metadata)
    return _run_response(row, thread.thread_id)


@runs_bp.post(f"{_RUN}/cancel")
async def cancel_run(thread_id: str, run_id: str) -> Response:
    svc = services()
    caller = await inference_caller()
    thread = await threads.get_thread(svc.db, caller, thread_id)
    row = await runs.cancel_run(svc, thread, run_id)
    return _run_response(row, thread.thread_id)


@runs_bp.post(f"{_RUN}/submit_tool_outputs")
@_admitted
async def submit_tool_outputs(thread_id: str, run_id: str) -> Response:
    svc = services()
    caller = await inference_caller()
    outputs, stream, user = run_params.parse_tool_outputs(await read_json())
    thread = await threads.get_thread(svc.db, caller, thread_id)
    attribution = attributed_customer(caller, request.headers.get("FC-Customer"), user)

    def start() -> Awaitable[runs.Started]:
        return runs.submit_tool_outputs(
            svc, caller, thread, run_id, outputs, attribution, _origin(svc, caller), stream=stream
        )

    _, response = await _start_and_launch(svc, start, stream)
    return response


@runs_bp.get(f"{_RUN}/steps")
async def list_run_steps(thread_id: str, run_id: str) -> Response:
    svc = services()
    caller = await inference_caller()
    _check_include()
    page = PageRequest.from_args(request.args)
    thread = await threads.get_thread(svc.db, caller, thread_id)
    run, rows, more = await runs.list_steps(svc, thread, run_id, page)
    return json_response(list_json([step_json(s, run, thread.thread_id) for s in rows], more))


@runs_bp.get(f"{_RUN}/steps/<step_id>")
async def retrieve_run_step(thread_id: str, run_id: str, step_id: str) -> Response:
    svc = services()
    caller = await inference_caller()
    _check_include()
    thread = await threads.get_thread(svc.db, caller, thread_id)
    run, step = await runs.get_step(svc, thread, run_id, step_id)
    return json_response(step_json(step, run, thread.thread_id))
