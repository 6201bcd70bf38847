"""The Assistants step: runs, a long thread's message list, and memory with runs in flight.

1. **Run latency**: ``RUNS`` (200) threads, each with one user message whose upstream answer
   takes ``UPSTREAM_S`` (50 ms, a simulator directive), each start a non-streaming run at the
   same moment; the server-side latency of each run is ``completed_at - created_at`` from the
   gateway's own PostgreSQL rows (microsecond timestamps), and its p99 is compared with 3x the
   upstream latency.
2. **Message list**: one thread filled with ``MESSAGES`` (1,000) messages through the API; a
   page of 100 (the newest, and one from the middle by ``after`` cursor) is timed over HTTP.
3. **Memory**: ``IN_FLIGHT`` (1,000) threads each start a run whose upstream never answers;
   once every run is ``in_progress`` (read from PostgreSQL) the gateway's resident memory is
   sampled, then all runs are cancelled through the API (and must end ``cancelled``).

Runs are attributed to the bench customer (``FC-Customer``), so they are reserved, settled and
rate-limited like the load cells' billed calls. ``python -m bench`` runs this step after the
stream probe; ``python -m bench --only assistants [--quick]`` runs it alone on a fresh
simulator and gateway (no wrk needed; ``--quick``: 50 runs at once and 100 in flight).
"""

from __future__ import annotations

import json
import statistics
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.harness import BenchError
from ringside.store.bridge import Database, open_storage
from ringside.store.embedded import ensure_servers

RUNS = 200
UPSTREAM_S = 0.05
LATENCY_FACTOR = 3.0  # p99 of created -> completed must stay within 3x the upstream latency
MESSAGES = 1_000
PAGE = 100
LIST_REPEATS = 50
LIST_MAX_MS = 20.0
IN_FLIGHT = 1_000
IN_FLIGHT_RSS_MAX_MB = 300.0
QUICK_SIZES = {"runs": 50, "messages": MESSAGES, "in_flight": 100}
_SETUP_CONCURRENCY = 32
_ACTIVE = ("queued", "in_progress", "requires_action", "cancelling")


def _directive(**d: Any) -> str:
    return f"#sim{json.dumps(d)}"


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values), 2) if values else 0.0,
        "p99_ms": round(_pct(values, 99), 2),
        "max_ms": round(max(values, default=0.0), 2),
    }


async def _gather(calls: Sequence[Callable[[], Awaitable[Any]]], concurrency: int) -> list[Any]:
    """Run ``calls`` at most ``concurrency`` at a time; their results in order."""
    results: list[Any] = [None] * len(calls)
    limiter = trio.CapacityLimiter(concurrency)

    async def one(i: int) -> None:
        async with limiter:
            results[i] = await calls[i]()

    async with trio.open_nursery() as nursery:
        for i in range(len(calls)):
            nursery.start_soon(one, i)
    return results


def _first(group: BaseExceptionGroup[Exception]) -> Exception:
    leaf = group.exceptions[0]
    return _first(leaf) if isinstance(leaf, BaseExceptionGroup) else leaf


def _described(exc: Exception) -> Exception:
    if isinstance(exc, httpx.RequestError):
        return BenchError(f"{type(exc).__name__} on {exc.request.method} {exc.request.url}")
    return exc


def _ok(r: httpx.Response, what: str) -> dict[str, Any]:
    if r.status_code != 200:
        raise BenchError(f"{what} answered {r.status_code}: {r.text[:300]}")
    body: dict[str, Any] = r.json()
    return body


@dataclass(frozen=True)
class Created:
    thread_id: str
    run_id: str | None  # None: refused, see error
    request_ms: float
    error: str | None


def _refusals(created: Sequence[Created]) -> dict[str, Any]:
    errors = Counter(c.error for c in created if c.error)
    return {"refused": sum(errors.values()), "refusals": dict(errors.most_common())}


class _Api:
    def __init__(self, http: httpx.AsyncClient, model: str) -> None:
        self.http = http
        self.model = model

    async def assistant(self) -> str:
        r = await self.http.post("/v1/assistants", json={"model": self.model, "name": "bench"})
        return str(_ok(r, "POST /v1/assistants")["id"])

    async def thread(self, text: str) -> str:
        body = {"messages": [{"role": "user", "content": text}]}
        return str(_ok(await self.http.post("/v1/threads", json=body), "POST /v1/threads")["id"])

    async def threads(self, count: int, text: str) -> list[str]:
        calls = [partial(self.thread, text) for _ in range(count)]
        return list(await _gather(calls, _SETUP_CONCURRENCY))

    async def run(self, thread_id: str, assistant_id: str) -> Created:
        """A run creation; a refusal is counted, not raised (the step reports it)."""
        started = time.perf_counter()
        try:
            r = await self.http.post(
                f"/v1/threads/{thread_id}/runs", json={"assistant_id": assistant_id}
            )
        except httpx.TimeoutException as exc:
            elapsed = (time.perf_counter() - started) * 1000
            return Created(thread_id, None, elapsed, f"{type(exc).__name__} (client, 60 s)")
        elapsed = (time.perf_counter() - started) * 1000
        if r.status_code == 200:
            return Created(thread_id, str(r.json()["id"]), elapsed, None)
        try:
            error = r.json()["error"]
            return Created(thread_id, None, elapsed, f"{r.status_code} {error['code']}")
        except (ValueError, KeyError, TypeError):
            return Created(thread_id, None, elapsed, f"{r.status_code} {r.text[:80]}")

    async def cancel(self, thread_id: str, run_id: str) -> None:
        r = await self.http.post(f"/v1/threads/{thread_id}/runs/{run_id}/cancel")
        _ok(r, "POST /v1/threads/{id}/runs/{id}/cancel")


async def _statuses(db: Database, run_ids: Sequence[str]) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT status, count(*) AS n FROM run WHERE id = ANY($1::text[]) GROUP BY status",
        list(run_ids),
    )
    return {r["status"]: r["n"] for r in rows}


async def _wait_until(
    db: Database, run_ids: Sequence[str], done: Callable[[dict[str, int]], bool], within: float
) -> dict[str, int]:
    with trio.move_on_after(within):
        while True:
            statuses = await _statuses(db, run_ids)
            if done(statuses):
                return statuses
            await trio.sleep(0.02)
    raise BenchError(f"runs still not done after {within:.0f} s: {await _statuses(db, run_ids)}")


async def _run_latency(api: _Api, db: Database, assistant_id: str, runs: int) -> dict[str, Any]:
    threads = await api.threads(runs, f"Summarise the report {_directive(delay=UPSTREAM_S)}")
    # Every run at the same moment: one task per run, no limiter.
    created: list[Created] = []
    started = time.perf_counter()

    async def start(thread_id: str) -> None:
        created.append(await api.run(thread_id, assistant_id))

    async with trio.open_nursery() as nursery:
        for thread_id in threads:
            nursery.start_soon(start, thread_id)
    run_ids = [c.run_id for c in created if c.run_id]
    statuses = await _wait_until(
        db, run_ids, lambda s: not any(s.get(a) for a in _ACTIVE), within=120
    )
    wall = time.perf_counter() - started
    rows = await db.fetch(
        """SELECT extract(epoch FROM completed_at - created_at) * 1000 AS ms,
                  extract(epoch FROM started_at - created_at) * 1000 AS start_ms
             FROM run WHERE id = ANY($1::text[]) AND status = 'completed'""",
        run_ids,
    )
    latencies = [float(r["ms"]) for r in rows]
    to_start = [float(r["start_ms"]) for r in rows if r["start_ms"] is not None]
    return {
        "runs": runs,
        "upstream_ms": UPSTREAM_S * 1000,
        "target_p99_ms": LATENCY_FACTOR * UPSTREAM_S * 1000,
        "statuses": statuses,
        "completed": len(latencies),
        "latency": _summary(latencies),
        "queued_to_started": _summary(to_start),
        "create_request": _summary([c.request_ms for c in created]),
        **_refusals(created),
        "wall_s": round(wall, 2),
    }


async def _time_list(api: _Api, path: str, params: dict[str, Any]) -> dict[str, Any]:
    samples: list[float] = []
    page: dict[str, Any] = {}
    for i in range(LIST_REPEATS + 3):
        started = time.perf_counter()
        page = _ok(await api.http.get(path, params=params), f"GET {path}")
        if i >= 3:  # warm-up
            samples.append((time.perf_counter() - started) * 1000)
    return {
        "median_ms": round(statistics.median(samples), 2),
        "p95_ms": round(_pct(samples, 95), 2),
        "rows": len(page["data"]),
        "has_more": page["has_more"],
        "repeats": LIST_REPEATS,
        "first_id": page["first_id"],
    }


async def _message_list(api: _Api, messages: int) -> dict[str, Any]:
    thread_id = await api.thread("message 0")
    path = f"/v1/threads/{thread_id}/messages"

    async def post(i: int) -> str:
        r = await api.http.post(path, json={"role": "user", "content": f"message {i}"})
        return str(_ok(r, f"POST {path}")["id"])

    ids = await _gather([partial(post, i) for i in range(1, messages)], _SETUP_CONCURRENCY)
    # A cursor from the middle of the thread (by order of creation: a keyset, not an offset).
    cursor = None
    for _ in range(max(1, messages // 2 // PAGE)):
        params: dict[str, Any] = {"limit": PAGE, "order": "asc"}
        params |= {"after": cursor} if cursor else {}
        cursor = _ok(await api.http.get(path, params=params), f"GET {path}")["last_id"]
    newest = await _time_list(api, path, {"limit": PAGE})
    inner = await _time_list(api, path, {"limit": PAGE, "after": cursor})
    correct = (
        newest["rows"] == PAGE == inner["rows"] and newest["has_more"] and len(ids) == messages - 1
    )
    return {
        "messages": messages,
        "page": PAGE,
        "target_ms": LIST_MAX_MS,
        "newest": newest,
        "middle": inner,
        "correct": bool(correct),
    }


async def _in_flight(
    api: _Api,
    db: Database,
    assistant_id: str,
    count: int,
    measure: Callable[[], dict[str, float]],
) -> dict[str, Any]:
    threads = await api.threads(count, f"Never answered {_directive(hang=True)}")
    started = time.perf_counter()
    created: list[Created] = await _gather(
        [partial(api.run, t, assistant_id) for t in threads], _SETUP_CONCURRENCY * 2
    )
    running = [c for c in created if c.run_id]
    run_ids = [c.run_id for c in running if c.run_id]
    reached = await _wait_until(
        db, run_ids, lambda s: s.get("in_progress", 0) >= len(run_ids), within=120
    )
    opened = time.perf_counter() - started
    await trio.sleep(1.0)  # let the gateway settle before sampling
    rss = measure()
    in_progress = (await _statuses(db, run_ids)).get("in_progress", 0)
    cancel_started = time.perf_counter()
    await _gather(
        [partial(api.cancel, c.thread_id, c.run_id) for c in running if c.run_id],
        _SETUP_CONCURRENCY * 2,
    )
    ended = await _wait_until(db, run_ids, lambda s: not any(s.get(a) for a in _ACTIVE), within=120)
    return {
        "wanted": count,
        "in_progress_at_sample": in_progress,
        **_refusals(created),
        "statuses_reached": reached,
        "rss": rss,
        "target_mb": IN_FLIGHT_RSS_MAX_MB,
        "open_seconds": round(opened, 2),
        "cancel_seconds": round(time.perf_counter() - cancel_started, 2),
        "ended": ended,
    }


async def _measure(
    data_dir: Path,
    base_url: str,
    headers: dict[str, str],
    model: str,
    measure: Callable[[], dict[str, float]],
    sizes: dict[str, int],
) -> dict[str, Any]:
    servers = await trio.to_thread.run_sync(ensure_servers, data_dir, None, None)
    try:
        async with (
            open_storage(servers.database_url, servers.redis_url, pool_max=2) as (db, _),
            httpx.AsyncClient(
                base_url=base_url,
                headers=headers,
                timeout=60.0,
                trust_env=False,
                limits=httpx.Limits(max_connections=sizes["runs"] + 64),
            ) as http,
        ):
            api = _Api(http, model)
            assistant_id = await api.assistant()
            print(f"  assistants: {sizes['runs']} runs at once ...", file=sys.stderr, flush=True)
            runs = await _run_latency(api, db, assistant_id, sizes["runs"])
            _show("runs", runs)
            print(f"  assistants: a {sizes['messages']}-message thread ...", file=sys.stderr)
            listing = await _message_list(api, sizes["messages"])
            _show("listing", listing)
            print(f"  assistants: {sizes['in_flight']} runs in flight ...", file=sys.stderr)
            flight = await _in_flight(api, db, assistant_id, sizes["in_flight"], measure)
            _show("in_flight", flight)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(servers.stop)  # the gateway keeps them running
    return {"runs": runs, "listing": listing, "in_flight": flight}


def run_assistants(
    data_dir: Path,
    base_url: str,
    headers: dict[str, str],
    model: str,
    measure: Callable[[], dict[str, float]],
    *,
    runs: int = RUNS,
    messages: int = MESSAGES,
    in_flight: int = IN_FLIGHT,
) -> dict[str, Any]:
    """The three measurements against a running gateway on ``data_dir``'s embedded servers;
    ``measure`` samples its memory."""
    sizes = {"runs": runs, "messages": messages, "in_flight": in_flight}
    try:
        result: dict[str, Any] = trio.run(
            _measure, data_dir, base_url, headers, model, measure, sizes
        )
    except ExceptionGroup as group:  # the nurseries': say what failed, not "1 sub-exception"
        raise _described(_first(group)) from group
    except httpx.HTTPError as exc:
        raise _described(exc) from exc
    return result


def targets(result: dict[str, Any]) -> list[tuple[str, float, str, bool, bool, str]]:
    """(name, value, unit, ok, clean, info) for each target."""
    runs, listing, flight = result["runs"], result["listing"], result["in_flight"]
    p99 = runs["latency"]["p99_ms"]
    slower = max(listing["newest"]["median_ms"], listing["middle"]["median_ms"])
    rss = flight["rss"]["worker_mb"]
    return [
        (
            f"run latency p99, {runs['runs']} runs at once",
            p99,
            "ms",
            p99 <= runs["target_p99_ms"],
            runs["completed"] == runs["runs"],
            f"target <= {runs['target_p99_ms']:g} ms (3x the {runs['upstream_ms']:g} ms"
            f" upstream); created -> completed from the run rows; p50 {runs['latency']['p50_ms']}"
            f" ms; {runs['completed']}/{runs['runs']} completed",
        ),
        (
            f"messages page of {listing['page']}, {listing['messages']:,}-message thread",
            slower,
            "ms",
            slower < listing["target_ms"],
            listing["correct"],
            f"target < {listing['target_ms']:g} ms, median over HTTP of the slower of the newest"
            f" page ({listing['newest']['median_ms']} ms) and a middle one"
            f" ({listing['middle']['median_ms']} ms)",
        ),
        (
            f"worker RSS, {flight['wanted']:,} runs in flight",
            rss,
            "MB",
            rss <= flight["target_mb"],
            flight["in_progress_at_sample"] == flight["wanted"],
            f"target <= {flight['target_mb']:g} MB; master + worker"
            f" {flight['rss']['sum_mb']:.1f} MB; {flight['in_progress_at_sample']} in progress",
        ),
    ]


def _runs_line(runs: dict[str, Any]) -> str:
    lat, start, req = runs["latency"], runs["queued_to_started"], runs["create_request"]
    refused = runs["refused"]
    return (
        f"assistants: {runs['runs']} non-streaming runs started at once, upstream"
        f" {runs['upstream_ms']:g} ms: created -> completed p50 {lat['p50_ms']} ms, p99"
        f" {lat['p99_ms']} ms, max {lat['max_ms']} ms (target p99 <= {runs['target_p99_ms']:g}"
        f" ms); created -> started p50 {start['p50_ms']} ms, p99 {start['p99_ms']} ms; the"
        f" create request p50 {req['p50_ms']} ms, p99 {req['p99_ms']} ms; all ended in"
        f" {runs['wall_s']} s: {runs['statuses']}"
        + (f"; {refused} creations REFUSED, {runs['refusals']}" if refused else "")
    )


def _listing_line(listing: dict[str, Any]) -> str:
    return (
        f"assistants: {listing['messages']:,}-message thread, a page of {listing['page']}:"
        f" newest median {listing['newest']['median_ms']} ms (p95"
        f" {listing['newest']['p95_ms']} ms), middle (after cursor) median"
        f" {listing['middle']['median_ms']} ms (p95 {listing['middle']['p95_ms']} ms), target"
        f" < {listing['target_ms']:g} ms{'' if listing['correct'] else ' (WRONG PAGE)'}"
    )


def _flight_line(flight: dict[str, Any]) -> str:
    refused = flight["refused"]
    return (
        f"assistants: {flight['wanted']:,} runs in flight ({flight['in_progress_at_sample']}"
        f" in_progress, all started in {flight['open_seconds']} s): worker"
        f" {flight['rss']['worker_mb']:.1f} MB, master {flight['rss']['master_mb']:.1f} MB,"
        f" sum {flight['rss']['sum_mb']:.1f} MB (target <= {flight['target_mb']:g} MB); all"
        f" cancelled in {flight['cancel_seconds']} s: {flight['ended']}"
        + (f"; {refused} creations REFUSED, {flight['refusals']}" if refused else "")
    )


_LINES = {"runs": _runs_line, "listing": _listing_line, "in_flight": _flight_line}


def _wrap(line: str) -> list[str]:
    return textwrap.wrap(line, width=96, subsequent_indent="    ")


def lines(result: dict[str, Any]) -> list[str]:
    """The step's figures, each beside its target."""
    return [w for key, line in _LINES.items() if key in result for w in _wrap(line(result[key]))]


def _show(key: str, value: dict[str, Any]) -> None:
    for line in _wrap(_LINES[key](value)):
        print(f"  {line}", file=sys.stderr, flush=True)
