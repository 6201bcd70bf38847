"""A call's cascade: the models it may try in order, the provider failures after which it moves
on, and how each way of ending is recorded for settlement. Shared by chat and embeddings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ringside.domain import billing
from ringside.domain.modelrefs import ResolvedModel
from ringside.errors import (
    InvalidRequest,
    ModelUnavailable,
    NoActiveProviderKeys,
    RateLimited,
    RingsideError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ringside.services import Services
from ringside.tokens import TokenUsage
from ringside.upstream.providers import ProviderConfig, Wire

T = TypeVar("T")

# Errors after which a cascade moves on to its next model.
FALLBACK_ON = (
    UpstreamUnavailable,
    UpstreamTimeout,
    ModelUnavailable,
    NoActiveProviderKeys,
    RateLimited,
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


def provider_for(svc: Services, target: ResolvedModel) -> ProviderConfig:
    cfg = svc.settings.providers[target.model.provider]
    if cfg.spec.wire is Wire.NATIVE:
        raise ModelUnavailable(
            f"{target.ref}: the {cfg.spec.display} adapter is not available in this build; "
            "only OpenAI-wire providers are served so far."
        )
    return cfg


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


def failed(attempts: Attempts, exc: RingsideError) -> billing.Outcome:
    status = "timeout" if isinstance(exc, UpstreamTimeout) else "upstream_error"
    return billing.Outcome(last(attempts), TokenUsage(), "none", status, exc.status)


def broken(attempts: Attempts) -> billing.Outcome:
    return billing.Outcome(last(attempts), TokenUsage(), "none", "internal_error", 500)


def aborted(attempts: Attempts) -> billing.Outcome:
    return billing.Outcome(last(attempts), TokenUsage(), "none", "client_aborted", 499)
