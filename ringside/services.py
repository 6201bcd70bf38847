"""The typed bag of long-lived things, built once at start-up and passed to the domain."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx

from ringside.catalog import Catalog
from ringside.domain.auth import KeyAuthenticator
from ringside.domain.client_tokens import ClientTokens
from ringside.domain.rate_limits import RateLimiter
from ringside.domain.run_executor import RunExecutor
from ringside.domain.unstarted_streams import UnstartedStreams
from ringside.pricing import PricingPolicy
from ringside.settings import Settings
from ringside.store.bridge import Cache, Database
from ringside.upstream.upstreams import Upstreams


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    cache: Cache
    http: httpx.AsyncClient
    upstreams: Upstreams  # every provider's adapter and key ring (this process)
    catalog: Catalog
    auth: KeyAuthenticator
    client_tokens: ClientTokens
    limits: RateLimiter
    slots: Mapping[str, Sequence[str]]
    pricing: PricingPolicy
    process_id: str  # this process in gateway_process; holds it writes carry it
    runs: RunExecutor  # serving only in a process that calls providers (the web app)
    # Stream bodies Quart never started (the client left before): closed after a grace.
    unstarted_streams: UnstartedStreams
