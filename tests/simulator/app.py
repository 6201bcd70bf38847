"""The simulator as a bare ASGI 3 application (no framework: it is the benchmark's fast upstream).

Every HTTP request is recorded in ``Simulator.received`` (unless ``record=False``). Streams and
slow answers (``delay``/``hang`` directives) run next to a task watching ``receive()`` for
``http.disconnect``, so a client that goes away cancels the answer and is counted in
``cancelled_streams`` / ``cancelled_requests``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs

import trio

from .asgi import (
    GUARDED_KEYS,
    SSE_HEADERS,
    Flow,
    Receive,
    Scope,
    Send,
    extra_headers,
    request_id,
    send_json,
    watch_disconnect,
)
from .completion import Plan, SimError, dumps, error_type_for, loads, make_plan
from .embedding import EmbeddingPlan, embedding_body, make_embedding_plan
from .native import NativeRequest, native_handler
from .providers import (
    AZURE,
    AZURE_DEPLOYMENT_KINDS,
    AZURE_DEPLOYMENTS_PREFIX,
    CHAT,
    CHAT_SUFFIX,
    EMBEDDINGS_SUFFIX,
    MODELS,
    NO_AUTH_PROVIDERS,
    PROVIDER_BASES,
    ROUTES,
    models_payload,
)
from .render import DONE, ChunkWriter, completion_body

_MODELS_BODIES: Final = {p: dumps(models_payload(p)) for p in PROVIDER_BASES}
_BAD_JSON: Final = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)
_NO_KEY: Final = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_NO_AZURE_KEY: Final = (
    "Access denied due to missing subscription key. Make sure to include subscription key "
    "when making requests to an API."
)
BAD_KEY: Final = "sk-bad"
_UNPARSED: Final = object()


@dataclass(frozen=True, slots=True)
class Received:
    """One HTTP request as the simulator saw it."""

    provider: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    json: Any | None


class Simulator:
    """ASGI app faking OpenAI-compatible Chat Completions and Embeddings providers (see the
    package docstring).

    ``defaults`` is a directive dict applied to every chat and embeddings request (request
    directives win),
    e.g. ``{"delay": 0.05}`` for a benchmark upstream with latency.
    """

    def __init__(self, *, record: bool = True, defaults: dict[str, Any] | None = None) -> None:
        self.received: list[Received] = []
        self.record = record
        self.defaults = defaults
        self.requests = 0  # HTTP requests seen (counted even when record is False)
        self.open_streams = 0  # streams currently being sent
        self.cancelled_streams = 0  # streams whose client went away before the end
        self.cancelled_requests = 0  # same, for any guarded answer (streams, delay, hang)
        # Keys answered 429 (with this Retry-After, in seconds) while listed: a throttled key.
        self.throttled_keys: dict[str, float] = {}
        # `flaky` directives seen, by their id (see check_flaky).
        self.flaky_seen: dict[str, int] = {}

    def clear(self) -> None:
        """Forget recorded requests and reset the counters (``open_streams`` is live state)."""
        self.received.clear()
        self.requests = 0
        self.cancelled_streams = 0
        self.cancelled_requests = 0

    def chats(self, provider: str | None = None) -> list[Received]:
        """Recorded chat-completion requests, optionally for one provider."""
        return [
            r
            for r in self.received
            if r.path.endswith(CHAT_SUFFIX) and (provider is None or r.provider == provider)
        ]

    def embeddings(self, provider: str | None = None) -> list[Received]:
        """Recorded embeddings requests, optionally for one provider."""
        return [
            r
            for r in self.received
            if r.path.endswith(EMBEDDINGS_SUFFIX) and (provider is None or r.provider == provider)
        ]

    async def wait_until(self, predicate: Callable[[Simulator], bool], within: float = 5.0) -> None:
        """Poll until ``predicate(self)`` holds; ``trio.TooSlowError`` after ``within`` s."""
        with trio.fail_after(within):
            while not predicate(self):  # noqa: ASYNC110 - counters change in other tasks
                await trio.sleep(0.005)

    def check_throttled(self, headers: dict[str, str]) -> None:
        """A 429 with Retry-After for a key listed in ``throttled_keys``."""
        if not self.throttled_keys:
            return
        presented = (
            headers.get("api-key") or headers.get("x-api-key") or headers.get("x-goog-api-key")
        )
        if presented is None:
            presented = headers.get("authorization", "").partition(" ")[2].strip()
        wait = self.throttled_keys.get(presented)
        if wait is not None:
            raise SimError(
                429,
                "Rate limit reached for requests.",
                "requests",
                "rate_limit_exceeded",
                headers=((b"retry-after", f"{wait:g}".encode()),),
            )

    def check_flaky(self, directive: dict[str, Any]) -> None:
        """``flaky``: ``{"id", "times", "status", "retry_after"}``: the first ``times`` requests
        carrying this id fail with ``status`` (default 503; Retry-After when given), later
        ones are answered normally (a provider recovering)."""
        flaky = directive.get("flaky")
        if not isinstance(flaky, dict):
            return
        ident = str(flaky.get("id", ""))
        seen = self.flaky_seen[ident] = self.flaky_seen.get(ident, 0) + 1
        if seen <= int(flaky.get("times", 1)):
            status = int(flaky.get("status", 503))
            extra: tuple[tuple[bytes, bytes], ...] = ()
            if flaky.get("retry_after") is not None:
                extra = ((b"retry-after", f"{float(flaky['retry_after']):g}".encode()),)
            raise SimError(
                status,
                f"Simulated flaky upstream (HTTP {status}).",
                error_type_for(status),
                headers=extra,
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            return
        self.requests += 1
        path: str = scope["path"]
        method: str = scope["method"]
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        parsed: Any = _UNPARSED
        if body:
            try:
                parsed = loads(body)
            except ValueError:
                parsed = _UNPARSED
        route = ROUTES.get(path)
        deployment: str | None = None
        if route is None and path.startswith(AZURE_DEPLOYMENTS_PREFIX):
            route, deployment = _azure_route(path)
        provider = route[0] if route else path.lstrip("/").partition("/")[0]
        if self.record:
            query = scope.get("query_string", b"").decode("latin-1")
            self.received.append(
                Received(
                    provider,
                    method,
                    path,
                    query,
                    headers,
                    body,
                    None if parsed is _UNPARSED else parsed,
                )
            )
        if route is None and (native := native_handler(provider)) is not None:
            request = NativeRequest(
                provider,
                method,
                path,
                scope.get("query_string", b"").decode("latin-1"),
                headers,
                body,
                None if parsed is _UNPARSED else parsed,
            )
            await native(self, request, receive, send)
            return
        try:
            if route is None:
                raise SimError(404, f"Invalid URL ({method} {path})")
            if provider == AZURE and not _has_api_version(scope.get("query_string", b"")):
                raise SimError(404, "Resource not found", code="404")
            if method != ("GET" if route[1] == MODELS else "POST"):
                raise SimError(405, f"Invalid method for URL ({method} {path})")
            _check_auth(provider, headers)
            self.check_throttled(headers)
            if route[1] == MODELS:
                await send_json(send, 200, _MODELS_BODIES[provider])
                return
            if parsed is _UNPARSED:
                raise SimError(400, _BAD_JSON)
            plan: Plan | EmbeddingPlan
            if route[1] == CHAT:
                plan = make_plan(parsed, deployment, self.defaults)
            else:
                plan = make_embedding_plan(parsed, deployment, self.defaults)
            self.check_flaky(plan.directive)
        except SimError as err:
            await send_json(send, err.status, err.body(), err.headers)
            return
        if not plan.stream and not (plan.directive.keys() & GUARDED_KEYS):
            await send_json(send, 200, _render(plan))
            return
        await self._guarded(receive, plan, send)

    async def _guarded(self, receive: Receive, plan: Plan | EmbeddingPlan, send: Send) -> None:
        flow = Flow(self, plan.stream)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_disconnect, receive, nursery.cancel_scope)
                await _answer(plan, send, flow)
                nursery.cancel_scope.cancel()
        finally:
            flow.abandon()


def _render(plan: Plan | EmbeddingPlan) -> bytes:
    if isinstance(plan, EmbeddingPlan):
        return embedding_body(plan)
    return completion_body(plan)


def _azure_route(path: str) -> tuple[tuple[str, str] | None, str | None]:
    """(route, deployment) of ``/azure_openai/openai/deployments/{deployment}/<kind>``."""
    rest = path[len(AZURE_DEPLOYMENTS_PREFIX) :]
    for suffix, kind in AZURE_DEPLOYMENT_KINDS:
        deployment = rest.removesuffix(suffix)
        if deployment != rest and deployment and "/" not in deployment:
            return (AZURE, kind), deployment
    return None, None


async def _answer(plan: Plan | EmbeddingPlan, send: Send, flow: Flow) -> None:
    d = plan.directive
    if d.get("hang"):
        await trio.sleep_forever()
    delay = float(d.get("delay") or 0)
    if delay > 0:
        await trio.sleep(delay)
    extra = extra_headers(d)
    status = int(d.get("status") or 200)
    if status >= 400:
        flow.finish()
        await send_json(send, status, _directive_error(status, d).body(), extra)
    elif not isinstance(plan, Plan) or not plan.stream:
        flow.finish()
        await send_json(send, 200, _render(plan), extra)
    else:
        await _stream(plan, send, flow, extra)


async def _stream(
    plan: Plan, send: Send, flow: Flow, extra: tuple[tuple[bytes, bytes], ...]
) -> None:
    d = plan.directive
    writer = ChunkWriter(plan)
    steps = writer.steps()
    chunk_delay = float(d.get("chunk_delay") or 0)
    raw_after = d.get("stream_error_after")
    error_after = None if raw_after is None else int(raw_after)
    last = len(steps) - 1
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*SSE_HEADERS, request_id(), *extra],
            }
        )
        for idx, step in enumerate(steps):
            if error_after is not None and idx >= 1 and (idx - 1 >= error_after or idx == last):
                flow.finish()  # a deliberate abort, not a client disconnect
                return  # no final message: hypercorn drops the connection mid-body
            if idx and chunk_delay > 0:
                await trio.sleep(chunk_delay)
            for event in step:
                await send({"type": "http.response.body", "body": event, "more_body": True})
        if plan.include_usage:
            await send(
                {"type": "http.response.body", "body": writer.usage_event(), "more_body": True}
            )
        flow.finish()
        await send({"type": "http.response.body", "body": DONE, "more_body": False})
    except Exception:  # sending after the client left: the stream is over (undone)
        return


async def _read_body(receive: Receive) -> bytes | None:
    message = await receive()
    if message["type"] != "http.request":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _has_api_version(query: bytes) -> bool:
    return b"api-version=" in query and bool(
        parse_qs(query.decode("latin-1")).get("api-version", [""])[0]
    )


def _check_auth(provider: str, headers: dict[str, str]) -> None:
    if provider in NO_AUTH_PROVIDERS:
        return
    if provider == AZURE:
        key = headers.get("api-key", "").strip()
        if not key:
            raise SimError(401, _NO_AZURE_KEY, code="invalid_api_key")
    else:
        scheme, _, key = headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise SimError(401, _NO_KEY, code="invalid_api_key")
    if key == BAD_KEY:
        raise SimError(401, f"Incorrect API key provided: {key}.", code="invalid_api_key")


def _directive_error(status: int, d: dict[str, Any]) -> SimError:
    over = d.get("error")
    over = over if isinstance(over, dict) else {}
    return SimError(
        status,
        str(over.get("message", f"Simulated upstream error (HTTP {status}).")),
        str(over.get("type", error_type_for(status))),
        over.get("code", "rate_limit_exceeded" if status == 429 else None),
        over.get("param"),
    )
