"""``python -m workers [NAME...]``: run the named background workers (all of them when none
is named) in one nursery."""

from __future__ import annotations

import contextlib
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
    if argv in (["-h"], ["--help"]):
        sys.stdout.write(f"usage: python -m workers [NAME...]  (all of: {', '.join(WORKERS)})\n")
        return 0
    unknown = [n for n in argv if n not in WORKERS]
    if unknown:
        sys.stderr.write(
            f"workers: unknown worker {', '.join(unknown)} (available: {', '.join(WORKERS)})\n"
        )
        return 2
    configure_logging()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops it
        trio.run(_run, argv or list(WORKERS))
    return 0


sys.exit(main(sys.argv[1:]))
