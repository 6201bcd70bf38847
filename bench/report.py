"""The benchmark's table, its PASS/FAIL targets, and the JSON written next to it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

THROUGHPUT_MIN_PCT = 80.0  # full path req/s as % of the floor's, at c=16
ADDED_P50_MAX_MS = 2.5  # full path p50 minus the floor's, at c=1
STREAMS_RSS_MAX_MB = 250.0  # the serving worker's RSS with N streams open


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
    probe = results["memory"]["streams"]
    rss = probe["rss"]["worker_mb"]
    all_open = probe["opened"] == probe["wanted"]
    add(f"worker RSS, {probe['wanted']} open streams", rss, "MB", rss <= STREAMS_RSS_MAX_MB,
        all_open, f"target <= {STREAMS_RSS_MAX_MB:g} MB; {probe['opened']} opened")  # fmt: skip
    return out


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
        f"{'requests':>10}{'errors':>8}{'cpu ms/req':>12}",
    ]
    flagged = 0
    for cell in results["cells"]:
        mark = "  <-- non-2xx/socket errors" if cell["errors"] else ""
        flagged += bool(cell["errors"])
        lines.append(
            f"{cell['target']:<9}{cell['mode']:<8}{cell['concurrency']:>5}{cell['rps']:>11.1f}"
            f"{cell['p50_ms']:>10.2f}{cell['p99_ms']:>10.2f}{cell['requests']:>10}"
            f"{cell['errors']:>8}{cell['cpu_ms_per_request']:>12.2f}{mark}"
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
        "",
        "Targets",
    ]
    for check in results["checks"]:
        lines.append(
            f"  {check['verdict']:<14}{check['check']:<40}{check['value']:>9.2f} {check['unit']:<3}"
            f"  ({check['info']})"
        )
    if flagged:
        lines.append(f"\nWARNING: {flagged} cell(s) had non-2xx responses or socket errors.")
    lines += [f"NOTE: {note}" for note in results["notes"]]
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
