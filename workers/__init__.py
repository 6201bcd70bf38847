"""Background workers: plain Trio programs, each a ``serve_<name>(svc)`` loop of
*claim a batch with SKIP LOCKED → act → sleep*, safe to run in several processes at once.

They never live in the web process (Hypercorn ``--workers N`` would run N copies).
``WORKERS`` maps a name to its ``serve_*`` function; ``python -m workers NAME...`` runs them.
This release has none yet: run expiry, file ingest and webhook delivery land here with the
features that need them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from ringside.services import Services

Worker = Callable[[Services], Awaitable[None]]

WORKERS: Mapping[str, Worker] = {}
