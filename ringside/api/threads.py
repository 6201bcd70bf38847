"""Assistants API: threads (being built)."""

from __future__ import annotations

from quart import Blueprint

threads_bp = Blueprint("threads", __name__)
