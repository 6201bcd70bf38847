"""HTTP handlers: one blueprint per resource, thin over ``ringside.domain``."""

from __future__ import annotations

from quart import Blueprint

from ringside.api.admin import admin_bp
from ringside.api.chat import chat_bp
from ringside.api.health import health_bp
from ringside.api.models import models_bp

BLUEPRINTS: tuple[Blueprint, ...] = (health_bp, chat_bp, models_bp, admin_bp)
