"""A protocol-faithful fake of the OpenAI Chat Completions (and Embeddings) wire, as served by
OpenAI and by OpenAI-compatible providers, for Ringside's tests and benchmark.

Each provider lives under a first path segment (``providers.PROVIDER_BASES``), e.g.
``POST /groq/openai/v1/chat/completions``; Azure is
``POST /azure_openai/openai/deployments/{deployment}/chat/completions?api-version=...`` with an
``api-key`` header. Everything but ollama needs ``Authorization: Bearer <key>``; the key
``sk-bad`` is always refused (401).

Replies are deterministic: ``"Echo: " + <last user message text>``. A message containing
``#sim{...}`` (a JSON object) steers the answer; the directive is stripped from the text.
Keys: ``status`` (int error answer; 429 adds ``retry-after: 1``), ``error`` (dict overriding
the error's message/type/code/param), ``headers`` (extra response headers), ``delay`` (s
before answering), ``chunk_delay`` (s between stream chunks), ``reply`` (exact text),
``tool_call`` ({"name", "arguments"} or a list of them), ``no_usage``, ``usage`` (overrides
prompt_tokens/completion_tokens/total_tokens/cached_tokens/reasoning_tokens), ``hang``,
``stream_error_after`` (drop the connection after N content chunks), ``reasoning_tokens``
(added to completion_tokens and reported in its details, as OpenAI does), ``flaky``
({"id", "times", "status", "retry_after"}: the first ``times`` requests with that id fail, the
next succeed). ``Simulator.throttled_keys`` ({key: retry_after_s}) answers 429 for those keys.

Embeddings: ``POST <base>/embeddings`` (Azure: ``.../deployments/{deployment}/embeddings``)
answers OpenAI's ``CreateEmbeddingResponse`` with deterministic unit vectors (a seeded hash of
each input), ``dimensions`` and ``encoding_format`` (``float`` | ``base64``) honoured, and
``prompt_tokens`` = whitespace words (token ids for token-array inputs); directives in string
inputs work as above where they make sense (``status``, ``error``, ``headers``, ``delay``,
``hang``, ``usage``, ``no_usage``). See ``embedding.py``.

Usage: ``async with open_simulator() as running: running.base_url("openai")``; inspect
``running.sim.received`` (or ``chats()`` / ``embeddings()``), ``open_streams``,
``cancelled_streams``. Standalone: ``python -m tests.simulator --port 9100``.
"""

from __future__ import annotations

from .app import Received, Simulator
from .providers import PROVIDER_BASES
from .server import RunningSimulator, open_simulator

__all__ = ["PROVIDER_BASES", "Received", "RunningSimulator", "Simulator", "open_simulator"]
