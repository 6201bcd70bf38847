"""The simulated Replicate HTTP API, for official language models.

* ``POST /replicate/v1/models/{owner}/{name}/predictions`` ``{"input": {...}, "stream"?}``
  creates a prediction (201). ``Prefer: wait`` answers it finished, else ``starting``.
* ``GET /replicate/v1/predictions/{id}`` reads it (a prediction not yet finished finishes when
  read); ``POST .../{id}/cancel`` cancels it.
* ``GET /replicate/v1/stream/{id}`` (the prediction's ``urls.stream``, absolute, built from the
  request's Host) streams it: SSE ``output`` events (raw text, one ``data:`` line per line of
  text), then ``done`` (``{}``), each with an ``id:``; it ends the prediction.

``Authorization: Bearer`` is required (``sk-bad`` refused); errors are RFC 7807 problem bodies
(``{"title", "detail", "status"}``); an input that does not fit the Llama-3 style schema
(``prompt`` required, typed fields, unknown fields refused) is a 422.

Replies come from ``completion.make_plan`` on the OpenAI conversation the input describes (the
adapter's transcript format: a lone prompt is one user message; ``User: `` / ``Assistant: ``
turns separated by blank lines otherwise; ``system_prompt`` a system message), so texts and
counts match the OpenAI-wire simulator; ``metrics`` carries ``input_token_count`` and
``output_token_count`` (none with ``no_usage``). Directives: ``status`` (an error answer),
``delay``, ``hang``, ``chunk_delay``, ``stream_error_after``, and Replicate's own
``replicate_status``: ``"starting"``/``"processing"`` make the first answer (even with
``Prefer: wait``) unfinished so callers poll, ``"failed"``/``"canceled"`` end it so.
Predictions live in ``PREDICTIONS`` (module level, by id).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import trio

from .asgi import (
    SSE_HEADERS,
    Flow,
    Receive,
    Send,
    extra_headers,
    request_id,
    send_json,
    watch_disconnect,
)
from .completion import Plan, SimError, dumps, make_plan, rand_id
from .native import NativeRequest

if TYPE_CHECKING:
    from .app import Simulator

BASE: Final = "/replicate/v1"
BAD_KEY: Final = "sk-bad"
_CREATE: Final = re.compile(r"^/replicate/v1/models/([^/]+)/([^/]+)/predictions$")
_GET: Final = re.compile(r"^/replicate/v1/predictions/([a-z0-9]+)(/cancel)?$")
_STREAM: Final = re.compile(r"^/replicate/v1/stream/([a-z0-9]+)$")
_TURN: Final = re.compile(r"(?:^|\n\n)(User|Assistant): ")
_INPUT_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "prompt": (str,),
    "system_prompt": (str,),
    "max_tokens": (int,),
    "max_new_tokens": (int,),
    "min_tokens": (int,),
    "temperature": (int, float),
    "top_p": (int, float),
    "top_k": (int,),
    "presence_penalty": (int, float),
    "frequency_penalty": (int, float),
    "length_penalty": (int, float),
    "stop_sequences": (str,),
    "seed": (int,),
    "prompt_template": (str,),
    "log_performance_metrics": (bool,),
}
_RUNNING: Final = ("starting", "processing")


@dataclass
class Prediction:
    id: str
    model: str
    input: dict[str, Any]
    plan: Plan
    stream: bool
    status: str = "starting"
    created_at: str = "2025-01-01T00:00:00.000000Z"
    canceled: bool = field(default=False)

    def finish(self) -> None:
        if self.status in _RUNNING:
            wanted = self.plan.directive.get("replicate_status")
            self.status = wanted if wanted in ("failed", "canceled") else "succeeded"

    def body(self, host: str) -> dict[str, Any]:
        done = self.status == "succeeded"
        metrics: dict[str, Any] = {"predict_time": 0.01} if done else {}
        if done and self.plan.usage is not None:
            metrics["input_token_count"] = self.plan.usage["prompt_tokens"]
            metrics["output_token_count"] = self.plan.usage["completion_tokens"]
        api = f"http://{host}{BASE}/predictions/{self.id}"
        urls = {"get": api, "cancel": api + "/cancel", "web": f"https://replicate.com/p/{self.id}"}
        if self.stream:
            urls["stream"] = f"http://{host}{BASE}/stream/{self.id}"
        return {
            "id": self.id,
            "model": self.model,
            "version": "hidden",
            "input": self.input,
            "logs": "",
            "output": list(self.plan.tokens) if done else None,
            "data_removed": False,
            "error": "simulated prediction failure" if self.status == "failed" else None,
            "status": self.status,
            "created_at": self.created_at,
            "started_at": self.created_at if self.status != "starting" else None,
            "completed_at": self.created_at if self.status not in _RUNNING else None,
            "metrics": metrics,
            "urls": urls,
        }


PREDICTIONS: dict[str, Prediction] = {}


class ReplicateError(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail

    def body(self) -> bytes:
        return dumps({"title": self.title, "detail": self.detail, "status": self.status})


def _check_auth(headers: dict[str, str]) -> None:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip() or key.strip() == BAD_KEY:
        raise ReplicateError(
            401, "Unauthenticated", "You did not pass a valid authentication token"
        )


def _invalid(detail: str) -> ReplicateError:
    return ReplicateError(422, "Input validation failed", f"- input: {detail}\n")


def messages_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The OpenAI conversation a prediction's input describes (the adapter's transcript)."""
    messages: list[dict[str, Any]] = []
    if isinstance(data.get("system_prompt"), str):
        messages.append({"role": "system", "content": data["system_prompt"]})
    prompt: str = data["prompt"]
    parts = _TURN.split(prompt)
    if len(parts) < 3 or parts[0]:
        messages.append({"role": "user", "content": prompt})
        return messages
    for role, text in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": role.lower(), "content": text})
    return messages


def _plan(sim: Simulator, model: str, body: Any) -> tuple[dict[str, Any], Plan]:
    if not isinstance(body, dict):
        raise ReplicateError(400, "Bad request", "The request body must be a JSON object.")
    if unknown := sorted(set(body) - {"input", "stream", "webhook", "webhook_events_filter"}):
        raise ReplicateError(422, "Invalid request", f"Unknown field: {unknown[0]}")
    data = body.get("input")
    if not isinstance(data, dict):
        raise _invalid("input is required")
    for name, value in data.items():
        kinds = _INPUT_TYPES.get(name)
        if kinds is None:
            raise _invalid(f"Additional property {name} is not allowed")
        if isinstance(value, bool) is not (kinds == (bool,)) or not isinstance(value, kinds):
            raise _invalid(f"{name}: Invalid type. Expected: {kinds[0].__name__}")
    if not isinstance(data.get("prompt"), str) or not data["prompt"]:
        raise _invalid("prompt is required")
    openai: dict[str, Any] = {"model": model, "messages": messages_of(data)}
    limit = data.get("max_tokens", data.get("max_new_tokens"))
    if limit is not None:
        openai["max_tokens"] = limit
    if data.get("stop_sequences"):
        openai["stop"] = data["stop_sequences"].split(",")
    try:
        return data, make_plan(openai, None, sim.defaults)
    except SimError as err:
        raise ReplicateError(err.status, "Invalid request", err.message) from None


async def handle(sim: Simulator, request: NativeRequest, receive: Receive, send: Send) -> None:
    host = request.headers.get("host", "127.0.0.1")
    try:
        _check_auth(request.headers)
        if (m := _CREATE.match(request.path)) and request.method == "POST":
            data, plan = _plan(sim, f"{m[1]}/{m[2]}", request.json)
            stream = isinstance(request.json, dict) and request.json.get("stream") is True
            prediction = Prediction(rand_id("")[:26], f"{m[1]}/{m[2]}", data, plan, stream)
            await _create(sim, prediction, request, receive, send, host)
            return
        if (m := _GET.match(request.path)) and request.method == ("POST" if m[2] else "GET"):
            prediction = _find(m[1])
            if m[2]:
                if prediction.status in _RUNNING:
                    prediction.status, prediction.canceled = "canceled", True
            elif prediction.plan.directive.get("replicate_status") in _RUNNING:
                prediction.plan.directive.pop("replicate_status")  # unfinished once only
                prediction.status = "processing"
            else:
                prediction.finish()
            await send_json(send, 200, dumps(prediction.body(host)))
            return
        if (m := _STREAM.match(request.path)) and request.method == "GET":
            prediction = _find(m[1])
            if "text/event-stream" not in request.headers.get("accept", ""):
                raise ReplicateError(406, "Not acceptable", "Accept text/event-stream.")
            await _stream(sim, prediction, receive, send)
            return
        raise ReplicateError(404, "Not found", "The requested resource could not be found.")
    except ReplicateError as err:
        await send_json(send, err.status, err.body())


def _find(prediction_id: str) -> Prediction:
    prediction = PREDICTIONS.get(prediction_id)
    if prediction is None:
        raise ReplicateError(404, "Not found", "The requested resource could not be found.")
    return prediction


async def _create(
    sim: Simulator,
    prediction: Prediction,
    request: NativeRequest,
    receive: Receive,
    send: Send,
    host: str,
) -> None:
    d = prediction.plan.directive
    flow = Flow(sim, False)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_disconnect, receive, nursery.cancel_scope)
            if d.get("hang"):
                await trio.sleep_forever()
            if (delay := float(d.get("delay") or 0)) > 0:
                await trio.sleep(delay)
            status = int(d.get("status") or 201)
            flow.finish()
            if status >= 400:
                over = d.get("error") if isinstance(d.get("error"), dict) else {}
                detail = str(over.get("message", f"Simulated upstream error (HTTP {status})."))
                error = ReplicateError(status, "Simulated error", detail)
                await send_json(send, status, error.body(), extra_headers(d))
            else:
                PREDICTIONS[prediction.id] = prediction
                wanted = d.get("replicate_status")
                waits = "wait" in request.headers.get("prefer", "")
                if wanted in _RUNNING:
                    d.pop("replicate_status")  # unfinished once only
                    prediction.status = str(wanted)
                elif waits and not prediction.stream:
                    prediction.finish()
                await send_json(send, 201, dumps(prediction.body(host)), extra_headers(d))
            nursery.cancel_scope.cancel()
    finally:
        flow.abandon()


def _output_event(n: int, text: str) -> bytes:
    data = b"".join(b"data: " + line.encode() + b"\n" for line in text.split("\n"))
    return b"event: output\nid: " + str(n).encode() + b"\n" + data + b"\n"


async def _stream(sim: Simulator, prediction: Prediction, receive: Receive, send: Send) -> None:
    d = prediction.plan.directive
    chunk_delay = float(d.get("chunk_delay") or 0)
    raw_after = d.get("stream_error_after")
    error_after = None if raw_after is None else int(raw_after)
    flow = Flow(sim, True)
    prediction.status = "processing"
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_disconnect, receive, nursery.cancel_scope)
            headers = [*SSE_HEADERS, request_id()]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for n, token in enumerate(prediction.plan.tokens):
                if error_after is not None and n >= error_after:
                    flow.finish()  # a deliberate abort: hypercorn drops the connection
                    nursery.cancel_scope.cancel()
                    return
                if n and chunk_delay > 0:
                    await trio.sleep(chunk_delay)
                event = _output_event(n, token)
                await send({"type": "http.response.body", "body": event, "more_body": True})
            prediction.finish()
            ok = prediction.status == "succeeded"
            last = b"{}" if ok else dumps({"reason": "error"})
            if not ok:
                detail = dumps({"detail": "simulated prediction failure"})
                failure = b"event: error\nid: e\ndata: " + detail + b"\n\n"
                await send({"type": "http.response.body", "body": failure, "more_body": True})
            flow.finish()
            done = b"event: done\nid: d\ndata: " + last + b"\n\n"
            await send({"type": "http.response.body", "body": done, "more_body": False})
            nursery.cancel_scope.cancel()
    except Exception:  # sending after the client left: the stream is over
        return
    finally:
        flow.abandon()
