"""Adapter for Replicate's official language models: predictions on
``POST {base}/models/{owner}/{name}/predictions``.

Requests: the model's ``input`` in the common Llama-3 style schema: ``prompt``, ``system_prompt``
(the system/developer messages, joined by blank lines; omitted when there are none, so the
model's default applies), ``max_tokens``, ``temperature``, ``top_p``, ``seed``, the penalties
and ``stop_sequences`` (comma-separated, as Replicate takes it: a stop containing a comma is
refused). A lone user message is the prompt verbatim; a conversation is rendered as a
transcript of ``User: <text>`` / ``Assistant: <text>`` turns separated by blank lines (see
``prompt_of``). Replicate has no tools, images or several choices: those are refused (400
``tools_unsupported`` / ``images_unsupported`` / ``unsupported_parameter``);
``response_format`` and ``reasoning_effort`` are dropped (the domain instructs and validates).

Plain calls send ``Prefer: wait``; a prediction still running when that answer comes is polled
at ``urls.get`` (0.2 s, growing to 2 s) until it ends or the call's deadline passes (then it is
cancelled and the call is an ``UpstreamTimeout``). Follow-up requests (poll, stream, cancel)
use the key that created the prediction and go only to the base URL's host or a sibling
``*.replicate.com`` one. Output is ``"".join(output)``; usage is ``metrics.input_token_count``
/ ``output_token_count``; ``finish_reason`` is ``length`` when the output reached
``max_tokens``, else ``stop`` (Replicate reports no stop reason). A failed or canceled
prediction is a 503.

Streams create the prediction with ``"stream": true`` and read ``urls.stream`` (SSE:
``output`` events carry raw text, ``done`` ends it, ``error`` fails it). Replicate's stream
carries no usage, so at ``done`` the prediction is fetched once for its metrics (bounded) and
the finish and usage chunks are built from them before ``[DONE]``; without metrics no usage
chunk is sent and the domain counts. A client leaving mid-stream cancels the prediction.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import trio

from ringside.errors import (
    InvalidRequest,
    NoActiveProviderKeys,
    RingsideError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ringside.tokens import TokenUsage
from ringside.upstream import shapes
from ringside.upstream.adapter import Exchange, JsonReply, UpstreamStream, parsed_url, read_json
from ringside.upstream.sending import upstream_error
from ringside.upstream.sse import SSEDecoder

_JSON = "application/json"
_RUNNING = frozenset({"starting", "processing"})
_POLL_FIRST_S = 0.2
_POLL_MAX_S = 2.0
_METRICS_WITHIN_S = 2.0
_CANCEL_WITHIN_S = 1.0
_ROLES = {"user": "User", "assistant": "Assistant"}
# What the stream wrapper appends once the prediction's metrics are known (never sent by
# Replicate: an event name of our own, read only by ReplicateDecoder).
METRICS_EVENT = b"ringside-metrics"


def _invalid(message: str, param: str | None, code: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _text(content: Any, index: int) -> str:
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") not in ("text", None):
                raise _invalid(
                    "Replicate language models take text only.",
                    f"messages.{index}.content",
                    "images_unsupported",
                )
    return shapes.content_text(content)


def prompt_of(messages: list[dict[str, Any]]) -> tuple[str, str | None]:
    """(prompt, system prompt) of the conversation."""
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role in ("tool", "function") or msg.get("tool_calls"):
            raise _invalid(
                "Replicate models have no tool calling.", f"messages.{i}", "tools_unsupported"
            )
        text = _text(msg.get("content"), i)
        if role in ("system", "developer"):
            system.append(text)
        else:
            turns.append((_ROLES.get(str(role), "User"), text))
    lone = len(turns) == 1 and turns[0][0] == "User"
    if lone and not turns[0][1].startswith(tuple(f"{r}: " for r in _ROLES.values())):
        prompt = turns[0][1]
    else:
        prompt = "\n\n".join(f"{role}: {text}" for role, text in turns)
    return prompt, "\n\n".join(system) if system else None


def input_of(body: dict[str, Any]) -> dict[str, Any]:
    """The prediction's ``input`` for a validated OpenAI chat body."""
    if body.get("tools") or body.get("functions"):
        raise _invalid("Replicate models have no tool calling.", "tools", "tools_unsupported")
    if body.get("n") not in (None, 1):
        raise _invalid("Replicate returns one choice: 'n' must be 1.", "n", "unsupported_parameter")
    prompt, system = prompt_of(body["messages"])
    out: dict[str, Any] = {"prompt": prompt}
    if system is not None:
        out["system_prompt"] = system
    if (limit := shapes.max_output(body)) is not None:
        out["max_tokens"] = limit
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed"):
        if body.get(name) is not None:
            out[name] = body[name]
    if stops := shapes.stop_sequences(body):
        if any("," in s for s in stops):
            raise _invalid(
                "Replicate takes stop sequences comma-separated: one cannot contain a comma.",
                "stop",
                "unsupported_parameter",
            )
        out["stop_sequences"] = ",".join(stops)
    return out


def _metrics_usage(prediction: dict[str, Any]) -> TokenUsage | None:
    metrics = prediction.get("metrics")
    if not isinstance(metrics, dict):
        return None
    prompt: Any = metrics.get("input_token_count")
    output: Any = metrics.get("output_token_count")
    if not (_is_count(prompt) and _is_count(output)):
        return None
    return TokenUsage(input=prompt, output=output)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _finish(prediction: dict[str, Any], usage: TokenUsage | None) -> str:
    data = prediction.get("input")
    limit = data.get("max_tokens") if isinstance(data, dict) else None
    if usage is not None and isinstance(limit, int) and usage.output >= limit:
        return "length"
    return "stop"


def _output(prediction: dict[str, Any]) -> str:
    output = prediction.get("output")
    if isinstance(output, list):
        return "".join(str(piece) for piece in output)
    return output if isinstance(output, str) else ""


def _failed(x: Exchange, prediction: dict[str, Any]) -> RingsideError:
    status = prediction.get("status")
    detail = prediction.get("error") or status
    return UpstreamUnavailable(f"{x.name} prediction {status}: {detail}")


def _trusted(x: Exchange, url: str) -> httpx.URL:
    """A URL from a prediction, if the provider's key may be sent there."""
    base = httpx.URL(x.provider.base_url).host
    target = httpx.URL(url)
    parent = base.split(".", 1)[1] if base.count(".") >= 2 else base
    if target.host == base or target.host.endswith("." + parent):
        return target
    raise UpstreamError(f"{x.name} answered with an unexpected URL host {target.host!r}.")


class _Prediction:
    """One prediction: follow-up requests with the key that created it."""

    def __init__(self, x: Exchange, data: dict[str, Any], key: str | None) -> None:
        self.x = x
        self.data = data
        self.key = key

    def url(self, name: str) -> httpx.URL:
        urls = self.data.get("urls")
        url = urls.get(name) if isinstance(urls, dict) else None
        if not isinstance(url, str):
            raise UpstreamError(f"{self.x.name} answered without a {name} URL.")
        return _trusted(self.x, url)

    async def request(self, method: str, url: httpx.URL, *, stream: bool = False) -> httpx.Response:
        x = self.x
        headers = {"accept": "text/event-stream" if stream else _JSON}
        if stream:
            headers["cache-control"] = "no-store"

        def build(_leased: str | None) -> httpx.Request:
            # The prediction belongs to the account of the key that created it.
            request_headers = dict(headers)
            if self.key is not None:
                request_headers["authorization"] = f"Bearer {self.key}"
            return x.http.build_request(
                method, url, headers=request_headers, timeout=x.timeout(stream)
            )

        return await x.send(build, stream=stream)

    async def refresh(self) -> None:
        self.data = read_json(self.x, await self.request("GET", self.url("get")))

    async def cancel(self) -> None:
        """Best effort, bounded and shielded: it runs when the call is being abandoned."""
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(_CANCEL_WITHIN_S),
            contextlib.suppress(RingsideError, httpx.HTTPError),
        ):
            await self.request("POST", self.url("cancel"))

    async def wait(self) -> None:
        """Poll until the prediction ends, within the call's deadline."""
        delay = _POLL_FIRST_S
        done = False
        try:
            while self.data.get("status") in _RUNNING:
                if trio.current_time() + delay >= self.x.deadline:
                    raise UpstreamTimeout(f"{self.x.name} did not finish the prediction in time.")
                await trio.sleep(delay)
                delay = min(delay * 1.5, _POLL_MAX_S)
                await self.refresh()
            done = True
        finally:
            if not done:
                await self.cancel()


async def _create(x: Exchange, body: dict[str, Any], stream: bool) -> _Prediction:
    if not x.provider.base_url:
        raise NoActiveProviderKeys(f"Provider {x.name!r} has no base URL.")
    owner, sep, name = x.model.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise _invalid(
            f"Replicate models are named 'owner/name', not {x.model!r}.", "model", "invalid_model"
        )
    url = parsed_url(f"{x.provider.base_url}/models/{owner}/{name}/predictions")
    native: dict[str, Any] = {"input": input_of(body)}
    if stream:
        native["stream"] = True
    content = orjson.dumps(native)
    used: list[str | None] = []

    def build(key: str | None) -> httpx.Request:
        used.append(key)
        headers = {"content-type": _JSON, "accept": _JSON}
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        if not stream:
            headers["prefer"] = "wait"
        return x.http.build_request(
            "POST", url, content=content, headers=headers, timeout=x.timeout(False)
        )

    response = await x.send(build)
    return _Prediction(x, read_json(x, response), used[-1])


class _Shared:
    """What the stream wrapper and its decoder both know."""

    def __init__(self) -> None:
        self.done = False  # a successful ``done`` event was read
        self.ended = False  # the stream is over (done, error or canceled)


class _PredictionStream(httpx.AsyncByteStream):
    """The bytes of ``urls.stream``, then (after ``done``) one metrics event of our own."""

    def __init__(self, prediction: _Prediction, inner: httpx.Response, shared: _Shared) -> None:
        self.prediction = prediction
        self.inner = inner
        self.shared = shared

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for raw in self.inner.aiter_raw():
            yield raw
            if self.shared.ended:  # the decoder has read the last event
                break
        await self.inner.aclose()
        if self.shared.done:
            yield b"event: " + METRICS_EVENT + b"\ndata: " + await self._metrics() + b"\n\n"

    async def _metrics(self) -> bytes:
        p = self.prediction
        with (
            trio.move_on_after(_METRICS_WITHIN_S),
            contextlib.suppress(RingsideError, httpx.HTTPError),
        ):
            await p.refresh()
            while p.data.get("status") in _RUNNING:  # metrics land as the prediction ends
                await trio.sleep(0.05)
                await p.refresh()
        return orjson.dumps({"input": p.data.get("input"), "metrics": p.data.get("metrics")})

    async def aclose(self) -> None:
        await self.inner.aclose()
        if not self.shared.ended:  # the client left: stop paying for the generation
            await self.prediction.cancel()


class ReplicateDecoder:
    """Replicate's stream events → OpenAI chunks (the finish and usage from the metrics event)."""

    def __init__(self, model: str, shared: _Shared) -> None:
        self._sse = SSEDecoder()
        self.state = shapes.StreamState(model)
        self.shared = shared

    def feed(self, raw: bytes) -> list[bytes]:
        out: list[bytes] = []
        for name, data in self._sse.feed_events(raw):
            if name == b"output" and not self.shared.ended:
                if not self.state.role_sent:
                    out.append(self.state.start())
                if data:
                    out.append(self.state.text(data.decode("utf-8", "replace")))
            elif name == b"done":
                self.shared.ended = True
                self.shared.done = _reason(data) is None
            elif name == b"error":
                self.shared.ended = True
            elif name == METRICS_EVENT:
                out += self._finish(data)
        return out

    def _finish(self, data: bytes) -> list[bytes]:
        try:
            prediction = orjson.loads(data)
        except orjson.JSONDecodeError:
            prediction = {}
        prediction = prediction if isinstance(prediction, dict) else {}
        usage = _metrics_usage(prediction)
        out = [] if self.state.role_sent else [self.state.start()]
        out.append(self.state.finish(_finish(prediction, usage)))
        if usage is not None:
            out.append(self.state.usage_chunk(usage))
        return [*out, shapes.DONE]


def _reason(data: bytes) -> str | None:
    try:
        done = orjson.loads(data) if data else {}
    except orjson.JSONDecodeError:
        return "error"
    reason = done.get("reason") if isinstance(done, dict) else None
    return str(reason) if reason else None


class ReplicateAdapter:
    """Replicate's official language models (chat only)."""

    async def complete(self, x: Exchange, body: dict[str, Any]) -> JsonReply:
        prediction = await _create(x, body, False)
        await prediction.wait()
        data = prediction.data
        if data.get("status") != "succeeded":
            raise _failed(x, data)
        usage = _metrics_usage(data)
        message = shapes.message(_output(data))
        out = shapes.completion(x.model, [(message, _finish(data, usage))], usage or TokenUsage())
        if usage is None:
            del out["usage"]  # no metrics: the domain counts
        return JsonReply.of(out)

    async def open_stream(self, x: Exchange, body: dict[str, Any]) -> UpstreamStream:
        prediction = await _create(x, body, True)
        if prediction.data.get("status") in ("failed", "canceled"):
            raise _failed(x, prediction.data)
        try:
            inner = await prediction.request("GET", prediction.url("stream"), stream=True)
        except BaseException:
            await prediction.cancel()
            raise
        shared = _Shared()
        response = httpx.Response(
            200,
            headers=inner.headers,
            stream=_PredictionStream(prediction, inner, shared),
            request=inner.request,
        )
        return UpstreamStream(response, ReplicateDecoder(x.model, shared))

    async def embed(self, x: Exchange, body: dict[str, Any]) -> JsonReply:
        raise InvalidRequest(
            "Replicate models are not offered for embeddings here.",
            param="model",
            code="embeddings_unsupported",
        )

    def error(
        self, provider: str, status: int, body: bytes, headers: httpx.Headers
    ) -> RingsideError:
        return upstream_error(provider, status, body, headers)  # RFC 7807: {"detail": ...}


ADAPTER = ReplicateAdapter()
