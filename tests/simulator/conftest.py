"""Fixtures for the simulator's own tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from .server import RunningSimulator, open_simulator


@pytest.fixture
async def running() -> AsyncIterator[RunningSimulator]:
    async with open_simulator() as sim:
        yield sim


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c
