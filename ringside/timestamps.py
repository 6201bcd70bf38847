"""Timestamps on the wire: unix seconds, as OpenAI writes them."""

from __future__ import annotations

from datetime import datetime


def unix(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())
