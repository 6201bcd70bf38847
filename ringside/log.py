"""Structured logging: one JSON line per request on ``ringside.access``; never a key or a prompt."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import orjson

access_log = logging.getLogger("ringside.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        else:
            line["msg"] = record.getMessage()
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger("ringside")
    if any(getattr(h, "_ringside", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._ringside = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


@dataclass
class RequestLog:
    """Filled in as a request is handled; emitted once when it ends (for a stream: when the
    stream ends, so the line carries the real token counts)."""

    request_id: str
    method: str
    path: str
    started: float
    developer_id: str | None = None
    model: str | None = None
    resolved: str | None = None
    status: int | None = None
    outcome: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    deferred: bool = False
    emitted: bool = False

    def emit(self, now: float) -> None:
        if self.emitted:
            return
        self.emitted = True
        fields = {
            k: v
            for k, v in self.__dict__.items()
            if v is not None and k not in ("deferred", "emitted", "started")
        }
        fields["latency_ms"] = round((now - self.started) * 1000, 2)
        fields["pid"] = os.getpid()
        access_log.info("request", extra={"fields": fields})
