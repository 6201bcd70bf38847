"""Helpers every handler uses: the services bag, the JSON body, JSON responses."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Protocol, cast

import orjson
from quart import Response, current_app, g, request

from ringside.domain.idempotency import Replay
from ringside.errors import InvalidRequest, NotFound
from ringside.log import RequestLog
from ringside.services import Services

_JSON = "application/json"


# Text PostgreSQL cannot store (NUL) or no identifier contains (other control characters).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _MultiDict(Protocol):
    def items(self, multi: bool = ...) -> Iterable[tuple[str, str]]: ...


def check_request_text(path: str, query_string: bytes, args: _MultiDict) -> None:
    """Refuse, before any handler runs, a path or query that carries bytes no id, name or
    filter can contain: a NUL byte must be a 404 or a 400, never a database error."""
    if _CONTROL.search(path):
        raise NotFound("No such resource: the path contains control characters.")
    if query_string and any(
        _CONTROL.search(k) or _CONTROL.search(v) for k, v in args.items(multi=True)
    ):
        raise InvalidRequest("The query string contains control characters.")


def has_nul(value: Any) -> bool:
    """Whether a parsed JSON value holds a NUL character anywhere (PostgreSQL text and jsonb
    cannot store one)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


def services() -> Services:
    return cast(Services, current_app.extensions["ringside"])


def request_log() -> RequestLog:
    return cast(RequestLog, g.request_log)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _loads_exact(raw: str | bytes) -> Any:
    """JSON with every non-integer number as an exact Decimal (for bodies carrying money)."""
    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from exc


async def read_json(*, optional: bool = False, allow_nul: bool = False, exact: bool = False) -> Any:
    """The JSON body. Strings with NUL characters are refused unless ``allow_nul`` (bodies
    that are relayed to a provider and never stored). ``exact`` parses non-integer numbers
    as Decimal, for bodies that carry money (orjson would make them floats)."""
    raw = await request.get_data(cache=False)
    if not raw.strip():
        if optional:
            return None
        raise InvalidRequest("The request body is empty; send a JSON object.")
    if exact:
        body = _loads_exact(raw)
    else:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"The request body is not valid JSON: {exc}") from exc
    # A NUL can only be written as an escape in JSON text; look closer only when one appears.
    if not allow_nul and b"\\u0000" in raw and has_nul(body):
        raise InvalidRequest("Strings in the request body cannot contain NUL characters.")
    return body


def replay_response(replay: Replay) -> Response:
    """An idempotent request's stored answer, replayed."""
    headers = {**replay.headers, "Idempotent-Replayed": "true"}
    return Response(replay.body, status=replay.status, headers=headers)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(data, status=status, headers=headers, content_type=_JSON)
