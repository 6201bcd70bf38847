"""Assistants API: assistants (being built)."""

from __future__ import annotations

from quart import Blueprint

assistants_bp = Blueprint("assistants", __name__)
