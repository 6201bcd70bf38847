"""Ringside: a self-hosted, OpenAI-wire-compatible LLM gateway that knows whose call it is.

``ringside.app`` is the ASGI application for ``hypercorn -k trio ringside:app``; it is built on
first access from the environment, so importing the package starts nothing.
"""

from __future__ import annotations

from typing import Any

from ringside.factory import create_app
from ringside.settings import Settings

__all__ = ["Settings", "app", "create_app"]


def __getattr__(name: str) -> Any:
    if name != "app":
        raise AttributeError(name)
    built = create_app(Settings.from_env())
    globals()["app"] = built
    return built
