"""Helpers for the run tests: a developer with an assistant and a thread, a run's raw body."""

from __future__ import annotations

from typing import Any

import openai

from tests.api.devapi import DevApi, new_dev
from tests.gateway import RunningGateway

MODEL = "fc:openai/gpt-4o-mini"


async def run_setup(
    gw: RunningGateway, content: str = "hello there", **assistant: Any
) -> tuple[DevApi, openai.AsyncOpenAI, str, str]:
    dev = await new_dev(gw)
    client = gw.openai(dev.key)
    asst = await client.beta.assistants.create(model=MODEL, **assistant)
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": content}])
    return dev, client, asst.id, thread.id


async def raw_run(dev: DevApi, thread_id: str, run_id: str) -> dict[str, Any]:
    return await dev.ok("GET", f"/v1/threads/{thread_id}/runs/{run_id}")
