"""OpenAI-style list pagination, shared by every list endpoint.

A list is ``{"object": "list", "data", "first_id", "last_id", "has_more"}``, read with
``limit`` (1 to 100, default 20), ``order`` (``asc`` or ``desc`` by creation, default ``desc``),
and the cursors ``after`` / ``before``: ids of objects in the list. ``after=X`` gives the objects
that come after X in the listing order, ``before=X`` those just before it (still listed in the
requested order); both together give what lies between. ``has_more`` says whether more objects
lie beyond the page in the direction it was read.

Tables are paged by keyset on a monotonic key (an identity ``seq`` column), never by offset:
the handler parses a :class:`PageRequest`, the domain turns its cursors into keys with
:func:`resolve_window`, the store function reads ``window.fetch`` rows between the window's
bounds in the window's direction, and :func:`page_of` trims and orders them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ringside.errors import InvalidRequest

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Exclusive bounds that let every keyset query take both bounds as plain parameters (so the
# planner can use them as index bounds).
KEY_MIN = -(2**63)
KEY_MAX = 2**63 - 1


@dataclass(frozen=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    order: str = "desc"
    after: str | None = None
    before: str | None = None

    @classmethod
    def from_args(
        cls, args: Mapping[str, str], *, default_limit: int = DEFAULT_LIMIT
    ) -> PageRequest:
        raw_limit = args.get("limit")
        limit = default_limit
        if raw_limit is not None:
            text = raw_limit.strip()
            if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
                raise InvalidRequest(
                    f"'limit' must be an integer from 1 to {MAX_LIMIT}.", param="limit"
                )
            limit = int(text)
        order = args.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order")
        return cls(limit, order, _cursor(args, "after"), _cursor(args, "before"))


def _cursor(args: Mapping[str, str], name: str) -> str | None:
    value = args.get(name)
    if value is None:
        return None
    if not value or len(value) > 256 or not value.isprintable():
        raise InvalidRequest(f"'{name}' must be the id of an object in the list.", param=name)
    return value


@dataclass(frozen=True)
class Window:
    """What a keyset query reads: keys strictly between ``lower`` and ``upper``, in ascending
    key order when ``ascending``, at most ``fetch`` rows (one more than the page, to learn
    ``has_more``)."""

    lower: int
    upper: int
    ascending: bool
    fetch: int
    # Read against the listing order (``before`` alone): the rows are reversed afterwards.
    reverse: bool

    @property
    def bounds(self) -> tuple[int, int, int]:
        return self.lower, self.upper, self.fetch


def window(page: PageRequest, after_key: int | None, before_key: int | None) -> Window:
    ascending_order = page.order == "asc"
    if ascending_order:
        lower, upper = after_key, before_key
    else:
        lower, upper = before_key, after_key
    reverse = page.before is not None and page.after is None
    return Window(
        lower=KEY_MIN if lower is None else lower,
        upper=KEY_MAX if upper is None else upper,
        ascending=ascending_order != reverse,
        fetch=page.limit + 1,
        reverse=reverse,
    )


async def resolve_window(
    page: PageRequest, key_of: Callable[[str], Awaitable[int | None]]
) -> Window:
    """The window of a page, its cursor ids looked up with ``key_of`` (scoped by the caller to
    the list being read). An id that is not in the list is a 400."""
    keys: dict[str, int | None] = {"after": None, "before": None}
    for name, cursor in (("after", page.after), ("before", page.before)):
        if cursor is not None:
            key = await key_of(cursor)
            if key is None:
                raise InvalidRequest(
                    f"'{name}': {cursor!r} is not the id of an object in this list.", param=name
                )
            keys[name] = key
    return window(page, keys["after"], keys["before"])


def page_of(rows: Sequence[T], win: Window) -> tuple[list[T], bool]:
    """The rows of one page in listing order, and whether there are more."""
    has_more = len(rows) >= win.fetch
    items = list(rows[: win.fetch - 1])
    if win.reverse:
        items.reverse()
    return items, has_more


def list_json(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
