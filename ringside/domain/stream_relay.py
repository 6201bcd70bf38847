"""Relaying an upstream SSE stream to the client in OpenAI's exact framing, settling it once.

With an enforced ``response_format`` (``structured_output.StreamCheck``) the chunks still go
through as they come; content that cannot start a valid document ends the stream at once, and
a complete answer that is invalid ends it with a ``response_schema_validation_failed`` error
event instead of ``[DONE]``. Either way the call is billed for what was generated."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import httpx
import orjson
import trio

from ringside.domain import billing
from ringside.domain.chat_request import ChatRequest
from ringside.domain.metering import CallContext
from ringside.domain.modelrefs import ResolvedModel
from ringside.domain.structured_output import StreamCheck
from ringside.errors import RingsideError, UpstreamTimeout, UpstreamUnavailable
from ringside.services import Services
from ringside.tokens import TokenUsage
from ringside.upstream.adapter import UpstreamStream
from ringside.upstream.shapes import choices_text_chars, without_null_usage

# Called once when a stream ends: (outcome, http status, usage).
Finished = Callable[[str, int, TokenUsage], None]


class StreamRelay:
    """Relays upstream SSE to the client in OpenAI's exact framing and settles the call once.

    Quart calls ``aclose`` when the body ends or the client disconnects (the handler is then
    cancelled, which aborts the upstream read); ``aclose`` settles for the usage seen so far.
    """

    def __init__(
        self,
        svc: Services,
        ctx: CallContext,
        req: ChatRequest,
        target: ResolvedModel,
        stream: UpstreamStream,
        on_finish: Finished,
        hold: billing.Hold,
        check: StreamCheck | None = None,
    ) -> None:
        self._svc = svc
        self._ctx = ctx
        self._req = req
        self._target = target
        self._response = stream.response
        self._on_finish = on_finish
        self._hold = hold
        self._outcome: billing.Outcome | None = None
        self._reads = stream.response.aiter_raw()
        self._decoder = stream.decoder
        self._usage: TokenUsage | None = None
        self._output_chars = 0
        self._status: str | None = None  # set when the stream ended: "ok" or a failure
        self._check = check
        self._complete = False  # the upstream sent [DONE]
        self._settled = False
        self._recorder: Callable[[bytes], Awaitable[None]] | None = None
        self._sent: list[bytes] = []
        self._started = False
        svc.unstarted_streams.add(self)

    def record(self, recorder: Callable[[bytes], Awaitable[None]]) -> None:
        """Keep every byte sent and hand them to ``recorder`` once the stream has ended and
        been settled (an idempotent request stores its answer for replay)."""
        self._recorder = recorder

    def __aiter__(self) -> StreamRelay:
        return self

    async def __anext__(self) -> bytes:
        if not self._started:
            self._started = True
            self._svc.unstarted_streams.discard(self)
        try:
            return await self._next()
        except StopAsyncIteration:
            raise
        except Exception:
            self._finish("internal_error", 500)  # a bug, not the client leaving
            raise

    async def _next(self) -> bytes:
        while self._status is None:
            try:
                chunk = await anext(self._reads, None)
            except httpx.TimeoutException:  # the idle timeout: see Exchange.timeout
                return self._fail("timeout", UpstreamTimeout("The provider stopped streaming."))
            except httpx.HTTPError:
                chunk = None
            if chunk is None:
                return self._fail(
                    "upstream_error",
                    UpstreamUnavailable("The provider ended the stream before it was complete."),
                )
            out = []
            for payload in self._decoder.feed(chunk):
                if payload == b"[DONE]":
                    self._complete = True
                    out.append(self._done())
                    break
                shown = self._observe(payload)
                if shown is not None:
                    out.append(b"data: " + shown + b"\n\n")
                if self._check is not None and self._check.problem is not None:
                    out.append(self._error_event("upstream_error", self._check.error()))
                    break
            if out:
                sent = b"".join(out)
                if self._recorder is not None:
                    self._sent.append(sent)
                return sent
        if self._complete:
            # Read the upstream body to its end so its connection goes back to the pool (a
            # stream closed unread costs a new TCP connection on the next call).
            with trio.move_on_after(1.0), contextlib.suppress(httpx.HTTPError):
                async for _ in self._reads:
                    pass
        await self.aclose()
        raise StopAsyncIteration

    def _observe(self, payload: bytes) -> bytes | None:
        """Take usage and output size from a chunk; return the chunk as the client must see
        it: as the provider would have sent it had the gateway not asked for usage (None for
        the usage-only chunk, ``"usage": null`` removed from the others)."""
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return payload
        if not isinstance(chunk, dict):
            return payload
        choices = chunk.get("choices")
        self._output_chars += choices_text_chars(choices, "delta")
        if self._check is not None:
            self._check.feed(choices)
        if "usage" not in chunk:
            return payload
        usage = chunk["usage"]
        if isinstance(usage, dict):
            self._usage = TokenUsage.from_openai(usage)
            return payload if choices or self._req.include_usage else None
        if usage is None and not self._req.include_usage:
            return without_null_usage(payload)
        return payload

    def _done(self) -> bytes:
        """The end of a complete upstream stream: ``[DONE]``, or the error event of an answer
        that fails the enforced ``response_format``."""
        if self._check is not None and self._check.finish() is not None:
            return self._error_event("upstream_error", self._check.error())
        self._status = "ok"
        return b"data: [DONE]\n\n"

    def _fail(self, status: str, error: RingsideError) -> bytes:
        sent = self._error_event(status, error)
        if self._recorder is not None:
            self._sent.append(sent)
        return sent

    def _error_event(self, status: str, error: RingsideError) -> bytes:
        """End the stream with an OpenAI-style error event (no ``[DONE]`` follows)."""
        self._status = status
        self._finish(status, error.status)
        return b"data: " + orjson.dumps(error.envelope(self._ctx.request_id)) + b"\n\n"

    def _finish(self, status: str, http_status: int) -> None:
        if self._outcome is not None:
            return
        if self._usage is not None:
            usage, source = self._usage, "upstream"
        else:
            usage, source = self._req.counted_usage(self._output_chars), "counted"
        self._outcome = billing.Outcome(self._target, usage, source, status, http_status)
        self._on_finish(status, http_status, usage)

    async def aclose(self) -> None:
        self._svc.unstarted_streams.discard(self)
        if self._outcome is None:
            # Not finished by [DONE] or by an upstream failure: the client went away.
            ok = self._status == "ok"
            self._finish("ok" if ok else "client_aborted", 200 if ok else 499)
        assert self._outcome is not None
        outcome = self._outcome
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await self._reads.aclose()  # type: ignore[attr-defined]
            await self._response.aclose()
        if not self._settled:
            self._settled = True
            await billing.settle(self._svc.db, self._svc.pricing, self._hold, outcome)
            if self._recorder is not None:
                await self._recorder(b"".join(self._sent))
