"""Opening and closing the long-lived services, for the web app, the CLI and the workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ringside.catalog import Catalog, load_catalog
from ringside.domain import provider_keys
from ringside.domain.auth import KeyAuthenticator
from ringside.domain.client_tokens import ClientTokens
from ringside.domain.modelrefs import resolve
from ringside.domain.processes import serve_heartbeat
from ringside.domain.rate_limits import RateLimiter
from ringside.domain.run_executor import RunExecutor
from ringside.domain.unstarted_streams import UnstartedStreams
from ringside.ids import new_id
from ringside.services import Services
from ringside.settings import Settings
from ringside.store.bridge import open_storage
from ringside.store.embedded import EmbeddedServers, ensure_servers
from ringside.store.migrations import apply_migrations
from ringside.upstream.client import open_upstream_client
from ringside.upstream.upstreams import Upstreams


@asynccontextmanager
async def open_services(
    settings: Settings, *, migrate: bool = True, calls_providers: bool = False
) -> AsyncIterator[Services]:
    """Everything a process needs, opened in dependency order and closed in reverse. A process
    that ``calls_providers`` (the web app) registers itself and beats, so the settlement
    worker can tell its open holds from those of a process that died."""
    catalog = load_catalog(settings.catalog_path)
    for name in settings.slots:  # a misconfigured slot fails the start, not a request
        resolve(catalog, f"slot:{name}", settings.slots)
    urls = await trio.to_thread.run_sync(
        ensure_servers, settings.data_dir, settings.database_url, settings.redis_url
    )
    try:
        async with _open_services(
            settings, urls, catalog, migrate=migrate, calls_providers=calls_providers
        ) as svc:
            yield svc
    finally:
        # Hypercorn's workers leave through os._exit, which skips the embedded servers'
        # atexit hooks: let go of them here so the last process out stops them.
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(urls.stop)


@asynccontextmanager
async def _open_services(
    settings: Settings,
    urls: EmbeddedServers,
    catalog: Catalog,
    *,
    migrate: bool,
    calls_providers: bool,
) -> AsyncIterator[Services]:
    async with (
        open_storage(urls.database_url, urls.redis_url) as (db, cache),
        open_upstream_client() as http,
    ):
        if migrate:
            await apply_migrations(db, settings.sql_dir)
        svc = Services(
            settings=settings,
            db=db,
            cache=cache,
            http=http,
            upstreams=Upstreams(http, settings.providers),
            catalog=catalog,
            auth=KeyAuthenticator(db, settings.key_cache_ttl_s),
            client_tokens=ClientTokens(db, settings.client_token_keys, settings.key_cache_ttl_s),
            limits=RateLimiter(settings.limits, db, cache, redis_url=urls.redis_url),
            slots=settings.slots,
            pricing=settings.pricing,
            process_id=new_id("proc"),
            runs=RunExecutor(settings.run_starts),
            unstarted_streams=UnstartedStreams(settings.stream_start_grace_s),
        )
        if not calls_providers:
            yield svc
            return
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_heartbeat, svc)
            await nursery.start(svc.limits.serve)  # sends the token settlements
            await nursery.start(svc.runs.serve, db)  # executes run segments
            await nursery.start(provider_keys.serve_resets, db, svc.upstreams)
            await nursery.start(svc.unstarted_streams.serve)
            yield svc
            nursery.cancel_scope.cancel()


async def serve_services(
    settings: Settings,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[Services] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the services until ``stop`` is set (the app's shutdown) or the task is cancelled."""
    async with open_services(settings, calls_providers=True) as svc:
        task_status.started(svc)
        await stop.wait()
