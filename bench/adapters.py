"""The adapters step: the same chat call through the OpenAI-wire path and through the native
Anthropic and Gemini adapters, the simulator answering each in its own wire format.

For every provider two targets are loaded back to back with wrk, plain and streamed, at c=1 and
c=16: ``direct-<p>`` posts the provider's native request to the simulator itself, ``gw-<p>``
posts the OpenAI request to the gateway (unattributed, as the ``ringside`` load cells). What a
path adds is the gateway's p50 minus its own direct p50 (so the simulator's cost of speaking
each format is not charged to the adapter); throughput is the gateway's req/s. The targets:
each adapter's throughput at c=16 is at least 85 % of the OpenAI-wire path's, and its added
p50 at c=1 at most 115 % of the OpenAI-wire path's, both in the same run. The gateway worker's
CPU time per request is printed beside them (steadier than wall-clock figures on a shared VM).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import cpu_seconds, run_wrk, write_lua

PROMPT = "Summarise the quarterly report in three short bullet points for the team"
CONCURRENCY = (1, 16)
MODES = ("plain", "stream")
THROUGHPUT_MIN_PCT = 85.0
ADDED_MAX_PCT = 115.0
KEY = "sk-bench"

# provider -> (gateway model ref, provider model id)
MODELS = {
    "openai": ("fc:openai/gpt-4o-mini", "gpt-4o-mini"),
    "anthropic": ("fc:anthropic/claude-sonnet-5", "claude-sonnet-5"),
    "gemini": ("fc:gemini/gemini-3.8-flash", "gemini-3.8-flash"),
}


def gateway_env(sim: str) -> dict[str, str]:
    """What the gateway needs to reach the simulated native providers."""
    return {
        "ANTHROPIC_BASE_URL": f"{sim}/anthropic",
        "ANTHROPIC_API_KEY": KEY,
        "GEMINI_BASE_URL": f"{sim}/gemini",
        "GEMINI_API_KEY": KEY,
    }


@dataclass(frozen=True)
class AdapterTarget:
    """One target: where each mode posts what."""

    name: str
    provider: str
    urls: dict[str, str]
    bodies: dict[str, dict[str, Any]]
    headers: dict[str, str]


def _openai_body(model: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": PROMPT}]}


def _direct(sim: str, provider: str) -> AdapterTarget:
    model = MODELS[provider][1]
    if provider == "openai":
        url = f"{sim}/openai/v1/chat/completions"
        return AdapterTarget(
            "direct-openai",
            provider,
            {m: url for m in MODES},
            {m: _openai_body(model, m == "stream") for m in MODES},
            {"Authorization": f"Bearer {KEY}"},
        )
    if provider == "anthropic":
        url = f"{sim}/anthropic/v1/messages"
        body = {
            "model": model,
            "max_tokens": 4096,
            "messages": [{"role": "user", "content": PROMPT}],
        }
        return AdapterTarget(
            "direct-anthropic",
            provider,
            {m: url for m in MODES},
            {m: {**body, "stream": m == "stream"} for m in MODES},
            {"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        )
    base = f"{sim}/gemini/v1beta/models/{model}"
    body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
    return AdapterTarget(
        "direct-gemini",
        provider,
        {"plain": f"{base}:generateContent", "stream": f"{base}:streamGenerateContent?alt=sse"},
        {m: body for m in MODES},
        {"x-goog-api-key": KEY},
    )


def _gateway(url: str, auth: dict[str, str], provider: str) -> AdapterTarget:
    ref = MODELS[provider][0]
    return AdapterTarget(
        f"gw-{provider}",
        provider,
        {m: url for m in MODES},
        {m: _openai_body(ref, m == "stream") for m in MODES},
        auth,
    )


def run(sim: str, gateway_url: str, auth: dict[str, str], duration: float, rounds: int,
        workdir: Path, worker: int) -> dict[str, Any]:  # fmt: skip
    """Load every target; cells are medians over ``rounds`` alternating rounds."""
    paths = [p for prov in MODELS for p in (_direct(sim, prov), _gateway(gateway_url, auth, prov))]
    cells: list[dict[str, Any]] = []
    for mode in MODES:
        scripts = {
            p.name: write_lua(workdir / f"adapter-{p.name}-{mode}.lua", p.bodies[mode], p.headers)
            for p in paths
        }
        for p in paths:
            run_wrk(p.urls[mode], scripts[p.name], 8, 1.0)  # warm up
        for conc in CONCURRENCY:
            runs: dict[str, list[Any]] = {p.name: [] for p in paths}
            cpu: dict[str, list[float]] = {p.name: [] for p in paths}
            for _ in range(rounds):
                for p in paths:
                    before = cpu_seconds(worker)
                    result = run_wrk(p.urls[mode], scripts[p.name], conc, duration)
                    runs[p.name].append(result)
                    spent = 1000 * (cpu_seconds(worker) - before) / max(result.requests, 1)
                    cpu[p.name].append(spent)
            for p in paths:
                results = sorted(runs[p.name], key=lambda r: r.rps)
                mid = results[len(results) // 2]
                p50 = sorted(r.p50_ms for r in results)[len(results) // 2]
                cell = {"target": p.name, "provider": p.provider, "mode": mode,
                        "concurrency": conc, "rps": round(mid.rps, 1), "p50_ms": round(p50, 3),
                        "p99_ms": round(mid.p99_ms, 3),
                        "errors": sum(r.errors for r in results)}  # fmt: skip
                if p.name.startswith("gw-"):  # the gateway worker's CPU per request
                    cell["cpu_ms_per_request"] = round(sorted(cpu[p.name])[len(results) // 2], 3)
                cells.append(cell)
                print(f"  {p.name:<16} {mode:<6} c={conc:<3} {cell['rps']:>9.1f} req/s"
                      f"  p50 {cell['p50_ms']:.2f} ms"
                      + (f"  ERRORS {cell['errors']}" if cell["errors"] else ""),
                      file=sys.stderr, flush=True)  # fmt: skip
    return {"cells": cells, "duration_s": duration, "rounds": rounds}


def _cell(result: dict[str, Any], target: str, mode: str, conc: int) -> dict[str, Any]:
    for c in result["cells"]:
        if (c["target"], c["mode"], c["concurrency"]) == (target, mode, conc):
            found: dict[str, Any] = c
            return found
    raise KeyError((target, mode, conc))


def _added(result: dict[str, Any], provider: str, mode: str) -> float:
    gw = _cell(result, f"gw-{provider}", mode, 1)
    direct = _cell(result, f"direct-{provider}", mode, 1)
    return float(gw["p50_ms"] - direct["p50_ms"])


def _cpu(result: dict[str, Any], provider: str, mode: str) -> str:
    cpu = _cell(result, f"gw-{provider}", mode, 16).get("cpu_ms_per_request")
    return "?" if cpu is None else f"{cpu:.2f}"


def targets(result: dict[str, Any]) -> list[tuple[str, float, str, bool, bool, str]]:
    """(name, value, unit, ok, clean, info) for each adapter and mode."""
    out = []
    for provider in ("anthropic", "gemini"):
        for mode in MODES:
            gw, base = (
                _cell(result, f"gw-{provider}", mode, 16),
                _cell(result, "gw-openai", mode, 16),
            )
            pct = 100.0 * gw["rps"] / base["rps"] if base["rps"] else 0.0
            out.append((
                f"{provider} adapter throughput vs OpenAI wire, c=16, {mode}", pct, "%",
                pct >= THROUGHPUT_MIN_PCT, not (gw["errors"] or base["errors"]),
                f"target >= {THROUGHPUT_MIN_PCT:g}%; {gw['rps']:.1f} vs {base['rps']:.1f} req/s",
            ))  # fmt: skip
            added, base_added = _added(result, provider, mode), _added(result, "openai", mode)
            limit = base_added * ADDED_MAX_PCT / 100.0
            clean = not any(
                _cell(result, f"{kind}-{p}", mode, 1)["errors"]
                for kind in ("gw", "direct") for p in (provider, "openai")
            )  # fmt: skip
            out.append((
                f"{provider} adapter added p50, c=1, {mode}", added, "ms", added <= limit, clean,
                f"target <= {limit:.2f} ms ({ADDED_MAX_PCT:g}% of the OpenAI wire's"
                f" +{base_added:.2f} ms); each vs its own direct p50; gateway CPU"
                f" {_cpu(result, provider, mode)} vs {_cpu(result, 'openai', mode)} ms/req",
            ))  # fmt: skip
    return out


def lines(result: dict[str, Any]) -> list[str]:
    out = [
        f"Adapters ({result['duration_s']:g}s per cell x {result['rounds']} round(s)): req/s at"
        " c=16 and p50 ms at c=1, direct to the simulator vs through the gateway"
    ]
    for provider in MODELS:
        for mode in MODES:
            d16 = _cell(result, f"direct-{provider}", mode, 16)
            g16 = _cell(result, f"gw-{provider}", mode, 16)
            d1 = _cell(result, f"direct-{provider}", mode, 1)
            g1 = _cell(result, f"gw-{provider}", mode, 1)
            out.append(
                f"  {provider:<10}{mode:<7} direct {d16['rps']:>8.1f} req/s, p50 {d1['p50_ms']:.2f}"
                f" ms; gateway {g16['rps']:>8.1f} req/s, p50 {g1['p50_ms']:.2f} ms"
                f" (+{g1['p50_ms'] - d1['p50_ms']:.2f} ms), cpu {_cpu(result, provider, mode)}"
                " ms/req"
            )
    return out
