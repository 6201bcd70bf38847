"""The ``ringside`` command: migrations and developer/key administration, calling the same
domain code as the admin API."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

import orjson
import trio

from ringside.domain import developers
from ringside.errors import RingsideError
from ringside.runtime import open_services
from ringside.services import Services
from ringside.settings import Settings
from ringside.store.bridge import InterfaceError, PostgresError
from ringside.store.migrations import apply_migrations

Command = Callable[[Services, argparse.Namespace], Awaitable[Any]]

# What can stop the services from opening that the user can fix: a misconfigured slot, an
# unreadable catalog file, PostgreSQL unreachable, refusing us, or a DATABASE_URL asyncpg cannot
# use. Anything else is a bug and keeps its traceback.
_START_PROBLEMS = (RingsideError, OSError, json.JSONDecodeError, PostgresError, InterfaceError)
# SQLSTATE classes of a connection refused by the server: connection exception, invalid
# authorization, unknown database, too many connections, starting up or shutting down.
_CONNECTION_SQLSTATES = ("08", "28", "3D", "53", "57P")


class CommandError(Exception):
    """A failure the user can act on, reported as one line on stderr (no traceback)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line like every other error of the command; the usage is one --help away.
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


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
    parser = _Parser(prog="ringside", description=__doc__)
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


def _settings() -> Settings:
    config = os.environ.get("RINGSIDE_CONFIG")
    try:
        return Settings.from_env()
    except tomllib.TOMLDecodeError as exc:
        raise CommandError(f"RINGSIDE_CONFIG {config} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise CommandError(f"cannot read RINGSIDE_CONFIG {config}: {exc.strerror}") from None
    except ValueError as exc:
        raise CommandError(f"invalid configuration: {exc}") from None


def _postgres(settings: Settings) -> str:
    """Where the CLI looks for PostgreSQL, for an error message (never the password)."""
    if not settings.database_url:
        return f"the embedded PostgreSQL under {settings.data_dir}"
    try:
        url = urlsplit(settings.database_url)
        host = url.hostname or parse_qs(url.query).get("host", ["localhost"])[0]
        port = f":{url.port}" if url.port else ""
    except ValueError:  # a port that is not a number
        return "DATABASE_URL"
    return f"{host}{port} (DATABASE_URL)"


def _start_problem(settings: Settings, exc: BaseException) -> str | None:
    """One line for a failure to open the services, or None if it is not the user's to fix."""
    if isinstance(exc, RingsideError):
        return exc.message
    if isinstance(exc, json.JSONDecodeError):
        return f"RINGSIDE_CATALOG {settings.catalog_path} is not valid JSON: {exc}"
    if isinstance(exc, OSError) and exc.filename is not None:
        if str(exc.filename) == str(settings.catalog_path):
            return f"cannot read RINGSIDE_CATALOG {exc.filename}: {exc.strerror}"
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, OSError):  # refused, unknown host, timed out: the pool's first connect
        return f"cannot connect to PostgreSQL at {_postgres(settings)}: {exc.strerror or exc}"
    if isinstance(exc, InterfaceError):  # asyncpg cannot use the DSN
        return f"DATABASE_URL: {exc}"
    if isinstance(exc, PostgresError) and str(exc.sqlstate).startswith(_CONNECTION_SQLSTATES):
        return f"PostgreSQL at {_postgres(settings)} refused the connection: {exc}"
    return None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


@asynccontextmanager
async def _opened(settings: Settings, *, migrate: bool) -> AsyncIterator[Services]:
    async with AsyncExitStack() as stack:
        # Only the opening is guarded here: an error in the command is not a start-up problem.
        try:
            svc = await stack.enter_async_context(open_services(settings, migrate=migrate))
        except* _START_PROBLEMS as group:
            problems = [_start_problem(settings, leaf) for leaf in _leaves(group)]
            if None in problems:
                raise
            raise CommandError(str(problems[0])) from None
        yield svc


async def _run(command: Command, args: argparse.Namespace, settings: Settings) -> Any:
    # `migrate` applies migrations itself, so it can report what it applied.
    async with _opened(settings, migrate=command is not _migrate) as svc:
        try:
            return await command(svc, args)
        except RingsideError as exc:
            # Caught before it reaches the services' nurseries (which would wrap it in an
            # exception group); they close normally and the error is reported below.
            message = exc.message
    raise CommandError(message)


def _sentence(message: str) -> str:
    """'No developer 'x'.' -> 'no developer 'x'': the shape of a command-line error."""
    message = " ".join(message.split()).removesuffix(".")
    first = message.split(" ", 1)[0]
    if first[:1].isupper() and first[1:].islower():  # "No", not "PostgreSQL" or "API"
        message = message[0].lower() + message[1:]
    return message


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = trio.run(_run, args.run, args, _settings())
    except CommandError as exc:
        sys.stderr.write(f"ringside: {_sentence(str(exc))}\n")
        return 1
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
