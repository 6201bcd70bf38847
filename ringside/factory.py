"""The Quart-Trio application factory."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import signal

import trio
from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ringside import errors
from ringside.api import BLUEPRINTS
from ringside.api.common import check_request_text, json_response
from ringside.ids import new_request_id
from ringside.log import RequestLog, configure_logging
from ringside.runtime import serve_services
from ringside.services import Services
from ringside.settings import Settings

log = logging.getLogger("ringside.app")

_HTTP_ERRORS: dict[int, type[errors.RingsideError]] = {
    400: errors.InvalidRequest,
    404: errors.NotFound,
    408: errors.RequestTimeout,
    405: errors.MethodNotAllowed,
    413: errors.RequestTooLarge,
}


def create_app(settings: Settings) -> QuartTrio:
    configure_logging()
    app = QuartTrio("ringside")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        RESPONSE_TIMEOUT=None,  # streams end when the upstream or the client ends them
        BODY_TIMEOUT=60,
        BACKGROUND_TASK_SHUTDOWN_TIMEOUT=settings.shutdown_grace_s,
        JSON_SORT_KEYS=False,
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
    stop = trio.Event()

    @app.before_serving
    async def _start() -> None:
        if multiprocessing.parent_process() is not None:
            # A Hypercorn worker: the master asks every worker to drain through a shared event,
            # then SIGTERMs those still running as soon as the first one exits. Ignoring that
            # signal (as workers already ignore SIGINT) lets each finish draining its streams
            # and release the embedded servers; SIGKILL still ends it.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        svc: Services = await app.nursery.start(serve_services, settings, stop)
        app.extensions["ringside"] = svc
        # Everything allocated so far (modules, catalog, app) lives as long as the process:
        # keep it out of the cyclic collector's work so collections stay short.
        gc.freeze()

    @app.after_serving
    async def _stop() -> None:
        stop.set()

    @app.before_request
    async def _begin() -> None:
        g.request_log = RequestLog(
            request_id=new_request_id(),
            method=request.method,
            path=request.path,
            started=trio.current_time(),
        )
        # Take the whole body before any handler can answer: a response sent while the body
        # is still unread leaves Quart-Trio's keep-alive connection wedged, so the client's
        # next request on it never gets an answer (found by tests/test_fuzz.py).
        await request.get_data(cache=True)
        check_request_text(request.path, request.query_string, request.args)

    @app.after_request
    async def _end(response: Response) -> Response:
        entry: RequestLog | None = g.get("request_log")
        if entry is not None:
            response.headers["X-Request-Id"] = entry.request_id
            limited: dict[str, str] | None = g.get("rate_limit_headers")  # api/rate_limits.py
            if limited:
                response.headers.update(limited)
            if not entry.deferred:
                entry.status = response.status_code
                entry.emit(trio.current_time())
        return response

    @app.errorhandler(errors.RingsideError)
    async def _ringside_error(exc: errors.RingsideError) -> Response:
        return _envelope(exc)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        cls = _HTTP_ERRORS.get(status)
        if cls is None:
            return _internal(exc)
        messages = {
            404: f"No route {request.method} {request.path}.",
            405: f"Method {request.method} is not allowed on {request.path}.",
            408: "The request body did not arrive in time.",
            413: f"The request body is larger than {settings.max_body_bytes} bytes.",
        }
        return _envelope(cls(messages.get(status, exc.description or "Bad request.")))

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        return _internal(exc)

    return app


def _request_id() -> str:
    entry: RequestLog | None = g.get("request_log")
    return entry.request_id if entry is not None else new_request_id()


def _envelope(exc: errors.RingsideError) -> Response:
    headers = {}
    if exc.retry_after_seconds is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_seconds)))
    return json_response(exc.envelope(_request_id()), exc.status, headers)


def _internal(exc: BaseException) -> Response:
    request_id = _request_id()
    log.error("unhandled error, request_id=%s", request_id, exc_info=exc)
    return json_response(errors.internal_error_envelope(request_id), 500)
