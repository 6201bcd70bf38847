"""The ``ringside`` command: migrations and developer/key administration, calling the same
domain code as the admin API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import trio

from ringside.domain import developers
from ringside.errors import RingsideError
from ringside.runtime import open_services
from ringside.services import Services
from ringside.settings import Settings
from ringside.store.migrations import apply_migrations

Command = Callable[[Services, argparse.Namespace], Awaitable[Any]]


async def _migrate(svc: Services, args: argparse.Namespace) -> Any:
    applied = await apply_migrations(svc.db, svc.settings.sql_dir)
    return {"applied": applied}


async def _create_developer(svc: Services, args: argparse.Namespace) -> Any:
    name, tier = developers.parse_developer_spec({"name": args.name, "tier": args.tier})
    dev, key = await developers.create_developer(svc.db, name, tier)
    return {**developers.developer_json(dev), "api_key": key.as_json()}


async def _add_key(svc: Services, args: argparse.Namespace) -> Any:
    return (await developers.add_key(svc.db, args.developer_id, args.name)).as_json()


async def _list_keys(svc: Services, args: argparse.Namespace) -> Any:
    return [developers.key_json(r) for r in await developers.list_keys(svc.db, args.developer_id)]


async def _revoke_key(svc: Services, args: argparse.Namespace) -> Any:
    return developers.key_json(await developers.revoke_key(svc.db, args.developer_id, args.key_id))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ringside", description=__doc__)
    sub = parser.add_subparsers(dest="group", required=True)
    sub.add_parser("migrate", help="apply pending SQL migrations").set_defaults(run=_migrate)

    devs = sub.add_parser("developers", help="manage developers").add_subparsers(
        dest="action", required=True
    )
    create = devs.add_parser("create", help="create a developer with a first API key")
    create.add_argument("--name", required=True)
    create.add_argument("--tier", default="developer", choices=developers.TIERS)
    create.set_defaults(run=_create_developer)

    keys = sub.add_parser("keys", help="manage a developer's API keys").add_subparsers(
        dest="action", required=True
    )
    add = keys.add_parser("add", help="add an API key")
    add.add_argument("developer_id")
    add.add_argument("--name")
    add.set_defaults(run=_add_key)
    listing = keys.add_parser("list", help="list API keys")
    listing.add_argument("developer_id")
    listing.set_defaults(run=_list_keys)
    revoke = keys.add_parser("revoke", help="revoke an API key")
    revoke.add_argument("developer_id")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=_revoke_key)
    return parser


async def _run(command: Command, args: argparse.Namespace) -> Any:
    # `migrate` applies migrations itself, so it can report what it applied.
    async with open_services(Settings.from_env(), migrate=command is not _migrate) as svc:
        return await command(svc, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = trio.run(_run, args.run, args)
    except RingsideError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return 1
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
