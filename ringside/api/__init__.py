"""HTTP handlers: one blueprint per resource, thin over ``ringside.domain``."""

from __future__ import annotations

from quart import Blueprint

from ringside.api.admin import admin_bp
from ringside.api.assistants import assistants_bp
from ringside.api.chat import chat_bp
from ringside.api.client_tokens import client_tokens_bp
from ringside.api.customers import customers_bp
from ringside.api.embeddings import embeddings_bp
from ringside.api.health import health_bp
from ringside.api.models import models_bp
from ringside.api.runs import runs_bp
from ringside.api.threads import threads_bp
from ringside.api.usage import usage_bp
from ringside.api.wallets import wallets_bp
from ringside.api.webhooks import webhooks_bp

BLUEPRINTS: tuple[Blueprint, ...] = (
    health_bp,
    chat_bp,
    embeddings_bp,
    models_bp,
    customers_bp,
    client_tokens_bp,
    wallets_bp,
    usage_bp,
    webhooks_bp,
    assistants_bp,
    threads_bp,
    runs_bp,
    admin_bp,
)
