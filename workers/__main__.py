"""``python -m workers [NAME...]``: run the named background workers in one nursery."""

from __future__ import annotations

import sys

import trio

from ringside.log import configure_logging
from ringside.runtime import open_services
from ringside.settings import Settings
from workers import WORKERS


async def _run(names: list[str]) -> None:
    async with open_services(Settings.from_env()) as svc, trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(WORKERS[name], svc)


def main(argv: list[str]) -> int:
    unknown = [n for n in argv if n not in WORKERS]
    if unknown or not argv:
        available = ", ".join(sorted(WORKERS)) or "none in this release"
        if unknown:
            sys.stderr.write(f"unknown worker(s): {', '.join(unknown)}\n")
        sys.stderr.write(f"usage: python -m workers NAME...  (available: {available})\n")
        return 2 if unknown else 0
    configure_logging()
    trio.run(_run, argv)
    return 0


sys.exit(main(sys.argv[1:]))
