"""Assistants (OpenAI Assistants v2): a model reference, instructions, function tools and
sampling defaults that runs start from. The parsers here are shared with runs, which accept
the same fields as overrides.

Only ``function`` tools exist: ``code_interpreter`` and ``file_search`` are
``400 unsupported_tool_type`` (there are no files or vector stores yet), and so is
``tool_resources`` naming any file or vector store. The model is validated at create and
update (resolvable and priceable) and resolved again at every run, so a ``slot:`` or
``match:`` reference follows the configuration.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from ringside import validation
from ringside.domain.modelrefs import resolve_all
from ringside.errors import InvalidModelRef, InvalidRequest, NotFound
from ringside.ids import new_id
from ringside.pagination import PageRequest, page_of, resolve_window
from ringside.services import Services
from ringside.store import assistants as store
from ringside.store.assistants import AssistantFields, AssistantRow
from ringside.store.bridge import Database

__all__ = [
    "AssistantRow",
    "assistant_json",
    "check_model",
    "create_assistant",
    "delete_assistant",
    "get_assistant",
    "list_assistants",
    "parse_response_format",
    "parse_sampling",
    "parse_tool_resources",
    "parse_tools",
    "update_assistant",
]

MAX_TOOLS = 128
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_MODEL_REF = 256
_MAX_TOOL_DESCRIPTION = 16_384
_UNSUPPORTED_TOOLS = {
    "code_interpreter": "code_interpreter is not supported by Ringside",
    "file_search": "file_search is not supported yet (there are no vector stores)",
}


def _unsupported(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_tool_type")


def _object(value: Any, param: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{param}' must be an object.", param=param)
    for name in value:
        if name not in allowed:
            raise InvalidRequest(f"Unknown field {name!r} in '{param}'.", param=f"{param}.{name}")
    missing = sorted(required - set(value))
    if missing:
        where = f"{param}.{missing[0]}"
        raise InvalidRequest(f"Missing required field '{where}'.", param=where)
    return value


def _function(value: Any, param: str) -> dict[str, Any]:
    fn = _object(value, param, {"name", "description", "parameters", "strict"}, {"name"})
    name = fn["name"]
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        raise InvalidRequest(
            f"'{param}.name' must be 1 to 64 characters of a-z, A-Z, 0-9, '_' or '-'.",
            param=f"{param}.name",
        )
    out: dict[str, Any] = {"name": name}
    if fn.get("description") is not None:
        out["description"] = validation.free_text(
            fn["description"], f"{param}.description", max_len=_MAX_TOOL_DESCRIPTION
        )
    if fn.get("parameters") is not None:
        if not isinstance(fn["parameters"], dict):
            raise InvalidRequest(
                f"'{param}.parameters' must be a JSON Schema object.", param=f"{param}.parameters"
            )
        out["parameters"] = fn["parameters"]
    strict = fn.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise InvalidRequest(f"'{param}.strict' must be a boolean.", param=f"{param}.strict")
    if strict is not None:
        out["strict"] = strict
    return out


def parse_tools(value: Any, param: str = "tools") -> list[dict[str, Any]]:
    """OpenAI's ``tools`` (``null`` is none): function tools only, at most 128, each name
    once. ``code_interpreter`` / ``file_search`` are ``400 unsupported_tool_type``."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        raise InvalidRequest(
            f"'{param}' must be an array of at most {MAX_TOOLS} tools.", param=param
        )
    tools: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, tool in enumerate(value):
        where = f"{param}.{i}"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind in _UNSUPPORTED_TOOLS:
            raise _unsupported(f"'{where}': {_UNSUPPORTED_TOOLS[kind]}.", where)
        if kind != "function":
            raise InvalidRequest(
                f"'{where}.type' must be 'function' (or the unsupported 'code_interpreter' and"
                " 'file_search').",
                param=f"{where}.type",
            )
        fn = _function(
            _object(tool, where, {"type", "function"}, {"function"})["function"],
            f"{where}.function",
        )
        if fn["name"] in names:
            raise InvalidRequest(
                f"'{where}.function.name': {fn['name']!r} is defined twice.",
                param=f"{where}.function.name",
            )
        names.add(fn["name"])
        tools.append({"type": "function", "function": fn})
    return tools


def _id_list(value: Any, param: str, max_items: int) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > max_items:
        raise InvalidRequest(f"'{param}' must be an array of at most {max_items} ids.", param=param)
    for i, item in enumerate(value):
        validation.text(item, f"{param}.{i}", max_len=256, strip_ok=False)
    return list(value)


def parse_tool_resources(value: Any, param: str = "tool_resources") -> dict[str, Any] | None:
    """OpenAI's ``tool_resources``. No files or vector stores exist yet, so any id in it is
    ``400 unsupported_tool_type``; empty lists are kept as given."""
    if value is None:
        return None
    res = _object(value, param, {"code_interpreter", "file_search"}, set())
    out: dict[str, Any] = {}
    if res.get("code_interpreter") is not None:
        where = f"{param}.code_interpreter"
        ci = _object(res["code_interpreter"], where, {"file_ids"}, set())
        if _id_list(ci.get("file_ids"), f"{where}.file_ids", 20):
            raise _unsupported(f"'{where}': {_UNSUPPORTED_TOOLS['code_interpreter']}.", where)
        out["code_interpreter"] = {"file_ids": []}
    if res.get("file_search") is not None:
        where = f"{param}.file_search"
        fs = _object(res["file_search"], where, {"vector_store_ids", "vector_stores"}, set())
        stores = fs.get("vector_stores")
        if _id_list(fs.get("vector_store_ids"), f"{where}.vector_store_ids", 1) or stores:
            raise _unsupported(f"'{where}': {_UNSUPPORTED_TOOLS['file_search']}.", where)
        out["file_search"] = {"vector_store_ids": []}
    return out


def _schema_format(value: dict[str, Any], param: str) -> dict[str, Any]:
    where = f"{param}.json_schema"
    spec = _object(
        _object(value, param, {"type", "json_schema"}, {"json_schema"})["json_schema"],
        where,
        {"name", "description", "schema", "strict"},
        {"name"},
    )
    if not isinstance(spec["name"], str) or not _FUNCTION_NAME.match(spec["name"]):
        raise InvalidRequest(
            f"'{where}.name' must be 1 to 64 characters of a-z, A-Z, 0-9, '_' or '-'.",
            param=f"{where}.name",
        )
    out: dict[str, Any] = {"name": spec["name"]}
    if spec.get("description") is not None:
        out["description"] = validation.free_text(
            spec["description"], f"{where}.description", max_len=_MAX_TOOL_DESCRIPTION
        )
    if spec.get("schema") is not None:
        if not isinstance(spec["schema"], dict):
            raise InvalidRequest(
                f"'{where}.schema' must be a JSON Schema object.", param=f"{where}.schema"
            )
        out["schema"] = spec["schema"]
    if spec.get("strict") is not None:
        if not isinstance(spec["strict"], bool):
            raise InvalidRequest(f"'{where}.strict' must be a boolean.", param=f"{where}.strict")
        out["strict"] = spec["strict"]
    return {"type": "json_schema", "json_schema": out}


def parse_response_format(value: Any, param: str = "response_format") -> Any | None:
    """OpenAI's ``response_format``: ``None`` when absent or ``null``, else ``"auto"``,
    ``{"type": "text"}``, ``{"type": "json_object"}`` or
    ``{"type": "json_schema", "json_schema": {"name", "description"?, "schema"?, "strict"?}}``."""
    if value is None or value == "auto":
        return value
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("text", "json_object"):
        _object(value, param, {"type"}, set())
        return {"type": kind}
    if kind == "json_schema":
        return _schema_format(value, param)
    raise InvalidRequest(
        f"'{param}' must be 'auto' or an object with 'type' 'text', 'json_object' or"
        " 'json_schema'.",
        param=param,
    )


def parse_sampling(value: Any, param: str, lo: float, hi: float) -> float | None:
    """A sampling parameter (temperature, top_p): a number from ``lo`` to ``hi``, or null."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise InvalidRequest(f"'{param}' must be a number from {lo:g} to {hi:g}.", param=param)
    return float(value)


def check_model(svc: Services, ref: Any, param: str = "model") -> str:
    """A model reference a run can use: well formed, resolvable now, priced by the catalog and
    able to chat (``invalid_model_ref`` / ``unknown_model_pricing`` otherwise, both 400)."""
    if not isinstance(ref, str) or not ref or len(ref) > _MAX_MODEL_REF:
        raise InvalidModelRef(
            f"'{param}' must be a model reference such as 'fc:openai/gpt-4o-mini'.", param=param
        )
    try:
        targets = resolve_all(svc.catalog, ref, svc.slots)
    except InvalidModelRef as exc:
        raise InvalidModelRef(exc.message, param=param, code=exc.code) from None
    for target in targets:
        if "chat" not in target.model.capabilities:
            raise InvalidRequest(
                f"{target.ref} is not a chat model (the catalog lists no 'chat' capability for"
                " it); see GET /v1/models.",
                param=param,
            )
    return ref


def _model_field(svc: Services) -> Callable[[Any, str], Any]:
    return lambda v, p: check_model(svc, v, p)


def _parsers(svc: Services) -> dict[str, Callable[[Any, str], Any]]:
    return {
        "model": _model_field(svc),
        "name": lambda v, p: validation.optional_free_text(v, p, max_len=256),
        "description": lambda v, p: validation.optional_free_text(v, p, max_len=512),
        "instructions": lambda v, p: validation.optional_free_text(v, p, max_len=256_000),
        "tools": parse_tools,
        "tool_resources": parse_tool_resources,
        "temperature": lambda v, p: parse_sampling(v, p, 0, 2),
        "top_p": lambda v, p: parse_sampling(v, p, 0, 1),
        "response_format": parse_response_format,
        "metadata": validation.metadata,
    }


def parse_fields(svc: Services, body: Any, *, create: bool) -> dict[str, Any]:
    """The fields a create or update body sets (an update replaces each field it names,
    metadata and tools whole). ``model`` is required at create and never ``null``."""
    parsers = _parsers(svc)
    obj = validation.body_object(body, parsers)
    if create and "model" not in obj:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    return {name: parsers[name](value, name) for name, value in obj.items()}


def _not_found(assistant_id: str) -> NotFound:
    return NotFound(f"No assistant found with id {assistant_id!r}.", param="assistant_id")


def assistant_json(row: AssistantRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "assistant",
        "created_at": int(row.created_at.timestamp()),
        "name": row.name,
        "description": row.description,
        "model": row.model,
        "instructions": row.instructions,
        "tools": row.tools,
        "tool_resources": row.tool_resources if row.tool_resources is not None else {},
        "metadata": row.metadata,
        "temperature": row.temperature if row.temperature is not None else 1.0,
        "top_p": row.top_p if row.top_p is not None else 1.0,
        "response_format": row.response_format if row.response_format is not None else "auto",
    }


async def create_assistant(
    db: Database, developer_id: str, changes: dict[str, Any]
) -> AssistantRow:
    return await store.insert_assistant(
        db, id=new_id("asst"), developer_id=developer_id, fields=AssistantFields(**changes)
    )


async def get_assistant(db: Database, developer_id: str, assistant_id: str) -> AssistantRow:
    """The developer's live assistant (another developer's, or a deleted one, is a 404)."""
    row = await store.select_assistant(db, developer_id, assistant_id)
    if row is None:
        raise _not_found(assistant_id)
    return row


async def update_assistant(
    db: Database, developer_id: str, assistant_id: str, changes: dict[str, Any]
) -> AssistantRow:
    async with db.transaction() as conn:
        row = await store.select_assistant(conn, developer_id, assistant_id, for_update=True)
        if row is None:
            raise _not_found(assistant_id)
        current = AssistantFields(
            **{f.name: getattr(row, f.name) for f in dataclasses.fields(AssistantFields)}
        )
        updated = await store.update_assistant(
            conn, developer_id, assistant_id, dataclasses.replace(current, **changes)
        )
    assert updated is not None
    return updated


async def delete_assistant(db: Database, developer_id: str, assistant_id: str) -> None:
    """Soft: runs that used the assistant keep its id."""
    if not await store.soft_delete_assistant(db, developer_id, assistant_id):
        raise _not_found(assistant_id)


async def list_assistants(
    db: Database, developer_id: str, page: PageRequest
) -> tuple[list[AssistantRow], bool]:
    async def key_of(id: str) -> int | None:
        return await store.select_assistant_seq(db, developer_id, id)

    win = await resolve_window(page, key_of)
    return page_of(await store.select_assistants(db, developer_id, win), win)
