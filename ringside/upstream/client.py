"""The process-wide httpx client for upstream calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx


@asynccontextmanager
async def open_upstream_client() -> AsyncIterator[httpx.AsyncClient]:
    # No timeouts here but connect: deadlines are policy and live in the domain (trio.fail_after).
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(None, connect=10.0),
        limits=httpx.Limits(max_connections=2000, max_keepalive_connections=256),
        follow_redirects=False,
        trust_env=False,
    ) as client:
        yield client
