"""Client tokens (browser): ``POST /v1/customers/{id}/client_tokens`` and ``.../revoke``
(developer API key only), the caller of an inference endpoint (API key or client token), and
CORS for the endpoints a browser may call."""

from __future__ import annotations

import re

from quart import Blueprint, Response, request

from ringside.api.common import json_response, read_json, request_log, services
from ringside.api.customers import developer_caller
from ringside.domain import customers
from ringside.domain.auth import Caller, client_token
from ringside.domain.cascade import customer_ref
from ringside.domain.client_tokens import parse_mint_spec
from ringside.domain.rate_limits import peer_address
from ringside.errors import Forbidden

client_tokens_bp = Blueprint("client_tokens", __name__)
_TOKENS = "/v1/customers/<customer_id>/client_tokens"


def client_ip() -> str | None:
    """The caller's address, as a token's ``ip`` binding sees it: the peer, or behind a
    trusted proxy (``RINGSIDE_TRUSTED_PROXIES``) the ``X-Forwarded-For`` hop it reports."""
    trusted = services().limits.policy.trusted_proxies
    forwarded = request.headers.getlist("X-Forwarded-For") if trusted else []
    return peer_address(request.remote_addr, forwarded, trusted)


async def inference_caller() -> Caller:
    """Who calls an inference endpoint: a developer API key, or a client token used from its
    Origin and IP."""
    svc = services()
    token = client_token(request.headers)
    if token is None:
        caller = await svc.auth.caller_from(request.headers)
    else:
        caller = await svc.client_tokens.caller_from(
            token, request.headers.get("Origin"), client_ip()
        )
    request_log().developer_id = caller.developer_id
    return caller


def attributed_customer(caller: Caller, header: str | None, user: str | None) -> str | None:
    """The customer a call is billed to. A client token's call is always its customer's:
    ``FC-Customer`` or ``user`` naming another customer is refused, not silently overridden."""
    if caller.customer_id is None:
        return customer_ref(header, user)
    for value, param in ((header, "FC-Customer"), (user, "user")):
        if value and value not in (caller.customer_id, caller.customer_external_id):
            raise Forbidden(
                f"This client token is bound to customer {caller.customer_id!r}; {param} cannot"
                " name another customer.",
                param=param,
                code="customer_mismatch",
            )
    return caller.customer_id


@client_tokens_bp.post(_TOKENS)
async def create_client_token(customer_id: str) -> Response:
    caller = await developer_caller()
    spec = parse_mint_spec(await read_json())
    svc = services()
    customer = await customers.get_customer(svc.db, caller.developer_id, customer_id)
    return json_response(await svc.client_tokens.mint(caller, customer.id, spec))


@client_tokens_bp.post(f"{_TOKENS}/revoke")
async def revoke_client_tokens(customer_id: str) -> Response:
    caller = await developer_caller()
    svc = services()
    customer = await customers.get_customer(svc.db, caller.developer_id, customer_id)
    await svc.client_tokens.revoke(customer.id)
    return json_response({"object": "client_tokens.revoked", "customer_id": customer.id})


# --- CORS ----------------------------------------------------------------------------------
# Only the endpoints a client token may call. Nothing is credentialed (no cookies), so echoing
# the request's Origin grants nothing by itself: the token, bound to one origin, is checked on
# the actual request.
_DEFAULT_ALLOWED = "Authorization, Content-Type, FC-Customer, Idempotency-Key"
_EXPOSED = ", ".join(
    [
        "X-Request-Id",
        "X-Ringside-Model-Resolved",
        "X-Ringside-Model-Used",
        "X-Ringside-Models-Tried",
        "X-Ringside-Fallback-Triggered",
        "X-Ringside-Wallet-Balance",
        "X-Ringside-Wallet-Deducted",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "Retry-After",
        "Idempotent-Replayed",
        "openai-poll-after-ms",
    ]
)
_HEADER_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")


def _browser_path(path: str) -> bool:
    return path in (
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/models",
        "/v1/threads",
    ) or path.startswith(("/v1/models/", "/v1/threads/"))


def _preflight(methods: str) -> Response:
    response = Response(b"", status=204)
    origin = request.headers.get("Origin")
    if origin:
        requested = (request.headers.get("Access-Control-Request-Headers") or "").strip()
        # The openai JS SDK sends x-stainless-* headers (and may add more in any release):
        # any well-formed list asked for is allowed, since none of them grants anything.
        allowed = requested if requested and _HEADER_LIST.match(requested) else _DEFAULT_ALLOWED
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = methods
        response.headers["Access-Control-Allow-Headers"] = allowed
        response.headers["Access-Control-Max-Age"] = "600"
    response.vary.update(["Origin", "Access-Control-Request-Headers"])
    return response


@client_tokens_bp.route("/v1/chat/completions", methods=["OPTIONS"])
@client_tokens_bp.route("/v1/embeddings", methods=["OPTIONS"])
async def preflight_post() -> Response:
    return _preflight("POST, OPTIONS")


@client_tokens_bp.route("/v1/models", methods=["OPTIONS"])
@client_tokens_bp.route("/v1/models/<path:model_id>", methods=["OPTIONS"])
async def preflight_get(model_id: str | None = None) -> Response:
    return _preflight("GET, OPTIONS")


# Threads, their messages, runs and steps (a client token reaches its customer's threads).
@client_tokens_bp.route("/v1/threads", methods=["OPTIONS"])
@client_tokens_bp.route("/v1/threads/<path:rest>", methods=["OPTIONS"])
async def preflight_threads(rest: str | None = None) -> Response:
    return _preflight("GET, POST, DELETE, OPTIONS")


@client_tokens_bp.after_app_request
async def _cors(response: Response) -> Response:
    origin = request.headers.get("Origin")
    if origin and request.method != "OPTIONS" and _browser_path(request.path):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = _EXPOSED
        response.vary.add("Origin")
    return response
