"""Adapter for every provider that speaks the OpenAI Chat Completions and Embeddings wire
formats (OpenAI itself, Azure OpenAI's deployment URLs, and the OpenAI-compatible providers).

The fast path: the client's body is forwarded with only ``model`` rewritten (and, for chat
streams, ``stream_options.include_usage`` forced on so the call can be metered); unknown
fields pass through untouched, and the provider's answer bytes go back verbatim. Provider keys
go only to their own provider; the gateway key never leaves.
"""

from __future__ import annotations

import functools
from typing import Any

import httpx
import orjson

from ringside.errors import NoActiveProviderKeys, RingsideError
from ringside.upstream.adapter import Exchange, JsonReply, UpstreamStream, read_json
from ringside.upstream.providers import ProviderConfig, Wire
from ringside.upstream.sending import upstream_error
from ringside.upstream.sse import SSEDecoder

_JSON = "application/json"


@functools.lru_cache(maxsize=4096)
def _url(base_url: str, azure: bool, api_version: str | None, model: str, path: str) -> httpx.URL:
    # Parsed once: httpx takes a third of a request's gateway overhead parsing a str URL.
    if azure:
        return httpx.URL(f"{base_url}/openai/deployments/{model}/{path}?api-version={api_version}")
    return httpx.URL(f"{base_url}/{path}")


def url(cfg: ProviderConfig, model: str, path: str) -> httpx.URL:
    return _url(cfg.base_url, cfg.spec.wire is Wire.AZURE, cfg.api_version, model, path)


def _headers(x: Exchange, key: str | None, stream: bool) -> dict[str, str]:
    headers = {"content-type": _JSON, "accept": "text/event-stream" if stream else _JSON}
    if key is not None:
        if x.provider.spec.wire is Wire.AZURE:
            headers["api-key"] = key
        else:
            headers["authorization"] = f"Bearer {key}"
    if x.request_id is not None:
        # OpenAI's header for a caller's own request id: the provider's logs and ours agree.
        headers["x-client-request-id"] = x.request_id
    return headers


def _check_base(cfg: ProviderConfig) -> None:
    if not cfg.base_url:
        raise NoActiveProviderKeys(
            f"Provider {cfg.spec.name!r} has no base URL (set {cfg.spec.name.upper()}_BASE_URL)."
        )


class OpenAIWire:
    """The OpenAI Chat Completions / Embeddings wire (and Azure's deployment URLs)."""

    async def complete(self, x: Exchange, body: dict[str, Any]) -> JsonReply:
        response = await self._post(x, "chat/completions", self._chat_body(x, body, False), False)
        return JsonReply(response.content, read_json(x, response))

    async def open_stream(self, x: Exchange, body: dict[str, Any]) -> UpstreamStream:
        response = await self._post(x, "chat/completions", self._chat_body(x, body, True), True)
        return UpstreamStream(response, SSEDecoder())

    async def embed(self, x: Exchange, body: dict[str, Any]) -> JsonReply:
        upstream_body = dict(body)
        upstream_body["model"] = x.model
        response = await self._post(x, "embeddings", upstream_body, False)
        return JsonReply(response.content, read_json(x, response))

    def error(
        self, provider: str, status: int, body: bytes, headers: httpx.Headers
    ) -> RingsideError:
        return upstream_error(provider, status, body, headers)

    @staticmethod
    def _chat_body(x: Exchange, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        upstream_body = dict(body)
        upstream_body["model"] = x.model
        if stream:
            options = dict(upstream_body.get("stream_options") or {})
            options["include_usage"] = True
            upstream_body["stream_options"] = options
        return upstream_body

    @staticmethod
    async def _post(
        x: Exchange, path: str, upstream_body: dict[str, Any], stream: bool
    ) -> httpx.Response:
        _check_base(x.provider)
        target = url(x.provider, x.model, path)
        content = orjson.dumps(upstream_body)
        timeout = x.timeout(stream)

        def build(key: str | None) -> httpx.Request:
            return x.http.build_request(
                "POST", target, content=content, headers=_headers(x, key, stream), timeout=timeout
            )

        return await x.send(build, stream=stream)


ADAPTER = OpenAIWire()
