"""Adapter for every provider that speaks the OpenAI Chat Completions and Embeddings wire
formats (OpenAI itself, Azure OpenAI's deployment URLs, and the OpenAI-compatible providers).

The client's body is forwarded with only ``model`` rewritten (and, for chat streams,
``stream_options.include_usage`` forced on so the call can be metered); unknown fields pass
through untouched. Provider keys go only to their own provider; the gateway key never leaves.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from ringside.errors import (
    InvalidRequest,
    NoActiveProviderKeys,
    RateLimited,
    RingsideError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ringside.upstream.providers import ProviderConfig, Wire

_JSON = "application/json"


def chat_url(cfg: ProviderConfig, model: str) -> httpx.URL:
    return _chat_url(cfg.base_url, cfg.spec.wire is Wire.AZURE, cfg.api_version, model)


@functools.lru_cache(maxsize=4096)
def _chat_url(base_url: str, azure: bool, api_version: str | None, model: str) -> httpx.URL:
    # Parsed once: httpx takes a third of a request's gateway overhead parsing a str URL.
    if azure:
        return httpx.URL(
            f"{base_url}/openai/deployments/{model}/chat/completions?api-version={api_version}"
        )
    return httpx.URL(f"{base_url}/chat/completions")


def embeddings_url(cfg: ProviderConfig, model: str) -> httpx.URL:
    return _embeddings_url(cfg.base_url, cfg.spec.wire is Wire.AZURE, cfg.api_version, model)


@functools.lru_cache(maxsize=1024)
def _embeddings_url(base_url: str, azure: bool, api_version: str | None, model: str) -> httpx.URL:
    if azure:
        return httpx.URL(
            f"{base_url}/openai/deployments/{model}/embeddings?api-version={api_version}"
        )
    return httpx.URL(f"{base_url}/embeddings")


def auth_headers(cfg: ProviderConfig) -> dict[str, str]:
    key = cfg.keys.next_key()
    if key is None:
        if cfg.spec.key_required:
            raise NoActiveProviderKeys(
                f"No API key is configured for provider {cfg.spec.name!r} "
                f"(set {cfg.spec.name.upper()}_API_KEY)."
            )
        return {}
    if cfg.spec.wire is Wire.AZURE:
        return {"api-key": key}
    return {"authorization": f"Bearer {key}"}


def build_chat_request(
    client: httpx.AsyncClient,
    cfg: ProviderConfig,
    model: str,
    body: dict[str, Any],
    stream: bool,
    *,
    request_id: str | None = None,
    idle_timeout_s: float | None = None,
) -> httpx.Request:
    """The upstream request. ``idle_timeout_s`` bounds each network read of a stream: httpcore
    already opens a cancel scope around every read, so the deadline rides on it rather than on
    a second scope per chunk of ours."""
    if not cfg.base_url:
        raise NoActiveProviderKeys(
            f"Provider {cfg.spec.name!r} has no base URL (set {cfg.spec.name.upper()}_BASE_URL)."
        )
    upstream_body = dict(body)
    upstream_body["model"] = model
    if stream:
        options = dict(upstream_body.get("stream_options") or {})
        options["include_usage"] = True
        upstream_body["stream_options"] = options
    headers = auth_headers(cfg)
    headers["content-type"] = _JSON
    headers["accept"] = "text/event-stream" if stream else _JSON
    if request_id is not None:
        # OpenAI's header for a caller's own request id: the provider's logs and ours agree.
        headers["x-client-request-id"] = request_id
    timeout = httpx.Timeout(None, connect=10.0, read=idle_timeout_s)
    return client.build_request(
        "POST",
        chat_url(cfg, model),
        content=orjson.dumps(upstream_body),
        headers=headers,
        timeout=timeout,
    )


def build_embeddings_request(
    client: httpx.AsyncClient,
    cfg: ProviderConfig,
    model: str,
    body: dict[str, Any],
    *,
    request_id: str | None = None,
) -> httpx.Request:
    """The upstream ``POST .../embeddings``: the client's body with ``model`` rewritten."""
    if not cfg.base_url:
        raise NoActiveProviderKeys(
            f"Provider {cfg.spec.name!r} has no base URL (set {cfg.spec.name.upper()}_BASE_URL)."
        )
    upstream_body = dict(body)
    upstream_body["model"] = model
    headers = auth_headers(cfg)
    headers["content-type"] = _JSON
    headers["accept"] = _JSON
    if request_id is not None:
        headers["x-client-request-id"] = request_id
    return client.build_request(
        "POST",
        embeddings_url(cfg, model),
        content=orjson.dumps(upstream_body),
        headers=headers,
        timeout=httpx.Timeout(None, connect=10.0),
    )


def _upstream_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace")
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return body[:300].decode("utf-8", "replace")


def upstream_error(
    provider: str, status: int, body: bytes, headers: httpx.Headers
) -> RingsideError:
    """Map an upstream error answer to Ringside's envelope. The caller's own mistakes (400,
    404, 413, 422) stay 400s; throttling stays 429; everything else is the provider's fault."""
    detail = f"{provider} returned HTTP {status}: {_upstream_message(body)}"
    if status in (400, 404, 413, 422):
        return InvalidRequest(detail, code="upstream_rejected_request")
    if status == 429:
        retry = headers.get("retry-after")
        try:
            retry_s = float(retry) if retry else None
        except ValueError:
            retry_s = None
        return RateLimited(detail, code="upstream_rate_limited", retry_after_seconds=retry_s)
    if status >= 500:
        return UpstreamUnavailable(detail, upstream_status=status)
    return UpstreamError(detail, upstream_status=status)


def transport_error(provider: str, exc: httpx.HTTPError) -> RingsideError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"{provider} did not answer in time.")
    return UpstreamUnavailable(f"{provider} could not be reached: {type(exc).__name__}.")


def _text_len(value: Any) -> int:
    return len(value) if isinstance(value, str) else 0


def choices_text_chars(choices: Any, part: str) -> int:
    """Characters of text and tool-call arguments in ``choices[*][part]`` (``message`` in a
    reply, ``delta`` in a chunk); whatever the provider sent, malformed parts count as 0."""
    total = 0
    for choice in choices if isinstance(choices, list) else ():
        body = choice.get(part) if isinstance(choice, dict) else None
        if not isinstance(body, dict):
            continue
        total += _text_len(body.get("content"))
        calls = body.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                total += _text_len(function.get("arguments"))
    return total


# How providers write the null usage that `include_usage` adds to every chunk. A JSON string
# cannot contain an unescaped quote, so these bytes can only be the member itself.
_NULL_USAGE = (b',"usage":null', b'"usage":null,', b', "usage": null', b'"usage": null, ')


def without_null_usage(payload: bytes) -> bytes:
    """A chunk as the provider sends it when usage was not asked for: the ``"usage": null``
    member removed, every other byte untouched."""
    for member in _NULL_USAGE:
        if payload.count(member) == 1:
            return payload.replace(member, b"", 1)
    chunk = orjson.loads(payload)  # an unusual layout: re-encode without the member
    chunk.pop("usage", None)
    return orjson.dumps(chunk)


@dataclass(frozen=True)
class JsonReply:
    body: bytes
    data: dict[str, Any]


async def send_chat(client: httpx.AsyncClient, provider: str, request: httpx.Request) -> JsonReply:
    try:
        response = await client.send(request)
    except httpx.HTTPError as exc:
        raise transport_error(provider, exc) from exc
    body = response.content
    if response.status_code >= 400:
        raise upstream_error(provider, response.status_code, body, response.headers)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"{provider} returned a body that is not JSON.") from exc
    if not isinstance(data, dict):
        raise UpstreamError(f"{provider} returned an unexpected body.")
    return JsonReply(body, data)


async def send_embeddings(
    client: httpx.AsyncClient, provider: str, request: httpx.Request
) -> JsonReply:
    """The same JSON exchange as a plain chat call: the body comes back verbatim, errors are
    mapped to Ringside's."""
    return await send_chat(client, provider, request)


async def open_chat_stream(
    client: httpx.AsyncClient, provider: str, request: httpx.Request
) -> httpx.Response:
    """Send the request and wait for the upstream's headers; the caller owns the response
    and must ``aclose`` it."""
    try:
        response = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise transport_error(provider, exc) from exc
    if response.status_code >= 400:
        try:
            body = await response.aread()
        except httpx.HTTPError:
            body = b""
        finally:
            await response.aclose()
        raise upstream_error(provider, response.status_code, body, response.headers)
    return response


class SSEDecoder:
    """Incremental server-sent-events decoder: ``feed`` takes the bytes of one upstream read and
    returns the ``data`` payloads of the events it completed, whatever the upstream's line
    endings; comments (keep-alives) and other fields are dropped. Synchronous, so the relay
    adds no async layer per read."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        pending = self._buffer + chunk
        if b"\r" in pending:  # CRLF framing, possibly split across reads
            pending = pending.replace(b"\r\n", b"\n")
        *blocks, self._buffer = pending.split(b"\n\n")
        payloads = []
        for block in blocks:
            data = [
                line[5:].removeprefix(b" ")
                for line in block.split(b"\n")
                if line.startswith(b"data:")
            ]
            if data:
                payloads.append(b"\n".join(data))
        return payloads
