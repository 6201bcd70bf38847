"""Serving a ``Simulator`` over real HTTP on 127.0.0.1 with Hypercorn's trio worker."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from .app import Simulator
from .providers import base_path


@dataclass(frozen=True, slots=True)
class RunningSimulator:
    sim: Simulator
    url: str  # e.g. "http://127.0.0.1:54321"

    def base_url(self, provider: str) -> str:
        """The base URL a gateway should use for ``provider`` (e.g. ``{url}/groq/openai/v1``)."""
        return self.url + base_path(provider)


def hypercorn_config(host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True) -> Config:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = 0.5
    config.keep_alive_timeout = 30.0
    config.backlog = 1024
    config.keep_alive_max_requests = 1_000_000
    if quiet:
        config.loglevel = "WARNING"
        config.errorlog = logging.getLogger("tests.simulator")
    return config


@asynccontextmanager
async def open_simulator(
    sim: Simulator | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningSimulator]:
    """Serve ``sim`` (a fresh ``Simulator`` if None) on a free port for the block's duration."""
    sim = sim if sim is not None else Simulator()
    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(
                partial(
                    serve, cast(Any, sim), hypercorn_config(host, port), shutdown_trigger=stop.wait
                )
            )
            try:
                yield RunningSimulator(sim, binds[0])
            finally:
                stop.set()
                # graceful_timeout bounds in-flight requests; this bounds everything else.
                nursery.cancel_scope.deadline = trio.current_time() + 5
    except BaseExceptionGroup as group:
        # Let the block's own exception through unwrapped (pytest.raises stays usable).
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
