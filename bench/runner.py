"""One benchmark run: start the simulator, the stack floor and Ringside, load each with wrk, then
probe Ringside's memory with many open streams."""

from __future__ import annotations

import os
import re
import secrets
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import adapters, assistants
from bench.harness import (
    BenchError,
    Child,
    Children,
    cpu_seconds,
    free_port,
    hypercorn_worker,
    rss_mb,
    run_wrk,
    tree_cpu_seconds,
    wait_ready,
    write_lua,
)
from bench.rate_limits import redis_commands_per_request
from bench.streams import StreamProbe, probe_streams, raise_fd_limit, slow_stream_body
from bench.usage_reports import run_usage_reports

CONCURRENCY = (1, 16, 64)
MODES = ("plain", "stream")
PROMPT = "Summarise the quarterly report in three short bullet points for the team"
CUSTOMER = "bench-customer"  # the billed target's customer: a budget and a topped-up wallet
BUDGET_USD = "100000000"
# Rate limits stay on (every call still runs the limiter's Redis script) but far above what
# one machine can send: the defaults (600 requests a minute for the developer tier) would
# refuse most of a cell's calls with 429.
_BENCH_CONFIG = """\
[limits]
ip = { rpm = 1000000000, tpm = 0 }
[limits.tiers.developer]
rpm = 1000000000
tpm = 1000000000000
[limits.tiers.pro]
rpm = 1000000000
tpm = 1000000000000
"""


@dataclass(frozen=True)
class Options:
    duration: float
    streams: int
    rounds: int = 1
    warmup: float = 1.0
    quick: bool = False  # smaller assistants step too


@dataclass(frozen=True)
class Target:
    name: str
    url: str  # the chat completions URL
    model: str
    headers: dict[str, str]
    pid: int  # the process serving it, for CPU time per request
    db_pid: int | None = None  # its PostgreSQL's postmaster, for the database's CPU per request


@dataclass(frozen=True)
class Gateway:
    plain: Target  # the unattributed call
    billed: Target  # the same call attributed to a customer with a budget and a wallet
    child: Child
    base_url: str
    auth: dict[str, str]
    developer_id: str
    data_dir: Path
    first_billed: dict[str, str]  # the billing headers of the first billed call


def _body(model: str, stream: bool) -> dict[str, object]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": PROMPT}]}


def _hypercorn(port: int, app: str) -> list[str]:
    return [
        sys.executable, "-m", "hypercorn", "-k", "trio", "--workers", "1",
        "--backlog", "2048", "-b", f"127.0.0.1:{port}", app,
    ]  # fmt: skip


def start_simulator(children: Children) -> tuple[str, int]:
    port = free_port()
    argv = [sys.executable, "-m", "tests.simulator", "--host", "127.0.0.1", "--port", str(port)]
    child = children.spawn("simulator", argv)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"simulator listening on (\S+)", child.log.read_text())
        if match:
            return match[1], child.proc.pid
        if not child.alive():
            break
        time.sleep(0.1)
    raise BenchError("the simulator did not start")


def start_floor(children: Children, sim_openai: str) -> Target:
    port = free_port()
    env = {**os.environ, "STACK_FLOOR_UPSTREAM": sim_openai, "STACK_FLOOR_API_KEY": "sk-bench"}
    child = children.spawn("stack_floor", _hypercorn(port, "bench.stack_floor:app"), env)
    base = f"http://127.0.0.1:{port}"
    _wait_post(child, f"{base}/v1/chat/completions", _body("gpt-4o-mini", False), {})
    worker = hypercorn_worker(child.proc.pid)
    return Target("floor", f"{base}/v1/chat/completions", "gpt-4o-mini", {}, worker)


def _wait_post(child: Child, url: str, body: dict[str, object], headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if not child.alive():
                raise BenchError(f"{child.name} exited (status {child.proc.returncode})")
            try:
                if client.post(url, json=body, headers=headers).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise BenchError(f"{child.name} never answered POST {url}")


def start_gateway(children: Children, sim_openai: str, app: str) -> Gateway:
    port = free_port()
    admin_key = secrets.token_urlsafe(24)
    data_dir = children.workdir / "ringside-data"
    config = children.workdir / "ringside.toml"
    config.write_text(_BENCH_CONFIG)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {
        "RINGSIDE_CONFIG": str(config),
        "RINGSIDE_DATA_DIR": str(data_dir),
        "RINGSIDE_ADMIN_KEY": admin_key,
        "OPENAI_BASE_URL": sim_openai,
        "OPENAI_API_KEY": "sk-bench",
        **adapters.gateway_env(sim_openai.removesuffix("/openai/v1")),
    }
    child = children.spawn("ringside", _hypercorn(port, app), env)
    base = f"http://127.0.0.1:{port}"
    wait_ready(child, f"{base}/readyz", timeout=120)
    with httpx.Client(base_url=base, timeout=30.0, trust_env=False) as client:
        made = client.post(
            "/admin/v1/developers",
            json={"name": "bench"},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
        if made.status_code != 201:
            raise BenchError(f"creating the developer failed: {made.status_code} {made.text}")
        developer_id = made.json()["id"]
        auth = {"Authorization": f"Bearer {made.json()['api_key']['key']}"}
        _create_customer(client, auth)
        listed = client.get("/v1/models", headers=auth)
        listed.raise_for_status()
        ids = [m["id"] for m in listed.json()["data"]]
    model = _pick_model(ids)
    url = f"{base}/v1/chat/completions"
    _wait_post(child, url, _body(model, False), auth)
    billed_headers = {**auth, "FC-Customer": CUSTOMER}
    first_billed = _first_billed_call(url, _body(model, False), billed_headers)
    worker = hypercorn_worker(child.proc.pid)
    db_pid = _postmaster(data_dir)
    return Gateway(
        plain=Target("ringside", url, model, auth, worker, db_pid),
        billed=Target("billed", url, model, billed_headers, worker, db_pid),
        child=child,
        base_url=base,
        auth=auth,
        developer_id=developer_id,
        data_dir=data_dir,
        first_billed=first_billed,
    )


def start_unlimited(children: Children, sim_openai: str, app: str, gw: Gateway) -> Target:
    """A second gateway on the same data (so the same developer and key) with rate limits off:
    the limiter's cost is the difference between it and ``ringside``, measured in one run."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {
        "RINGSIDE_DATA_DIR": str(gw.data_dir),
        "RINGSIDE_RATE_LIMITS": "off",
        "OPENAI_BASE_URL": sim_openai,
        "OPENAI_API_KEY": "sk-bench",
    }
    child = children.spawn("ringside-nolimits", _hypercorn(port, app), env)
    base = f"http://127.0.0.1:{port}"
    wait_ready(child, f"{base}/readyz", timeout=120)
    url = f"{base}/v1/chat/completions"
    _wait_post(child, url, _body(gw.plain.model, False), gw.auth)
    worker = hypercorn_worker(child.proc.pid)
    return Target("nolimits", url, gw.plain.model, gw.auth, worker, gw.plain.db_pid)


def _create_customer(client: httpx.Client, auth: dict[str, str]) -> None:
    made = client.post(
        "/v1/customers",
        json={"external_id": CUSTOMER, "monthly_budget_usd": BUDGET_USD},
        headers=auth,
    )
    if made.status_code not in (200, 201):
        raise BenchError(f"creating the customer failed: {made.status_code} {made.text}")
    topped = client.post(
        f"/v1/customers/{CUSTOMER}/wallet/topup", json={"amount_usd": BUDGET_USD}, headers=auth
    )
    if topped.status_code not in (200, 201):
        raise BenchError(f"topping up the wallet failed: {topped.status_code} {topped.text}")


def _first_billed_call(
    url: str, body: dict[str, object], headers: dict[str, str]
) -> dict[str, str]:
    with httpx.Client(timeout=30.0, trust_env=False) as client:
        resp = client.post(url, json=body, headers=headers)
    billing = {k: v for k, v in resp.headers.items() if k.lower().startswith("x-ringside-wallet")}
    if resp.status_code != 200 or "x-ringside-wallet-deducted" not in resp.headers:
        raise BenchError(
            f"the first billed call answered {resp.status_code} with billing headers {billing}"
            f" (X-Ringside-Wallet-Deducted expected): {resp.text[:300]}"
        )
    return billing


def _postmaster(data_dir: Path) -> int | None:
    """The embedded PostgreSQL's postmaster (its pid is postmaster.pid's first line)."""
    try:
        return int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def _pick_model(ids: list[str]) -> str:
    if "fc:openai/gpt-4o-mini" in ids:
        return "fc:openai/gpt-4o-mini"
    chat = [i for i in ids if i.startswith("fc:openai/") and "embedding" not in i]
    if not chat:
        raise BenchError(f"no fc:openai/ chat model in GET /v1/models: {ids}")
    return chat[0]


def load_cells(targets: list[Target], opts: Options, workdir: Path) -> list[dict[str, Any]]:
    """Every (mode, concurrency) cell for each target, run back to back across targets so that
    background noise on the machine hits the compared cells alike."""
    cells: list[dict[str, Any]] = []
    for mode in MODES:
        scripts = {
            t.name: write_lua(workdir / f"{t.name}-{mode}.lua",
                              _body(t.model, mode == "stream"), t.headers)
            for t in targets
        }  # fmt: skip
        for t in targets:  # warm caches, pools and connections
            run_wrk(t.url, scripts[t.name], 16, opts.warmup)
        for conc in CONCURRENCY:
            runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
            # Rounds alternate the targets, so slow spells of the machine hit them alike.
            for _ in range(opts.rounds):
                for t in targets:
                    runs[t.name].append(_measure(t, scripts[t.name], conc, opts.duration))
            for t in targets:
                cell = _median_cell(runs[t.name])
                cells.append({"target": t.name, "mode": mode, "concurrency": conc, **cell})
                print(
                    f"  {t.name:<8} {mode:<6} c={conc:<3} {cell['rps']:>9.1f} req/s"
                    f"  p50 {cell['p50_ms']:.2f} ms  p99 {cell['p99_ms']:.2f} ms"
                    f"  cpu {cell['cpu_ms_per_request']:.2f} ms/req"
                    + (
                        f"  pg {cell['db_cpu_ms_per_request']:.2f} ms/req"
                        if cell.get("db_cpu_ms_per_request") is not None
                        else ""
                    )
                    + (f"  ERRORS {cell['errors']}" if cell["errors"] else ""),
                    file=sys.stderr,
                    flush=True,
                )
    order = {t.name: i for i, t in enumerate(targets)}
    return sorted(cells, key=lambda c: (order[c["target"]], MODES.index(c["mode"])))


def _measure(t: Target, script: Path, conc: int, duration: float) -> dict[str, Any]:
    before = cpu_seconds(t.pid)
    db_before = tree_cpu_seconds(t.db_pid) if t.db_pid else 0.0
    result = run_wrk(t.url, script, conc, duration)
    n = max(result.requests, 1)
    cpu_ms = 1000 * (cpu_seconds(t.pid) - before) / n
    db_ms = 1000 * (tree_cpu_seconds(t.db_pid) - db_before) / n if t.db_pid else None
    return {
        **asdict(result),
        "errors": result.errors,
        "cpu_ms_per_request": round(cpu_ms, 3),
        "db_cpu_ms_per_request": None if db_ms is None else round(db_ms, 3),
    }


def _median_cell(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the rounds' rates, latencies and CPU; requests and errors are summed."""
    cell = {k: statistics.median(r[k] for r in runs)
            for k in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request")}  # fmt: skip
    db = [r["db_cpu_ms_per_request"] for r in runs if r["db_cpu_ms_per_request"] is not None]
    cell["db_cpu_ms_per_request"] = statistics.median(db) if db else None
    for k in ("requests", "non_2xx", "socket_errors", "errors"):
        cell[k] = sum(r[k] for r in runs)
    cell["rounds"] = len(runs)
    return cell


def non_2xx(log: Path) -> dict[str, int]:
    """The gateway's answers other than 2xx so far, by status (from its JSON access log): what
    wrk only counts."""
    counts: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        status = entry.get("status")
        if entry.get("logger") == "ringside.access" and isinstance(status, int) and status >= 300:
            counts[f"{status} {entry.get('outcome') or entry.get('code') or ''}".strip()] += 1
    return dict(counts.most_common())


def memory(master: int) -> dict[str, float]:
    worker = hypercorn_worker(master)
    sample = {"worker_mb": rss_mb(worker), "master_mb": rss_mb(master)}
    return {**sample, "sum_mb": sample["worker_mb"] + sample["master_mb"]}


def _assistants(gw: Gateway, opts: Options) -> dict[str, Any]:
    sizes = assistants.QUICK_SIZES if opts.quick else {}
    return assistants.run_assistants(
        gw.data_dir, gw.base_url, gw.billed.headers, gw.plain.model,
        lambda: memory(gw.child.proc.pid), **sizes,
    )  # fmt: skip


def _adapters(sim: str, gw: Gateway, opts: Options, workdir: Path) -> dict[str, Any]:
    """The adapters step, at half the cell duration (it loads six targets)."""
    print("adapters: OpenAI wire vs Anthropic and Gemini", file=sys.stderr, flush=True)
    return adapters.run(sim, gw.plain.url, gw.auth, max(opts.duration / 2, 2.0), opts.rounds,
                        workdir, gw.plain.pid)  # fmt: skip


def run_adapters_only(opts: Options, workdir: Path) -> dict[str, Any]:
    """``--only adapters``: the simulator, one gateway and the adapters step."""
    children = Children(workdir)
    try:
        sim, _ = start_simulator(children)
        gw = start_gateway(children, f"{sim}/openai/v1", "ringside:app")
        return {"gateway_app": "ringside:app", "model": gw.plain.model,
                "adapters": _adapters(sim, gw, opts, workdir)}  # fmt: skip
    except (BenchError, KeyboardInterrupt, OSError, httpx.HTTPError):
        print(f"benchmark aborted; child logs:\n{children.logs()}", file=sys.stderr)
        raise
    finally:
        children.close()


def run_assistants_only(opts: Options, workdir: Path) -> dict[str, Any]:
    """``--only assistants``: the simulator, one gateway and the assistants step, no wrk."""
    raise_fd_limit(assistants.IN_FLIGHT * 3 + 512)  # before spawning: the servers inherit it
    children = Children(workdir)
    try:
        sim, _ = start_simulator(children)
        gw = start_gateway(children, f"{sim}/openai/v1", "ringside:app")
        return {"gateway_app": "ringside:app", "model": gw.plain.model,
                "assistants": _assistants(gw, opts)}  # fmt: skip
    except (BenchError, KeyboardInterrupt, OSError, httpx.HTTPError):
        print(f"benchmark aborted; child logs:\n{children.logs()}", file=sys.stderr)
        raise
    finally:
        children.close()


def run(opts: Options, workdir: Path) -> dict[str, Any]:
    raise_fd_limit(opts.streams + 512)  # before spawning: the servers inherit it
    app = "ringside:app"
    children = Children(workdir)
    try:
        sim, sim_pid = start_simulator(children)
        sim_openai = f"{sim}/openai/v1"
        direct = Target("direct", f"{sim_openai}/chat/completions", "gpt-4o-mini",
                        {"Authorization": "Bearer sk-bench"}, sim_pid)  # fmt: skip
        floor = start_floor(children, sim_openai)
        gw = start_gateway(children, sim_openai, app)
        gateway, gw_child = gw.plain, gw.child
        idle_start = memory(gw_child.proc.pid)
        unlimited = start_unlimited(children, sim_openai, app, gw)
        cells = load_cells([direct, floor, gateway, gw.billed, unlimited], opts, workdir)
        native = _adapters(sim, gw, opts, workdir)
        redis_use = redis_commands_per_request(
            gw.data_dir,
            [(t.name, t.url, _body(t.model, False), t.headers) for t in (gateway, unlimited)],
            workdir,
            min(opts.duration, 3.0),
        )
        idle_loaded = memory(gw_child.proc.pid)
        refused = non_2xx(gw_child.log)
        notes = [
            f"gateway answers other than 2xx in the load cells: {refused} (499: calls in flight"
            " when wrk closed its connections at the end of a cell; wrk does not count them)"
        ] if refused else []  # fmt: skip
        probe: StreamProbe = probe_streams(
            gateway.url, slow_stream_body(gateway.model), gateway.headers, opts.streams,
            lambda: memory(gw_child.proc.pid),
        )  # fmt: skip
        time.sleep(2.0)
        after = memory(gw_child.proc.pid)
        # After the stream probe, so its figure stays comparable with earlier runs; the RSS
        # with runs in flight is then an upper bound (the probe's peak stays in the heap).
        runs: dict[str, Any] | None = None
        try:
            runs = _assistants(gw, opts)
        except BenchError as exc:  # the other steps' figures still count
            notes.append(f"the assistants step failed: {exc}")
        # Last: its big report bodies would weigh on the worker's RSS in the probe above.
        usage = run_usage_reports(gw.data_dir, gw.base_url, gw.auth, gw.developer_id)
        if usage["loaded"]["holds_left"]:
            sample = ", ".join(
                f"{h['request_id']} ({'stream' if h['stream'] else 'plain'},"
                f" {'billed' if h['customer_id'] else 'unattributed'}, {h['age_s']} s old)"
                for h in usage["loaded"]["holds_sample"][:3]
            )
            notes.append(
                f"{usage['loaded']['holds_left']} billing holds of the load cells' calls were"
                f" never settled (still open when the usage load began), e.g. {sample}"
            )
        return {
            "gateway_app": app,
            "notes": notes,
            "gateway_non_2xx": refused,
            "rate_limits": {"redis_commands": redis_use},
            "model": gateway.model,
            "duration_s": opts.duration,
            "rounds": opts.rounds,
            "cells": cells,
            "billed": {"customer": CUSTOMER, "monthly_budget_usd": BUDGET_USD,
                       "wallet_topup_usd": BUDGET_USD, "first_call_headers": gw.first_billed},
            "usage_reports": usage,
            "assistants": runs,
            "adapters": native,
            "memory": {"idle_start": idle_start, "idle_after_load": idle_loaded,
                       "streams": asdict(probe), "after_streams": after},
        }  # fmt: skip
    except (BenchError, KeyboardInterrupt, OSError, httpx.HTTPError):
        print(f"benchmark aborted; child logs:\n{children.logs()}", file=sys.stderr)
        raise
    finally:
        children.close()
