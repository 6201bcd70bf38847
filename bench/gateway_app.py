"""Shim for ``hypercorn ... bench.gateway_app:app``.

Hypercorn resolves ``module:app`` with ``eval("app", vars(module))``, which does not call a
module-level ``__getattr__``; ``ringside.app`` is built lazily that way, so this imports it.
"""

from __future__ import annotations

from ringside import app as app

__all__ = ["app"]
