"""A call's cascade: the models it may try in order, the provider failures (and answers that
fail an enforced ``response_format``) after which it moves on, and how each way of ending is
recorded for settlement. Shared by chat and embeddings."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from typing import TypeVar

from ringside.domain import billing
from ringside.domain.modelrefs import ResolvedModel
from ringside.errors import (
    InvalidRequest,
    ModelUnavailable,
    NoActiveProviderKeys,
    RateLimited,
    ResponseSchemaValidationFailed,
    RingsideError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ringside.services import Services
from ringside.tokens import TokenUsage
from ringside.upstream.adapter import Exchange

T = TypeVar("T")

# Errors after which a cascade moves on to its next model.
FALLBACK_ON = (
    UpstreamUnavailable,
    UpstreamTimeout,
    ModelUnavailable,
    NoActiveProviderKeys,
    RateLimited,
    ResponseSchemaValidationFailed,
)


@dataclass
class Attempts:
    targets: list[ResolvedModel]
    tried: list[ResolvedModel] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        served = self.tried[-1]
        return {
            "X-Ringside-Model-Resolved": served.ref,
            "X-Ringside-Model-Used": served.ref,
            "X-Ringside-Models-Tried": ",".join(t.ref for t in self.tried),
            "X-Ringside-Fallback-Triggered": "true" if len(self.tried) > 1 else "false",
        }


def add_usage(a: TokenUsage, b: TokenUsage) -> TokenUsage:
    return TokenUsage(**{f.name: getattr(a, f.name) + getattr(b, f.name) for f in fields(a)})


@dataclass
class Spent:
    """The usage of every answer a call has had so far (re-prompted ones, and those of models
    the cascade moved on from after a schema failure): all of it is billed, however the call
    ends, each model's tokens at that model's prices."""

    source: str = "none"  # upstream | counted (if any attempt was counted) | none
    by_model: dict[str, tuple[ResolvedModel, TokenUsage]] = field(default_factory=dict)

    @property
    def usage(self) -> TokenUsage:
        """Every model's, summed."""
        return functools.reduce(add_usage, (u for _, u in self.by_model.values()), TokenUsage())

    def add(self, target: ResolvedModel, usage: TokenUsage, source: str) -> None:
        self.source = "counted" if "counted" in (source, self.source) else source
        known = self.by_model.get(target.ref)
        self.by_model[target.ref] = (target, usage if known is None else add_usage(known[1], usage))

    def parts(self) -> tuple[tuple[ResolvedModel, TokenUsage], ...]:
        """Per model, when more than one was billed (else empty: the outcome's usage is all
        the settled model's)."""
        return tuple(self.by_model.values()) if len(self.by_model) > 1 else ()


def exchange(
    svc: Services, target: ResolvedModel, request_id: str, *, stream: bool = False
) -> Exchange:
    """The upstream exchange for one attempt of the cascade (``ModelUnavailable`` when the
    provider's adapter is missing: the cascade moves on)."""
    return svc.upstreams.exchange(
        target.model.provider,
        target.model.model,
        request_id=request_id,
        timeout_s=svc.settings.upstream_timeout_s,
        idle_timeout_s=svc.settings.stream_idle_timeout_s if stream else None,
        retries=svc.settings.upstream_retries,
    )


def customer_ref(header: str | None, user: str | None) -> str | None:
    """The end-customer a call is attributed to: the ``FC-Customer`` header, else ``user``."""
    ref = header if header is not None else user
    if ref is None or ref == "":
        return None
    if len(ref) > 256 or not ref.isprintable():
        param = "FC-Customer" if header is not None else "user"
        raise InvalidRequest("A customer id is 1 to 256 printable characters.", param=param)
    return ref


async def walk(
    attempts: Attempts, attempt: Callable[[ResolvedModel], Awaitable[T]]
) -> tuple[ResolvedModel, T]:
    """Try the cascade's models in order, moving on after provider failures."""
    last_error: RingsideError | None = None
    for target in attempts.targets:
        attempts.tried.append(target)
        try:
            return target, await attempt(target)
        except FALLBACK_ON as exc:
            last_error = exc
    assert last_error is not None
    raise last_error


def last(attempts: Attempts) -> ResolvedModel:
    return attempts.tried[-1] if attempts.tried else attempts.targets[0]


def failed(attempts: Attempts, exc: RingsideError, spent: Spent | None = None) -> billing.Outcome:
    status = "timeout" if isinstance(exc, UpstreamTimeout) else "upstream_error"
    return _ended(attempts, spent, status, exc.status)


def broken(attempts: Attempts, spent: Spent | None = None) -> billing.Outcome:
    return _ended(attempts, spent, "internal_error", 500)


def aborted(attempts: Attempts, spent: Spent | None = None) -> billing.Outcome:
    return _ended(attempts, spent, "client_aborted", 499)


def _ended(attempts: Attempts, spent: Spent | None, status: str, http: int) -> billing.Outcome:
    spent = spent or Spent()
    return billing.Outcome(
        last(attempts), spent.usage, spent.source, status, http, parts=spent.parts()
    )
