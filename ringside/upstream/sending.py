"""Sending one upstream request: key pool, retries, and the shared error mapping.

Retries (stamina: jittered exponential back-off) cover what is safe to send again: the request
never reached the provider (connect errors) or the provider said so (429, 502, 503). A 429's
``Retry-After`` is the back-off when it fits before the deadline; a retry that would end after
the deadline is not made, and the failure goes to the cascade (which may try another model).
401 and 429 also switch to the pool's next key at once, when there is one.
"""

from __future__ import annotations

import email.utils
import time
from typing import TYPE_CHECKING

import httpx
import orjson
import stamina
import trio

from ringside.errors import (
    InvalidRequest,
    RateLimited,
    RingsideError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

if TYPE_CHECKING:
    from ringside.upstream.adapter import BuildRequest, Exchange

_RETRY_STATUSES = frozenset({429, 502, 503})
_WAIT_INITIAL_S = 0.05
_WAIT_MAX_S = 2.0


class _Retryable(Exception):
    """An attempt that may be made again; ``error`` is what the caller sees if it is not."""

    def __init__(self, error: RingsideError, wait_s: float | None, switch_key: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.wait_s = wait_s
        self.switch_key = switch_key


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), None when absent/garbled."""
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace")
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # Gemini's streaming endpoint wraps its error in an array
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        for key in ("message", "detail", "Message"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return body[:300].decode("utf-8", "replace")


def upstream_error(
    provider: str, status: int, body: bytes, headers: httpx.Headers
) -> RingsideError:
    """The shared mapping of a provider's error answer: the caller's own mistakes (400, 404,
    413, 422) stay 400s; throttling stays 429; everything else is the provider's fault."""
    detail = f"{provider} returned HTTP {status}: {_message(body)}"
    if status in (400, 404, 413, 422):
        return InvalidRequest(detail, code="upstream_rejected_request")
    if status == 429:
        return RateLimited(
            detail, code="upstream_rate_limited", retry_after_seconds=retry_after_seconds(headers)
        )
    if status >= 500:
        return UpstreamUnavailable(detail, upstream_status=status)
    return UpstreamError(detail, upstream_status=status)


def transport_error(provider: str, exc: httpx.HTTPError) -> RingsideError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"{provider} did not answer in time.")
    return UpstreamUnavailable(f"{provider} could not be reached: {type(exc).__name__}.")


async def _error_body(response: httpx.Response, stream: bool) -> bytes:
    if not stream:
        return response.content
    try:
        return await response.aread()
    except httpx.HTTPError:
        return b""
    finally:
        await response.aclose()


async def _attempt(x: Exchange, build: BuildRequest, stream: bool) -> httpx.Response:
    key = x.keys.lease()
    request = build(key)
    x.attempts += 1
    try:
        response = await x.http.send(request, stream=stream)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise _Retryable(transport_error(x.name, exc), None, False) from exc
    except httpx.HTTPError as exc:
        raise transport_error(x.name, exc) from exc
    status = response.status_code
    if status < 400:
        return response
    body = await _error_body(response, stream)
    error = x.adapter.error(x.name, status, body, response.headers)
    # An adapter may say a key was refused where its provider answers otherwise (Gemini: 400
    # API_KEY_INVALID), and where a throttled provider's wait is (Gemini: RetryInfo).
    if status != 401 and getattr(error, "upstream_status", None) == 401:
        status = 401
    if status == 401:
        x.keys.refused(key)
        if x.keys.usable():
            raise _Retryable(error, 0.0, True)
        raise error
    if status in _RETRY_STATUSES:
        wait = retry_after_seconds(response.headers)
        if wait is None:
            wait = error.retry_after_seconds
        if status == 429:
            x.keys.throttled(key, wait)
            if x.keys.usable():
                raise _Retryable(error, 0.0, True)
        raise _Retryable(error, wait, False)
    raise error


async def send(x: Exchange, build: BuildRequest, *, stream: bool = False) -> httpx.Response:
    """See ``Exchange.send``: stamina runs the attempts; ``_Policy`` decides, per failure,
    whether there is another and after how long."""
    try:
        async for attempt in stamina.retry_context(
            on=_Policy(x),
            attempts=None,
            timeout=None,
            wait_initial=_WAIT_INITIAL_S,
            wait_max=_WAIT_MAX_S,
            wait_jitter=_WAIT_INITIAL_S,
        ):
            with attempt:
                return await _attempt(x, build, stream)
    except _Retryable as failure:  # given up: the failure as the adapter mapped it
        raise failure.error from failure.__cause__
    raise AssertionError("unreachable: stamina re-raises the last failure")


class _Policy:
    """stamina's backoff hook: True (its jittered exponential wait), a number of seconds (a
    Retry-After, or 0 to switch keys), or False (give up)."""

    def __init__(self, x: Exchange) -> None:
        self.x = x
        self.retries = 0
        self.switches = 0

    def __call__(self, exc: Exception) -> bool | float:
        if not isinstance(exc, _Retryable):
            return False
        x = self.x
        if exc.switch_key and self.switches < 2 * len(x.keys.keys):
            self.switches += 1  # another key is usable: at once, no retry budget spent
            return 0.0
        if self.retries >= x.max_retries:
            return False
        # stamina's wait for this retry is at most initial * 2**n + jitter.
        longest = min(_WAIT_INITIAL_S * 2**self.retries, _WAIT_MAX_S) + _WAIT_INITIAL_S
        wait = exc.wait_s if exc.wait_s is not None else longest
        if trio.current_time() + wait >= x.deadline:
            return False
        self.retries += 1
        return True if exc.wait_s is None else wait
