"""The one interface every provider family implements, and the exchange it sends through.

An adapter turns a validated OpenAI chat (or embeddings) body into its provider's native
request, and the native answer back into OpenAI's shapes: a ``chat.completion`` (or
``CreateEmbeddingResponse``) body with an OpenAI ``usage`` object, or a stream of
``chat.completion.chunk`` payloads ending with ``[DONE]``. The domain sees only these shapes.

The ``Exchange`` is one upstream call: where it goes (provider, model), the key pool it leases
from, and the call's deadline. ``Exchange.send`` is the only place a request leaves the gateway:
it picks the key, retries what is safe to retry and maps an error answer through the adapter.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import orjson
import trio

from ringside.errors import RingsideError, UpstreamError
from ringside.upstream.keys import KeyRing
from ringside.upstream.providers import ProviderConfig


@dataclass(frozen=True)
class JsonReply:
    """An OpenAI-shaped JSON answer: ``body`` is what the client receives (the provider's own
    bytes on the OpenAI wire), ``data`` the same, parsed."""

    body: bytes
    data: dict[str, Any]

    @classmethod
    def of(cls, data: dict[str, Any]) -> JsonReply:
        return cls(orjson.dumps(data), data)


class ChunkDecoder(Protocol):
    """Turns the raw bytes of an upstream stream, one network read at a time, into OpenAI
    ``chat.completion.chunk`` JSON payloads (bytes, no SSE framing); the last payload of a
    complete stream is ``b"[DONE]"``. Synchronous: no async layer per read. A chunk carrying
    the call's usage has ``"choices": []`` and an OpenAI ``usage`` object, as OpenAI sends it
    with ``stream_options.include_usage``."""

    def feed(self, raw: bytes) -> list[bytes]: ...


@dataclass
class UpstreamStream:
    """An open upstream stream: read ``response.aiter_raw()`` through ``decoder``; the owner
    must ``aclose`` it."""

    response: httpx.Response
    decoder: ChunkDecoder

    async def aclose(self) -> None:
        await self.response.aclose()


# Builds the HTTP request for one attempt, given the key leased for it (None: the provider
# needs none, e.g. a local Ollama, or signs with other credentials, e.g. Bedrock).
BuildRequest = Callable[[str | None], httpx.Request]


@dataclass
class Exchange:
    """One upstream call. ``deadline`` is a ``trio.current_time()`` value: retries never wait
    past it. ``idle_timeout_s`` bounds each read of a stream (see ``read_timeout``)."""

    http: httpx.AsyncClient
    provider: ProviderConfig
    keys: KeyRing
    adapter: Adapter
    model: str
    request_id: str | None = None
    idle_timeout_s: float | None = None
    deadline: float = float("inf")
    timeout_s: float | None = None  # the whole call's budget, from which ``deadline`` came
    max_retries: int = 2
    attempts: int = field(default=0, init=False)  # HTTP requests sent so far

    @property
    def name(self) -> str:
        return self.provider.spec.name

    def timeout(self, stream: bool) -> httpx.Timeout:
        """httpx timeouts for a request of this call: connect only, plus the idle read bound
        of a stream (httpcore opens a cancel scope around every read, so the deadline rides on
        it rather than on a second scope per chunk of ours)."""
        return httpx.Timeout(None, connect=10.0, read=self.idle_timeout_s if stream else None)

    async def send(self, build: BuildRequest, *, stream: bool = False) -> httpx.Response:
        """Send with the pool's next usable key and return a 2xx response (for ``stream``,
        headers only: the caller owns it and must ``aclose`` it).

        A 401 sets the key aside and a 429 cools it for its Retry-After; the next usable key is
        tried at once. Connect errors, 502, 503 and 429 are retried with jittered exponential
        back-off (a Retry-After wins) while the deadline allows, at most ``max_retries`` times.
        Anything else, or the last failure, is raised as the adapter maps it."""
        from ringside.upstream.sending import send  # the retry loop lives with its policy

        return await send(self, build, stream=stream)


class Adapter(Protocol):
    """A provider family's translation. ``body`` is the client's validated OpenAI body (unknown
    fields included); ``x.model`` is the provider's model id."""

    async def complete(self, x: Exchange, body: dict[str, Any]) -> JsonReply:
        """A non-streaming chat call → an OpenAI ``chat.completion``."""
        ...

    async def open_stream(self, x: Exchange, body: dict[str, Any]) -> UpstreamStream:
        """A streaming chat call, open up to the provider's response headers."""
        ...

    async def embed(self, x: Exchange, body: dict[str, Any]) -> JsonReply:
        """An embeddings call → an OpenAI ``CreateEmbeddingResponse`` (``encoding_format``
        honoured). Families without embeddings raise ``InvalidRequest``."""
        ...

    def error(
        self, provider: str, status: int, body: bytes, headers: httpx.Headers
    ) -> RingsideError:
        """Map the provider's error answer to Ringside's envelope (see
        ``sending.upstream_error`` for the shared rule)."""
        ...


@functools.lru_cache(maxsize=4096)
def parsed_url(url: str) -> httpx.URL:
    """``url`` parsed once: httpx takes a third of a request's gateway overhead parsing a str
    URL, and a provider's URLs repeat."""
    return httpx.URL(url)


def read_json(x: Exchange, response: httpx.Response) -> dict[str, Any]:
    """A 2xx answer's JSON object, or ``UpstreamError`` naming the provider."""
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"{x.name} returned a body that is not JSON.") from exc
    if not isinstance(data, dict):
        raise UpstreamError(f"{x.name} returned an unexpected body.")
    return data


async def drain_and_close(response: httpx.Response) -> None:
    """Close a stream response, shielded and bounded (it runs in ``finally`` blocks)."""
    with trio.CancelScope(shield=True), trio.move_on_after(2), contextlib.suppress(httpx.HTTPError):
        await response.aclose()
