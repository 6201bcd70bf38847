"""Assistants API: runs (being built)."""

from __future__ import annotations

from quart import Blueprint

runs_bp = Blueprint("runs", __name__)
