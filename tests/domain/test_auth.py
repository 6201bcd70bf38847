"""Key lookups: one query per key however many requests wait, even when the one querying is
cancelled (its client left) while others wait."""

from __future__ import annotations

import trio

from ringside.domain.auth import KeyAuthenticator
from ringside.domain.developers import create_developer
from ringside.runtime import open_services
from ringside.settings import Settings
from ringside.store.bridge import Database


class CountingDatabase:
    """The real database, counting lookups and holding each one open a while."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.queries = 0

    async def fetchrow(self, query: str, *args: object) -> object:
        self.queries += 1
        await trio.sleep(0.05)
        return await self._db.fetchrow(query, *args)


async def test_waiters_survive_the_querying_request_being_cancelled(settings: Settings) -> None:
    async with open_services(settings) as svc:
        _, key = await create_developer(svc.db, "auth", "developer")
        counting = CountingDatabase(svc.db)
        auth = KeyAuthenticator(counting, ttl=60)  # type: ignore[arg-type]
        headers = {"Authorization": f"Bearer {key.plaintext}"}
        served: list[str] = []

        async def look_up(scope: trio.CancelScope | None = None) -> None:
            if scope is None:
                served.append((await auth.caller_from(headers)).developer_id)
                return
            with scope:
                await auth.caller_from(headers)

        first = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(look_up, first)
            await trio.sleep(0.01)  # the first is querying
            for _ in range(2):
                nursery.start_soon(look_up)
            await trio.sleep(0.01)  # the other two wait for it
            first.cancel()  # its client leaves: one waiter takes over, the other waits again
        assert len(served) == 2
        assert counting.queries == 2
