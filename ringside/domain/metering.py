"""Who made a call and what they asked for: fixed before any provider is contacted, carried to
the call's hold and settlement (``ringside.domain.billing``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CallContext:
    request_id: str
    developer_id: str
    api_key_id: str
    customer_ref: str | None
    model_requested: str
    stream: bool
    started: float  # trio.current_time()
