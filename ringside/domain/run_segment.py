"""One model call of a run (a *segment*): reserved by the request that starts it, executed by
the RunExecutor.

A segment starts at run creation and at each ``submit_tool_outputs``, and ends the run
``completed``, ``incomplete`` (``max_completion_tokens`` / ``max_prompt_tokens``),
``requires_action`` (the model called tools), ``failed`` or ``cancelled``. The call always
reads the upstream *stream*, so streaming and polled runs share one code path; what differs
is the sink its events go to. The call is settled exactly once, in a bounded shield, with the
usage seen so far when it was cut short.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import trio

from ringside.domain import billing, cascade, chat, structured_output, threads
from ringside.domain.modelrefs import ResolvedModel
from ringside.domain.run_calls import Segment
from ringside.domain.run_events import (
    TERMINAL,
    Sink,
    error_data,
    run_event,
    run_json,
    step_json,
    text_delta,
    tool_call_delta,
)
from ringside.domain.threads import MessageRow
from ringside.errors import (
    RateLimited,
    RingsideError,
    ServiceUnavailable,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ringside.ids import new_id
from ringside.services import Services
from ringside.store import run_segments as segment_store
from ringside.store import run_steps as step_store
from ringside.store import runs as store
from ringside.store.bridge import TRANSIENT_ERRORS, InterfaceError, PostgresError
from ringside.store.run_steps import StepRow
from ringside.store.runs import Ending, RunRow
from ringside.tokens import TokenUsage

log = logging.getLogger("ringside.runs")

# Bounded shield for a segment's last writes (settle, rows, webhook): a cancelled or stopping
# segment still ends its run; a run not ended in time is ended by the sweeper at expiry.
_FINISH_DEADLINE_S = 10.0


# --- executing -----------------------------------------------------------------------------


class _Output:
    """What the model said so far: text, tool calls (by index), usage, finish reason."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.chars = 0
        self.usage: TokenUsage | None = None
        self.finish: str | None = None
        self.done = False

    def feed(self, payload: bytes) -> list[tuple[str, Any]]:
        """The chunk's news: ("text", str) and ("tool", delta) items."""
        if payload == b"[DONE]":
            self.done = True
            return []
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(chunk, dict):
            return []
        if isinstance(chunk.get("usage"), dict):
            self.usage = TokenUsage.from_openai(chunk["usage"])
        news: list[tuple[str, Any]] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason"):
                self.finish = str(choice["finish_reason"])
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                self.text.append(content)
                self.chars += len(content)
                news.append(("text", content))
            for raw in delta.get("tool_calls") or ():
                if isinstance(raw, dict):
                    news.append(("tool", self._tool(raw)))
        return news

    def _tool(self, raw: dict[str, Any]) -> dict[str, Any]:
        index = raw.get("index", 0)
        fn = raw.get("function") or {}
        call = self.calls.get(index)
        delta: dict[str, Any] = {"index": index, "type": "function"}
        if call is None:
            call = {"id": raw.get("id") or new_id("call"), "name": fn.get("name") or "", "args": ""}
            self.calls[index] = call
            delta["id"] = call["id"]
            delta["function"] = {"name": call["name"], "arguments": "", "output": None}
        arguments = fn.get("arguments")
        if isinstance(arguments, str) and arguments:
            call["args"] += arguments
            self.chars += len(arguments)
            delta.setdefault("function", {})["arguments"] = arguments
        return delta

    def tool_calls(self, with_output: bool) -> list[dict[str, Any]]:
        out = []
        for index in sorted(self.calls):
            call = self.calls[index]
            fn: dict[str, Any] = {"name": call["name"], "arguments": call["args"]}
            if with_output:
                fn["output"] = None
            out.append({"id": call["id"], "type": "function", "function": fn})
        return out


class _Run:
    """A segment being executed: its rows, its events, its ending."""

    def __init__(self, svc: Services, seg: Segment, sink: Sink) -> None:
        self.svc = svc
        self.seg = seg
        self.sink = sink
        self.run = seg.run
        self.out = _Output()
        self.message: MessageRow | None = None
        self.message_step: StepRow | None = None
        self.tool_step: StepRow | None = None
        self.target: ResolvedModel | None = None

    @property
    def thread_id(self) -> str:
        return self.seg.thread.thread_id

    def emit_step(self, name: str, step: StepRow) -> None:
        self.sink(name, step_json(step, self.run, self.thread_id))

    async def _new_step(self, kind: str, details: dict[str, Any]) -> StepRow:
        step = await step_store.insert_step(
            self.svc.db,
            id=new_id("step"),
            run_id=self.run.id,
            type=kind,
            details=details,
            request_id=self.seg.call.ctx.request_id,
        )
        self.emit_step("thread.run.step.created", step)
        self.emit_step("thread.run.step.in_progress", step)
        return step

    async def on_text(self, text: str) -> None:
        if self.message is None:
            with trio.CancelScope(shield=True):  # never a row we do not know of
                message, step = await threads.open_run_message(
                    self.svc.db,
                    self.seg.thread,
                    assistant_id=self.run.assistant_id,
                    run_id=self.run.id,
                    step_id=new_id("step"),
                    request_id=self.seg.call.ctx.request_id,
                )
            self.message, self.message_step = message, step
            self.emit_step("thread.run.step.created", step)
            self.emit_step("thread.run.step.in_progress", step)
            shown = threads.message_json(message)
            self.sink("thread.message.created", shown)
            self.sink("thread.message.in_progress", shown)
        self.sink("thread.message.delta", text_delta(self.message.id, text))

    async def on_tool(self, delta: dict[str, Any]) -> None:
        if self.tool_step is None:
            with trio.CancelScope(shield=True):
                self.tool_step = await self._new_step(
                    "tool_calls", {"type": "tool_calls", "tool_calls": []}
                )
        assert self.tool_step is not None
        self.sink("thread.run.step.delta", tool_call_delta(self.tool_step.id, delta))

    async def call_model(self) -> Ending:
        """The upstream stream, read to its end; raises RingsideError on provider failure."""
        call = self.seg.call
        assert call.req is not None
        assert call.attempts is not None
        req = call.req

        def open_for(t: ResolvedModel) -> Any:
            # A model that cannot honour response_format itself is instructed, and its answer
            # checked at the end (a stream cannot be re-prompted), as for chat streams.
            how = structured_output.enforcement(req.output, t)
            body = None if how is None else structured_output.instructed(req.body, how)
            return chat.open_upstream_stream(self.svc, t, req, call.ctx.request_id, body)

        self.target, upstream = await cascade.walk(call.attempts, open_for)
        try:
            async for chunk in upstream.response.aiter_raw():
                for payload in upstream.decoder.feed(chunk):
                    for kind, news in self.out.feed(payload):
                        await (self.on_text(news) if kind == "text" else self.on_tool(news))
        except httpx.TimeoutException:
            raise UpstreamTimeout("The provider stopped streaming.") from None
        except httpx.HTTPError:
            pass  # ended early: judged below
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await upstream.aclose()
        if not self.out.done:
            raise UpstreamUnavailable("The provider ended the stream before it was complete.")
        if self.out.calls:
            action = {
                "type": "submit_tool_outputs",
                "submit_tool_outputs": {"tool_calls": self.out.tool_calls(False)},
            }
            return Ending("requires_action", required_action=action)
        if self.out.finish == "length":
            return Ending("incomplete", incomplete_details={"reason": "max_completion_tokens"})
        output = req.output
        if output is not None and structured_output.enforcement(output, self.target) is not None:
            problem = output.problem("".join(self.out.text))
            if problem is not None:
                message = (
                    "response_schema_validation_failed: the answer does not match"
                    f" response_format ({problem})."
                )
                return Ending("failed", last_error={"code": "server_error", "message": message})
        return Ending("completed")

    def usage(self) -> tuple[TokenUsage, str]:
        if self.out.usage is not None:
            return self.out.usage, "upstream"
        req = self.seg.call.req
        if req is None or (self.target is None and not self.out.chars):
            return TokenUsage(), "none"
        return req.counted_usage(self.out.chars), "counted"


def failure(exc: RingsideError) -> Ending:
    code = "rate_limit_exceeded" if isinstance(exc, RateLimited) else "server_error"
    return Ending("failed", last_error={"code": code, "message": f"{exc.code}: {exc.message}"})


_STOPPED = Ending("failed", last_error={"code": "server_error", "message": "The gateway stopped."})
_BROKEN = Ending("failed", last_error={"code": "server_error", "message": "Internal error."})
_MESSAGE_ENDS: dict[str, tuple[str, dict[str, str] | None]] = {
    "completed": ("completed", None),
    "requires_action": ("completed", None),
    "incomplete": ("incomplete", {"reason": "max_tokens"}),
    "cancelled": ("incomplete", {"reason": "run_cancelled"}),
    "failed": ("incomplete", {"reason": "run_failed"}),
    "expired": ("incomplete", {"reason": "run_expired"}),
}
_STEP_ENDS = {"completed": "completed", "requires_action": "completed", "incomplete": "completed"}
# Tool calls the run will never wait for (cut short by a limit, a cancel, ...).
_TOOL_STEP_ENDS = {"failed": "failed", "expired": "expired"}


async def execute(
    svc: Services, seg: Segment, sink: Sink, register: Callable[[trio.CancelScope], None]
) -> RunRow | None:
    """Execute the segment and end it (rows, run status, webhook, settlement), however it
    ends: cancelled through ``register``'s scope (cancel, client gone), failed, or stopped by
    the gateway's shutdown. Never raises but ``trio.Cancelled``; None when the database did
    not take the run's end (an ``error`` event then, and the sweeper ends it at expiry)."""
    work = _Run(svc, seg, sink)
    ending: Ending | None = None
    error: RingsideError | None = None
    for name, data in seg.prelude:
        sink(name, data)
    try:
        with trio.CancelScope() as scope:
            register(scope)
            started = await store.begin_segment(svc.db, seg.run.id, svc.process_id)
            if started is None:  # cancelled (or expired) before it began
                ending = Ending("cancelled")
            else:
                work.run = started
                sink("thread.run.in_progress", run_json(started, work.thread_id))
                if seg.call.req is None:
                    ending = Ending(
                        "incomplete", incomplete_details={"reason": seg.call.incomplete}
                    )
                else:
                    try:
                        ending = await work.call_model()
                    except RingsideError as exc:
                        error, ending = exc, failure(exc)
        if scope.cancelled_caught:
            ending = Ending("cancelled")
    except trio.Cancelled:
        ending = _STOPPED
        raise
    except Exception:
        log.exception("run segment failed, run_id=%s", seg.run.id)
        ending = _BROKEN
    finally:
        final = None
        with trio.CancelScope(shield=True), trio.move_on_after(_FINISH_DEADLINE_S):
            try:
                final = await _finish(work, ending or _BROKEN, error)
            except (*TRANSIENT_ERRORS, PostgresError, InterfaceError) as exc:
                # The run stays active until the sweeper expires it; the hold was settled.
                log.error("could not end run %s: %s", seg.run.id, exc)
        if final is None:
            gone = ServiceUnavailable("The run's outcome could not be recorded; retry later.")
            sink("error", error_data(gone, seg.call.ctx.request_id))
    return final


def _outcome(work: _Run, ending: Ending, error: RingsideError | None) -> billing.Outcome | None:
    call = work.seg.call
    if call.attempts is None:
        return None
    usage, source = work.usage()
    target = work.target or cascade.last(call.attempts)
    if ending.status == "cancelled":
        return billing.Outcome(target, usage, source, "client_aborted", 499)
    if error is not None:
        status = "timeout" if isinstance(error, UpstreamTimeout) else "upstream_error"
        return billing.Outcome(target, usage, source, status, error.status)
    if ending is _STOPPED or ending is _BROKEN:
        return billing.Outcome(target, usage, source, "internal_error", 500)
    return billing.Outcome(target, usage, source, "ok", 200)


async def _finish(work: _Run, ending: Ending, error: RingsideError | None) -> RunRow:
    """Settle the call and end the segment, in one statement (the run's ending and its billing
    commit together); the run's rows alone, separately, when its run ended meanwhile."""
    svc, call = work.svc, work.seg.call
    outcome = _outcome(work, ending, error)
    usage = outcome.usage if outcome is not None else TokenUsage()
    svc.limits.settle_soon(call.admission, usage.total)
    end = _end_of(work, ending, usage)
    if call.hold is None or outcome is None:
        ended = await segment_store.end(svc.db, end, None)
    else:
        settlement, _ = billing.settlement(svc.pricing, call.hold, outcome)
        try:
            ended = await segment_store.end(svc.db, end, settlement)
        except PostgresError as exc:
            # Whichever part the database refused, the other must still happen: the
            # settlement on its own (its failure logged; the settlement worker then takes
            # the hold), then the run's end without it.
            log.error("run %s: could not end and settle together: %s", work.run.id, exc)
            await billing.settle(svc.db, svc.pricing, call.hold, outcome)
            ended = await segment_store.end(svc.db, end, None)
    if ended is not None:
        final, message, steps = ended.run, ended.message, ended.steps
    else:
        final, message, steps = await _finish_late(work, ending, usage)
    work.run = final
    if message is not None:
        kind = "completed" if message.status == "completed" else "incomplete"
        work.sink(f"thread.message.{kind}", threads.message_json(message))
    for step in steps:
        if step.status != "in_progress":
            work.emit_step(f"thread.run.step.{step.status}", step)
    work.sink(run_event(final.status), run_json(final, work.thread_id))
    return final


async def _finish_late(
    work: _Run, ending: Ending, usage: TokenUsage
) -> tuple[RunRow, MessageRow | None, list[StepRow]]:
    """The run ended without the segment (the sweeper expired it): its usage is added and its
    message keeps what the model wrote; the run is left as it is."""
    async with work.svc.db.transaction() as conn:
        final = await store.finish_segment(conn, work.run.id, ending, usage.input, usage.output)
        if final is None:
            final = await store.select_run(conn, work.run.id, work.run.conversation_id)
            assert final is not None
            if final.status == "expired":
                ending = Ending("expired")
        elif final.status in TERMINAL:  # a race lost twice: ended here after all
            await store.insert_run_event(conn, final, work.thread_id, new_id("evt"))
        message, steps = await segment_store.end_late(conn, _end_of(work, ending, usage))
    return final, message, steps


def _end_of(work: _Run, ending: Ending, usage: TokenUsage) -> segment_store.SegmentEnd:
    """How the segment leaves its run, message and steps. The call's usage goes to the step
    that ended it (the tool calls, else the message)."""
    status = ending.status
    message = None
    steps: list[segment_store.StepEnd] = []
    owner = work.tool_step or work.message_step
    if work.message is not None and work.message_step is not None:
        text = "".join(work.out.text)
        content = [{"type": "text", "text": {"value": text, "annotations": []}}] if text else []
        message_status, details = _MESSAGE_ENDS[status]
        message = segment_store.MessageEnd(work.message, content, message_status, details)
        mine = owner is work.message_step
        steps.append(
            segment_store.StepEnd(
                work.message_step,
                status=_STEP_ENDS.get(status, status),
                details=work.message_step.step_details,
                last_error=None,
                prompt_tokens=usage.input if mine else 0,
                completion_tokens=usage.output if mine else 0,
            )
        )
    if work.tool_step is not None:
        waiting = status == "requires_action"
        steps.append(
            segment_store.StepEnd(
                work.tool_step,
                status="in_progress" if waiting else _TOOL_STEP_ENDS.get(status, "cancelled"),
                details={"type": "tool_calls", "tool_calls": work.out.tool_calls(True)},
                last_error=ending.last_error if status == "failed" else None,
                prompt_tokens=usage.input,
                completion_tokens=usage.output,
            )
        )
    return segment_store.SegmentEnd(
        run_id=work.run.id,
        thread_id=work.thread_id,
        ending=ending,
        prompt_tokens=usage.input,
        completion_tokens=usage.output,
        message=message,
        steps=steps,
        close_others=status if status in ("cancelled", "failed") else None,
        event_id=new_id("evt"),
    )
