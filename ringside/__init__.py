"""Ringside: a self-hosted, OpenAI-wire-compatible LLM gateway that knows whose call it is.

``ringside.app`` is the ASGI application for ``hypercorn -k trio ringside:app``. It builds the
real Quart-Trio app from the environment on its first ASGI call (the lifespan start-up), so
importing the package reads no configuration and starts nothing.
"""

from __future__ import annotations

from typing import Any

from ringside.factory import create_app
from ringside.settings import Settings

__all__ = ["Settings", "app", "create_app"]


class _AppFromEnvironment:
    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = create_app(Settings.from_env())
        await self._app(scope, receive, send)


app = _AppFromEnvironment()
