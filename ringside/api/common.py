"""Helpers every handler uses: the services bag, the JSON body, JSON responses."""

from __future__ import annotations

from typing import Any, cast

import orjson
from quart import Response, current_app, g, request

from ringside.errors import InvalidRequest
from ringside.log import RequestLog
from ringside.services import Services

_JSON = "application/json"


def services() -> Services:
    return cast(Services, current_app.extensions["ringside"])


def request_log() -> RequestLog:
    return cast(RequestLog, g.request_log)


async def read_json(*, optional: bool = False) -> Any:
    raw = await request.get_data(cache=False)
    if not raw.strip():
        if optional:
            return None
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from exc


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(data, status=status, headers=headers, content_type=_JSON)
