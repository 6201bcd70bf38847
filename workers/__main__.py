"""``python -m workers [NAME...]``: run the named background workers (all of them when none
is named) in one nursery; SIGTERM or SIGINT stops them (status 0)."""

from __future__ import annotations

import contextlib
import sys

import trio

from ringside.log import configure_logging
from ringside.runtime import open_services
from ringside.settings import Settings
from workers import WORKERS, serve_workers


async def _run(names: list[str]) -> None:
    async with open_services(Settings.from_env()) as svc:
        await serve_workers(svc, names)


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
    # Once running, SIGINT is a signal the workers handle; before that, a plain way out.
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(_run, list(dict.fromkeys(argv)) or list(WORKERS))
    return 0


sys.exit(main(sys.argv[1:]))
