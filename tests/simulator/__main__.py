"""``python -m tests.simulator --port 9100``: the simulator standalone (benchmark upstream)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from functools import partial
from typing import Any, cast

import trio
from hypercorn.trio import serve

from .app import Simulator
from .providers import PROVIDER_BASES
from .server import hypercorn_config


async def _main(args: argparse.Namespace) -> None:
    defaults: dict[str, Any] = json.loads(args.defaults) if args.defaults else {}
    if args.delay:
        defaults["delay"] = args.delay
    if args.chunk_delay:
        defaults["chunk_delay"] = args.chunk_delay
    sim = Simulator(record=args.record, defaults=defaults or None)
    config = hypercorn_config(args.host, args.port, quiet=not args.verbose)
    # Own SIGINT/SIGTERM from the start, so either one is a graceful shutdown (exit status 0).
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def stop_on_signal() -> None:
            async for _ in signals:
                return

        async with trio.open_nursery() as nursery:
            serving = partial(serve, cast(Any, sim), config, shutdown_trigger=stop_on_signal)
            binds: list[str] = await nursery.start(serving)
            url = binds[0]
            print(f"simulator listening on {url}", flush=True)
            for name, path in PROVIDER_BASES.items():
                print(f"  {name:<13} {url}{path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--delay", type=float, default=0.0, help="default seconds before answering")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="default seconds per chunk")
    parser.add_argument("--defaults", help="JSON directive applied to every chat request")
    parser.add_argument(
        "--record", action="store_true", help="keep every request in memory (off by default)"
    )
    parser.add_argument("--verbose", action="store_true", help="hypercorn INFO logging")
    args = parser.parse_args(argv)
    trio.run(_main, args)


if __name__ == "__main__":
    main()
