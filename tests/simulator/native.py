"""The simulated native-wire providers (Anthropic, Gemini, Cohere, Bedrock, Replicate), each in
its own module with an ``async def handle(sim, request, receive, send)``; the OpenAI-wire ones
are served by ``app.py`` itself.

Each native module parses the provider's real request format strictly (what the real API
refuses, it refuses, with the provider's own error body), interprets the same ``#sim{...}``
directives as the OpenAI-wire simulator (via ``completion.make_plan`` on an equivalent OpenAI
body, so replies and token counts agree across providers), and answers in the provider's own
response and streaming formats.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .asgi import Receive, Send

if TYPE_CHECKING:
    from .app import Simulator


@dataclass(frozen=True, slots=True)
class NativeRequest:
    provider: str
    method: str
    path: str  # the full path, the provider's first segment included (e.g. /anthropic/v1/messages)
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: Any | None  # None when the body is empty or not JSON


Handler = Callable[["Simulator", NativeRequest, Receive, Send], Awaitable[None]]

# provider -> module of this package exporting ``handle``
NATIVE_MODULES: Final[Mapping[str, str]] = {
    "anthropic": "anthropic_wire",
    "gemini": "gemini_wire",
    "cohere": "cohere_wire",
    "bedrock": "bedrock_wire",
    "replicate": "replicate_wire",
}


def native_handler(provider: str) -> Handler | None:
    module = NATIVE_MODULES.get(provider)
    if module is None:
        return None
    try:
        handle: Handler = importlib.import_module(f"{__package__}.{module}").handle
    except ModuleNotFoundError:
        return None
    return handle
