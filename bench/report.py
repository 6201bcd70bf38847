"""The benchmark's table, its PASS/FAIL targets, and the JSON written next to it."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench import adapters, assistants

THROUGHPUT_MIN_PCT = 80.0  # full path req/s as % of the floor's, at c=16
ADDED_P50_MAX_MS = 2.5  # full path p50 minus the floor's, at c=1
STREAMS_RSS_MAX_MB = 250.0  # the serving worker's RSS with N streams open
BILLED_THROUGHPUT_MIN_PCT = 80.0  # billed req/s as % of the unattributed call's, at c=16
BILLED_ADDED_P50_MAX_MS = 1.5  # billed p50 minus the unattributed call's, at c=1
USAGE_REPORT_MAX_MS = 100.0
LIMITS_THROUGHPUT_MIN_PCT = 90.0  # rate limits on (ringside) vs off (nolimits), req/s at c=16
# Redis commands per call with limits on: the check on the call's path, plus its share of the
# token settlements, which each process sends together every 50 ms.
LIMITS_REDIS_MAX_PER_REQUEST = 1.1  # the slowest usage report's median over the loaded events


def _cell(results: dict[str, Any], target: str, mode: str, conc: int) -> dict[str, Any]:
    for cell in results["cells"]:
        if (cell["target"], cell["mode"], cell["concurrency"]) == (target, mode, conc):
            found: dict[str, Any] = cell
            return found
    raise KeyError((target, mode, conc))


def checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets, each with its value and a verdict (a cell with errors never passes)."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float, unit: str, ok: bool, clean: bool, info: str = "") -> None:
        verdict = ("PASS" if ok else "FAIL") if clean else "FAIL (errors)"
        out.append({"check": name, "value": round(value, 2), "unit": unit, "verdict": verdict,
                    "info": info})  # fmt: skip

    for mode in ("plain", "stream"):
        gw, fl = _cell(results, "ringside", mode, 16), _cell(results, "floor", mode, 16)
        pct = 100.0 * gw["rps"] / fl["rps"] if fl["rps"] else 0.0
        clean = not (gw["errors"] or fl["errors"])
        cpu_pct = 100.0 * fl["cpu_ms_per_request"] / max(gw["cpu_ms_per_request"], 1e-9)
        add(f"throughput vs floor, c=16, {mode}", pct, "%", pct >= THROUGHPUT_MIN_PCT, clean,
            f"target >= {THROUGHPUT_MIN_PCT:g}%; by CPU per request: {cpu_pct:.0f}%,"
            f" {gw['cpu_ms_per_request']:.2f} vs {fl['cpu_ms_per_request']:.2f} ms")  # fmt: skip
    for mode in ("plain", "stream"):
        gw, fl = _cell(results, "ringside", mode, 1), _cell(results, "floor", mode, 1)
        direct = _cell(results, "direct", mode, 1)
        added = gw["p50_ms"] - fl["p50_ms"]
        clean = not (gw["errors"] or fl["errors"])
        add(f"added p50 vs floor, c=1, {mode}", added, "ms", added <= ADDED_P50_MAX_MS, clean,
            f"target <= {ADDED_P50_MAX_MS:g} ms; vs direct "
            f"+{gw['p50_ms'] - direct['p50_ms']:.2f} ms")  # fmt: skip
    for mode in ("plain", "stream"):
        bi, gw = _cell(results, "billed", mode, 16), _cell(results, "ringside", mode, 16)
        pct = 100.0 * bi["rps"] / gw["rps"] if gw["rps"] else 0.0
        clean = not (bi["errors"] or gw["errors"])
        add(f"billed vs unattributed throughput, c=16, {mode}", pct, "%",
            pct >= BILLED_THROUGHPUT_MIN_PCT, clean,
            f"target >= {BILLED_THROUGHPUT_MIN_PCT:g}%; {bi['rps']:.1f} vs {gw['rps']:.1f} req/s;"
            f" {_cpu_compare(bi, gw)}")  # fmt: skip
    for mode in ("plain", "stream"):
        bi, gw = _cell(results, "billed", mode, 1), _cell(results, "ringside", mode, 1)
        added = bi["p50_ms"] - gw["p50_ms"]
        clean = not (bi["errors"] or gw["errors"])
        add(f"billed added p50 vs unattributed, c=1, {mode}", added, "ms",
            added <= BILLED_ADDED_P50_MAX_MS, clean,
            f"target <= {BILLED_ADDED_P50_MAX_MS:g} ms; {bi['p50_ms']:.2f} vs {gw['p50_ms']:.2f}"
            f" ms; {_cpu_compare(bi, gw)}")  # fmt: skip
    _limit_checks(results, add)
    usage = results.get("usage_reports")
    if usage:
        ranked = sorted(usage["reports"], key=lambda r: r["median_ms"], reverse=True)
        slowest, runner_up = ranked[0], ranked[1]
        add(
            f"usage report over {usage['loaded']['events']:,} events",
            slowest["median_ms"],
            "ms",
            slowest["median_ms"] < USAGE_REPORT_MAX_MS,
            usage["cross_check"]["matches"],
            f"target < {USAGE_REPORT_MAX_MS:g} ms, median of the slowest: {slowest['report']},"
            f" p95 {slowest['p95_ms']:.1f} ms, its query alone {slowest['sql_median_ms']:.1f} ms,"
            f" {slowest['rows']} rows; next: {runner_up['report']}"
            f" {runner_up['median_ms']:.1f} ms",
        )
    if results.get("assistants"):
        for target in assistants.targets(results["assistants"]):
            add(*target)
    if results.get("adapters"):
        for target in adapters.targets(results["adapters"]):
            add(*target)
    probe = results["memory"]["streams"]
    rss = probe["rss"]["worker_mb"]
    all_open = probe["opened"] == probe["wanted"]
    add(f"worker RSS, {probe['wanted']} open streams", rss, "MB", rss <= STREAMS_RSS_MAX_MB,
        all_open, f"target <= {STREAMS_RSS_MAX_MB:g} MB; {probe['opened']} opened")  # fmt: skip
    return out


def _limit_checks(results: dict[str, Any], add: Callable[..., None]) -> None:
    """Rate limits on vs off in the same run, and the Redis commands a call costs."""
    if not any(c["target"] == "nolimits" for c in results["cells"]):
        return
    for mode in ("plain", "stream"):
        on, off = _cell(results, "ringside", mode, 16), _cell(results, "nolimits", mode, 16)
        pct = 100.0 * on["rps"] / off["rps"] if off["rps"] else 0.0
        add(f"limits on vs off throughput, c=16, {mode}", pct, "%",
            pct >= LIMITS_THROUGHPUT_MIN_PCT, not (on["errors"] or off["errors"]),
            f"target >= {LIMITS_THROUGHPUT_MIN_PCT:g}%; {on['rps']:.1f} vs {off['rps']:.1f} req/s;"
            f" {_cpu_compare(on, off)}")  # fmt: skip
    redis_use = (results.get("rate_limits") or {}).get("redis_commands")
    if redis_use and "ringside" in redis_use and "nolimits" in redis_use:
        on, off = redis_use["ringside"], redis_use["nolimits"]
        checks = on["checks_per_request"]
        allowed = 1.0 + on["in_flight_allowance"]
        add("Redis round trips on a call's path, limits on, c=16", checks, "",
            checks <= allowed and off["round_trips_per_request"] <= off["in_flight_allowance"],
            not (on["errors"] or off["errors"]),
            f"target <= 1 (+{on['in_flight_allowance']:.3f} for calls in flight when wrk"
            f" stopped); off the path, batched settlements:"
            f" {on['settlements_per_request']:.3f}/call; all round trips"
            f" {on['round_trips_per_request']:.3f}/call over {on['requests']} calls;"
            f" limits off: {off['round_trips_per_request']:.3f}/call")  # fmt: skip


def _cpu_compare(billed: dict[str, Any], plain: dict[str, Any]) -> str:
    """CPU per request, the gateway worker's and its PostgreSQL's, billed vs unattributed."""
    out = (f"worker CPU {billed['cpu_ms_per_request']:.2f} vs"
           f" {plain['cpu_ms_per_request']:.2f} ms/req")  # fmt: skip
    if billed.get("db_cpu_ms_per_request") is not None and plain.get("db_cpu_ms_per_request"):
        out += (f", PostgreSQL {billed['db_cpu_ms_per_request']:.2f} vs"
                f" {plain['db_cpu_ms_per_request']:.2f} ms/req")  # fmt: skip
    return out


def _pg(cell: dict[str, Any]) -> str:
    value = cell.get("db_cpu_ms_per_request")
    return f"{'-':>10}" if value is None else f"{value:>10.2f}"


def _mem(sample: dict[str, float]) -> str:
    return (f"worker {sample['worker_mb']:7.1f} MB   master {sample['master_mb']:6.1f} MB"
            f"   sum {sample['sum_mb']:7.1f} MB")  # fmt: skip


def render(results: dict[str, Any]) -> str:
    cpus = os.cpu_count()
    lines = [
        f"Ringside benchmark  127.0.0.1, {cpus} CPUs, wrk, {results['duration_s']:g}s per cell"
        f" x {results['rounds']} round(s), medians,"
        f" gateway model {results['model']} ({results['gateway_app']})",
        "",
        f"{'target':<9}{'mode':<8}{'conc':>5}{'req/s':>11}{'p50 ms':>10}{'p99 ms':>10}"
        f"{'requests':>10}{'errors':>8}{'cpu ms/req':>12}{'pg ms/req':>10}",
    ]
    flagged = 0
    for cell in results["cells"]:
        mark = "  <-- non-2xx/socket errors" if cell["errors"] else ""
        flagged += bool(cell["errors"])
        lines.append(
            f"{cell['target']:<9}{cell['mode']:<8}{cell['concurrency']:>5}{cell['rps']:>11.1f}"
            f"{cell['p50_ms']:>10.2f}{cell['p99_ms']:>10.2f}{cell['requests']:>10}"
            f"{cell['errors']:>8}{cell['cpu_ms_per_request']:>12.2f}{_pg(cell)}{mark}"
        )
    mem = results["memory"]
    probe = mem["streams"]
    lines += [
        "",
        "Ringside resident memory (VmRSS; embedded PostgreSQL/Redis not included)",
        f"  idle at start        {_mem(mem['idle_start'])}",
        f"  idle after load      {_mem(mem['idle_after_load'])}",
        f"  {str(probe['wanted']) + ' open streams':<21}{_mem(probe['rss'])}"
        f"   ({probe['opened']} opened, {probe['failed']} failed,"
        f" in {probe['open_seconds']:.1f}s)",
        f"  after closing them   {_mem(mem['after_streams'])}",
    ]
    if results.get("billed"):
        b = results["billed"]
        lines += [
            "",
            f"billed: the ringside call with FC-Customer: {b['customer']} (monthly budget"
            f" ${b['monthly_budget_usd']}, wallet topped up ${b['wallet_topup_usd']}); first call"
            f" {', '.join(f'{k}: {v}' for k, v in b['first_call_headers'].items())}",
        ]
    if results.get("usage_reports"):
        lines += ["", *_usage_lines(results["usage_reports"])]
    if results.get("assistants"):
        lines += ["", *assistants.lines(results["assistants"])]
    if results.get("adapters"):
        lines += ["", *adapters.lines(results["adapters"])]
    lines += ["", "Targets"]
    lines += _target_lines(results)
    if flagged:
        lines.append(f"\nWARNING: {flagged} cell(s) had non-2xx responses or socket errors.")
    lines += [f"NOTE: {note}" for note in results["notes"]]
    return "\n".join(lines)


def step_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of ``--only assistants`` / ``--only adapters``."""
    found = (
        assistants.targets(results["assistants"]) if "assistants" in results
        else adapters.targets(results["adapters"])
    )  # fmt: skip
    return [
        {"check": name, "value": round(value, 2), "unit": unit, "info": info,
         "verdict": ("PASS" if ok else "FAIL") if clean else "FAIL (errors)"}
        for name, value, unit, ok, clean, info in found
    ]  # fmt: skip


def render_step(results: dict[str, Any]) -> str:
    """The table of ``--only assistants`` / ``--only adapters``."""
    step = (
        assistants.lines(results["assistants"]) if "assistants" in results
        else adapters.lines(results["adapters"])
    )  # fmt: skip
    lines = [
        f"Ringside benchmark step  127.0.0.1, {os.cpu_count()} CPUs, gateway model"
        f" {results['model']} ({results['gateway_app']})",
        "",
        *step,
        "",
        "Targets",
        *_target_lines(results),
    ]
    return "\n".join(lines)


def _target_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    for check in results["checks"]:
        lines.append(
            f"  {check['verdict']:<14}{check['check']:<48}{check['value']:>9.2f} {check['unit']:<3}"
            f"  ({check['info']})"
        )
    return lines


def _usage_lines(usage: dict[str, Any]) -> list[str]:
    loaded = usage["loaded"]
    span = f"{usage['range']['from']}..{usage['range']['to']}"
    lines = [
        f"Usage reports, {span}, over {loaded['events']:,} loaded usage events"
        f" ({loaded['customers']:,} customers, {loaded['usage_daily_rows']:,} usage_daily rows),",
        *textwrap.wrap(
            f"loaded in {loaded['load_seconds']:.1f}s by SQL, not through the gateway:"
            f" {loaded['how']}.",
            width=96,
            initial_indent="  ",
            subsequent_indent="  ",
        ),
        f"{'report':<32}{'median ms':>10}{'p95 ms':>10}{'sql ms':>10}{'rows':>8}{'bytes':>11}"
        f"{'n':>4}",
    ]
    for r in usage["reports"]:
        lines.append(
            f"{r['report']:<32}{r['median_ms']:>10.2f}{r['p95_ms']:>10.2f}"
            f"{r['sql_median_ms']:>10.2f}{r['rows']:>8}"
            f"{r['bytes']:>11}{r['repeats']:>4}"
        )
    check = usage["cross_check"]
    lines += [
        "  (median/p95 over HTTP with the developer key; sql: the report's query alone, from the"
        " bench)",
        f"  total_billable_usd of /v1/usage = sum(usage_event.billable_usd) ="
        f" {check['sum_usage_event_billable_usd']} over {loaded['events_total']:,} events, and of"
        f" the customer's = {check['customer_sum_usage_event_billable_usd']}"
        f" ({'match' if check['matches'] else 'MISMATCH'})",
    ]
    return lines


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
