"""Background workers: plain Trio programs, each a ``serve_<name>(svc)`` loop of
*claim a batch with SKIP LOCKED → act → sleep*, safe to run in several processes at once.

They never live in the web process (Hypercorn ``--workers N`` would run N copies).
``WORKERS`` maps a name to its ``serve_*`` function; ``python -m workers [NAME...]`` runs the
named ones, or all of them. ``settlement`` settles the holds of calls whose gateway process
died; run expiry, file ingest and webhook delivery land here with the features that need them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from ringside.services import Services
from workers.settlement import serve_settlement

Worker = Callable[[Services], Awaitable[None]]

WORKERS: Mapping[str, Worker] = {"settlement": serve_settlement}
