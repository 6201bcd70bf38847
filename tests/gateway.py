"""Running the gateway for tests: a real Hypercorn server on 127.0.0.1, with every provider
pointed at the simulator."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from ringside.factory import create_app
from ringside.services import Services
from ringside.settings import Settings
from ringside.upstream.providers import PROVIDERS
from tests.simulator.app import Simulator
from tests.simulator.server import RunningSimulator

ADMIN_KEY = "admin-test-key"
SIMULATED = [
    "openai",
    "azure_openai",
    "groq",
    "together",
    "fireworks",
    "perplexity",
    "deepseek",
    "xai",
    "cerebras",
    "sambanova",
    "openrouter",
    "ollama",
    "mistral",
    "huggingface",
]


# The native-wire providers, each served by its own simulator module (tests/simulator/native.py).
NATIVE = ["anthropic", "gemini", "cohere", "bedrock", "replicate"]
ALL_PROVIDERS = SIMULATED + NATIVE

# Bedrock signs with AWS credentials (SigV4), not an API key.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIDSIMULATOR000001",
    "AWS_SECRET_ACCESS_KEY": "simulator-secret-access-key",
    "AWS_REGION": "us-east-1",
}


def simulator_env(sim: RunningSimulator) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in ALL_PROVIDERS:
        env[f"{name.upper()}_BASE_URL"] = sim.base_url(name)
        if PROVIDERS[name].key_required and name != "bedrock":
            env[f"{name.upper()}_API_KEY"] = f"sk-{name}-test"
    env.update(AWS_ENV)
    return env


@dataclass
class RunningGateway:
    url: str
    app: Any
    http: httpx.AsyncClient
    sim: Simulator
    clients: list[openai.AsyncOpenAI] = field(default_factory=list)

    @property
    def services(self) -> Services:
        return cast(Services, self.app.extensions["ringside"])

    async def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}", **kw.pop("headers", {})}
        return await self.http.request(method, f"/admin/v1{path}", headers=headers, **kw)

    async def new_developer(self, name: str = "acme", tier: str = "developer") -> dict[str, Any]:
        r = await self.admin("POST", "/developers", json={"name": name, "tier": tier})
        assert r.status_code == 201, r.text
        return cast(dict[str, Any], r.json())

    async def new_key(self) -> str:
        return cast(str, (await self.new_developer())["api_key"]["key"])

    def openai(self, api_key: str, **kw: Any) -> openai.AsyncOpenAI:
        # Closed explicitly at teardown: left to the garbage collector, the SDK would schedule
        # its close on whatever asyncio loop is running (a trio-asyncio one) and fail there.
        client = openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **kw)
        self.clients.append(client)
        return client

    async def usage_event(self, request_id: str, within: float = 5.0) -> dict[str, Any]:
        """The usage event of a request, once the meter has written it."""
        with trio.fail_after(within):
            while True:
                row = await self.services.db.fetchrow(
                    "SELECT * FROM usage_event WHERE request_id = $1", request_id
                )
                if row is not None:
                    return dict(row)
                await trio.sleep(0.02)


def _hypercorn_config() -> Config:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 2.0
    config.loglevel = "WARNING"
    return config


@asynccontextmanager
async def open_gateway(
    database_url: str,
    redis_url: str,
    sim: RunningSimulator,
    data_dir: Path,
    extra_env: Mapping[str, str] | None = None,
) -> AsyncIterator[RunningGateway]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RINGSIDE_DATA_DIR": str(data_dir),
        "RINGSIDE_ADMIN_KEY": ADMIN_KEY,
        # Every test's gateway its own rate-limit buckets (all of them call from 127.0.0.1).
        "RINGSIDE_REDIS_PREFIX": f"t{secrets.token_hex(6)}:",
        **simulator_env(sim),
        **(extra_env or {}),
    }
    app = create_app(Settings.from_env(env))
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(serve, cast(Any, app), _hypercorn_config(), shutdown_trigger=stop.wait)
        )
        try:
            async with httpx.AsyncClient(base_url=binds[0], timeout=30) as http:
                gw = RunningGateway(binds[0], app, http, sim.sim)
                try:
                    yield gw
                finally:
                    for client in gw.clients:
                        await client.close()
        finally:
            stop.set()
