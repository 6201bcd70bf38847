"""Embeddings: validate the request, resolve the model (which must be an embeddings model),
hold the call's worst case, call the provider, relay its body verbatim, settle the call.

Money moves exactly as for chat (``chat.complete``): the hold is taken before the first
provider is contacted and settled once, however the call ends; a cascade walks the same way
and bills the model that answered. An embedding has no output, so a call costs its input
tokens: the provider's ``usage.prompt_tokens``, else counted (~4 characters a token for text,
one per id for token inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import trio

# One cascade policy for every endpoint: the walk, its fallbacks and how a failure settles.
from ringside.domain import billing, cascade
from ringside.domain.auth import Caller
from ringside.domain.cascade import Attempts
from ringside.domain.metering import CallContext
from ringside.domain.modelrefs import ResolvedModel, resolve_all
from ringside.errors import InvalidRequest, RingsideError, UpstreamTimeout
from ringside.services import Services
from ringside.tokens import TokenUsage, estimate_tokens
from ringside.upstream.adapter import JsonReply

MAX_INPUTS = 2048  # OpenAI's limit per request (SPEC §11)
_MAX_MODELS = 8  # a cascade, as for chat
_ENCODINGS = ("float", "base64")
_CAPABILITY = "embeddings"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _model(body: dict[str, Any]) -> str | list[str]:
    model = body.get("model")
    if model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    if isinstance(model, str) and model:
        return model
    if (
        isinstance(model, list)
        and 1 <= len(model) <= _MAX_MODELS
        and all(isinstance(m, str) and m for m in model)
    ):
        return model
    raise InvalidRequest(
        f"'model' must be a model reference or an array of 1 to {_MAX_MODELS} of them (a cascade).",
        param="model",
    )


def _token_ids(value: Any) -> bool:
    return all(_is_int(t) and t >= 0 for t in value)


def _inputs(raw: Any) -> tuple[int, int]:
    """(characters of text, token ids) of a valid ``input``; refuse anything else."""
    if raw is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input")
    if isinstance(raw, str):
        if not raw:
            raise InvalidRequest("'input' must not be an empty string.", param="input")
        return len(raw), 0
    if not isinstance(raw, list):
        raise InvalidRequest(
            "'input' must be a string, an array of strings, an array of token ids or an "
            "array of token-id arrays.",
            param="input",
        )
    if not raw:
        raise InvalidRequest("'input' must not be an empty array.", param="input")
    if len(raw) > MAX_INPUTS:
        raise InvalidRequest(
            f"'input' holds {len(raw):,} items; at most {MAX_INPUTS:,} are allowed per request.",
            param="input",
        )
    if _token_ids(raw):
        return 0, len(raw)
    chars = tokens = 0
    first = raw[0]
    for i, item in enumerate(raw):
        if isinstance(first, str) and isinstance(item, str):
            if not item:
                raise InvalidRequest(f"'input[{i}]' must not be an empty string.", param="input")
            chars += len(item)
        elif isinstance(first, list) and isinstance(item, list) and item and _token_ids(item):
            tokens += len(item)
        else:
            raise InvalidRequest(
                f"'input[{i}]' is invalid: an array input holds only non-empty strings, or "
                "only token ids (non-negative integers), or only non-empty arrays of them.",
                param="input",
            )
    return chars, tokens


def _options(body: dict[str, Any]) -> None:
    encoding = body.get("encoding_format", "float")
    if encoding not in _ENCODINGS:
        raise InvalidRequest(
            "'encoding_format' must be 'float' or 'base64'.", param="encoding_format"
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and not (_is_int(dimensions) and dimensions >= 1):
        raise InvalidRequest("'dimensions' must be a positive integer.", param="dimensions")
    if "user" in body and not isinstance(body["user"], str):
        raise InvalidRequest("'user' must be a string.", param="user")


@dataclass(frozen=True)
class EmbeddingRequest:
    body: dict[str, Any]  # the client's body, untouched (unknown fields pass through)
    model: str | list[str]
    user: str | None
    size: int  # bytes of the request body: a bound on its prompt tokens
    text_chars: int
    token_ids: int

    def counted_usage(self) -> TokenUsage:
        """Usage counted from the request, for providers that report none."""
        return TokenUsage(input=estimate_tokens(self.text_chars) + self.token_ids)

    @classmethod
    def parse(cls, body: Any, size: int | None = None) -> EmbeddingRequest:
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        model = _model(body)
        chars, tokens = _inputs(body.get("input"))
        _options(body)
        return cls(
            body=body,
            model=model,
            user=body.get("user"),
            size=size if size is not None else len(orjson.dumps(body)),
            text_chars=chars,
            token_ids=tokens,
        )


@dataclass(frozen=True)
class Embedding:
    body: bytes
    headers: dict[str, str]
    usage: TokenUsage
    resolved: str


def plan(svc: Services, req: EmbeddingRequest) -> Attempts:
    """Resolve the model refs; every model of a cascade must be an embeddings model, so a
    wrong one is refused before any money is held or any provider called."""
    attempts = Attempts(resolve_all(svc.catalog, req.model, svc.slots))
    for target in attempts.targets:
        if _CAPABILITY not in target.model.capabilities:
            raise InvalidRequest(
                f"{target.ref} is not an embeddings model (the catalog lists no 'embeddings' "
                "capability for it); see GET /v1/models?supports=embeddings.",
                param="model",
            )
    return attempts


async def create(
    svc: Services, caller: Caller, ctx: CallContext, req: EmbeddingRequest, attempts: Attempts
) -> Embedding:
    """One embeddings call, walking the cascade on provider failures; held before the first
    provider is contacted and settled once, however it ends."""
    # No output: the worst case is the prompt alone (see billing.CallBounds).
    bounds = billing.CallBounds(prompt_tokens=req.size, max_output_tokens=0, choices=1)
    hold = await billing.reserve(
        svc.db, svc.pricing, svc.process_id, caller, ctx, attempts.targets, bounds
    )
    outcome: billing.Outcome | None = None
    try:
        target, reply = await cascade.walk(
            attempts, lambda t: _call_once(svc, t, req, ctx.request_id)
        )
        usage, source = _usage(reply.data, req)
        outcome = billing.Outcome(target, usage, source, "ok", 200)
    except RingsideError as exc:
        outcome = cascade.failed(attempts, exc)
        raise
    finally:
        charged = await billing.settle(
            svc.db, svc.pricing, hold, outcome or cascade.aborted(attempts)
        )
    headers = {**attempts.headers(), **charged.headers(hold)}
    return Embedding(reply.body, headers, usage, target.ref)


def _usage(data: dict[str, Any], req: EmbeddingRequest) -> tuple[TokenUsage, str]:
    raw = data.get("usage")
    prompt = raw.get("prompt_tokens") if isinstance(raw, dict) else None
    if isinstance(prompt, int) and not isinstance(prompt, bool) and prompt >= 0:
        return TokenUsage(input=prompt), "upstream"
    return req.counted_usage(), "counted"


async def _call_once(
    svc: Services, target: ResolvedModel, req: EmbeddingRequest, request_id: str
) -> JsonReply:
    x = cascade.exchange(svc, target, request_id)
    with trio.move_on_at(x.deadline) as scope:
        return await x.adapter.embed(x, req.body)
    assert scope.cancelled_caught
    raise UpstreamTimeout(f"{x.name} did not answer within {x.timeout_s:g}s.")
