"""Every provider's adapter and key ring, per process: the domain's one way upstream.

``Upstreams.exchange(provider, model, ...)`` hands out an ``Exchange`` bound to the provider's
adapter (chosen by its wire: the OpenAI-wire adapter for the 14 OpenAI-compatible providers,
``upstream/<name>.py`` for each native family) and its key ring.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import httpx
import trio

from ringside.errors import ModelUnavailable
from ringside.upstream import openai_compat
from ringside.upstream.adapter import Adapter, Exchange
from ringside.upstream.keys import KeyRing
from ringside.upstream.providers import ProviderConfig, Wire

# provider name -> module in ringside.upstream exporting ADAPTER
NATIVE_MODULES: Mapping[str, str] = {
    "anthropic": "anthropic",
    "gemini": "gemini",
    "cohere": "cohere",
    "bedrock": "bedrock",
    "replicate": "replicate",
}


def adapter_for(cfg: ProviderConfig) -> Adapter:
    if cfg.spec.wire is not Wire.NATIVE:
        return openai_compat.ADAPTER
    module = NATIVE_MODULES.get(cfg.spec.name)
    try:
        adapter: Adapter = importlib.import_module(f"ringside.upstream.{module}").ADAPTER
    except (ImportError, AttributeError):
        raise ModelUnavailable(
            f"The {cfg.spec.display} adapter is not available in this build."
        ) from None
    return adapter


class Upstreams:
    def __init__(self, http: httpx.AsyncClient, providers: Mapping[str, ProviderConfig]) -> None:
        self.http = http
        self.providers = providers
        self.rings = {
            name: KeyRing(name, cfg.keys, cfg.spec.key_required) for name, cfg in providers.items()
        }

    def exchange(
        self,
        provider: str,
        model: str,
        *,
        request_id: str | None = None,
        timeout_s: float | None = None,
        idle_timeout_s: float | None = None,
        retries: int = 2,
    ) -> Exchange:
        """An exchange for one call; ``timeout_s`` is the call's whole budget (the provider's
        own ``<NAME>_TIMEOUT_SECONDS`` wins; retries never wait past it; the domain's own
        scope, ``move_on_at(x.deadline)``, enforces it)."""
        cfg = self.providers[provider]
        if cfg.timeout_s is not None:
            timeout_s = cfg.timeout_s
        deadline = trio.current_time() + timeout_s if timeout_s is not None else float("inf")
        return Exchange(
            self.http,
            cfg,
            self.rings[provider],
            adapter_for(cfg),
            model,
            request_id=request_id,
            idle_timeout_s=idle_timeout_s,
            deadline=deadline,
            timeout_s=timeout_s,
            max_retries=retries,
        )

    def reset_keys(self, provider: str | None = None) -> None:
        """Operator action: set-aside and resting keys usable again."""
        for name, ring in self.rings.items():
            if provider is None or name == provider:
                ring.reset()
