"""Ringside: a self-hosted, OpenAI-wire-compatible LLM gateway that knows whose call it is.

``ringside.app`` is the ASGI application for ``hypercorn -k trio ringside:app``. It builds the
real Quart-Trio app from the environment on its first ASGI call (the lifespan start-up), so
importing the package reads no configuration and starts nothing.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import sniffio

from ringside.factory import create_app
from ringside.settings import Settings

__all__ = ["Settings", "app", "create_app"]

_WRONG_LOOP_EXIT_STATUS = 2


def _refuse_event_loop(library: str) -> NoReturn:
    # Trio code cannot run on another loop: it would fail deep inside trio after a page of
    # tracebacks (SPEC §2: stop at once with one line). Nothing has started yet, so leave now:
    # a Hypercorn worker that exits non-zero is not replaced by its master.
    sys.stderr.write(
        f"ringside: Ringside runs on Trio, not {library}: "
        "start it with `hypercorn -k trio ringside:app`\n"
    )
    sys.stderr.flush()
    os._exit(_WRONG_LOOP_EXIT_STATUS)


class _AppFromEnvironment:
    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            try:
                library = sniffio.current_async_library()
            except sniffio.AsyncLibraryNotFoundError:
                library = "an unknown event loop"
            if library != "trio":
                _refuse_event_loop(library)
            self._app = create_app(Settings.from_env())
        await self._app(scope, receive, send)


app = _AppFromEnvironment()
