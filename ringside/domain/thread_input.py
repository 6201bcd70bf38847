"""What clients send to create threads and messages (OpenAI's bodies), parsed and checked.

Message text is stored in OpenAI's *output* shape (``{"type": "text", "text": {"value",
"annotations": []}}``), so a message reads back exactly as OpenAI would answer it. Image parts
are ``image_url`` (http(s) or ``data:image/``); ``image_file`` and attachments need the Files
API, which Ringside does not have yet (a 400).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ringside import validation
from ringside.domain.assistants import parse_tool_resources
from ringside.errors import Conflict, InvalidRequest
from ringside.store.threads import MAX_MESSAGES

MAX_TEXT = 256_000
MAX_PARTS = 100
MAX_URL = 65_536
_ROLES = ("user", "assistant")
_DETAILS = ("auto", "low", "high")
_URL_SCHEMES = ("https://", "http://", "data:image/")


@dataclass(frozen=True)
class NewMessage:
    role: str
    content: list[dict[str, Any]]
    attachments: list[dict[str, Any]] | None
    metadata: dict[str, str]


def _at(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _text_part(value: str) -> dict[str, Any]:
    return {"type": "text", "text": {"value": value, "annotations": []}}


def _image_url(part: dict[str, Any], where: str) -> dict[str, Any]:
    for name in part:
        if name not in ("type", "image_url"):
            raise InvalidRequest(f"Unknown field {name!r} in '{where}'.", param=f"{where}.{name}")
    image = part.get("image_url")
    if not isinstance(image, dict) or set(image) - {"url", "detail"}:
        raise InvalidRequest(
            f"'{where}.image_url' must be an object with 'url' and an optional 'detail'.",
            param=f"{where}.image_url",
        )
    url = image.get("url")
    if not isinstance(url, str) or len(url) > MAX_URL or not url.startswith(_URL_SCHEMES):
        raise InvalidRequest(
            f"'{where}.image_url.url' must be an http(s) or data:image/ URL of at most {MAX_URL}"
            " characters.",
            param=f"{where}.image_url.url",
        )
    detail = image.get("detail", "auto")
    if detail not in _DETAILS:
        raise InvalidRequest(
            f"'{where}.image_url.detail' must be 'auto', 'low' or 'high'.",
            param=f"{where}.image_url.detail",
        )
    return {"type": "image_url", "image_url": {"url": url, "detail": detail}}


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        assert isinstance(part, dict)
        if set(part) - {"type", "text"}:
            raise InvalidRequest(f"'{where}' may hold only 'type' and 'text'.", param=where)
        text = validation.free_text(part.get("text"), f"{where}.text", max_len=MAX_TEXT, min_len=1)
        return _text_part(text)
    if kind == "image_url":
        assert isinstance(part, dict)
        return _image_url(part, where)
    if kind == "image_file":
        raise InvalidRequest(
            f"'{where}': image_file parts need the Files API, which Ringside does not have yet;"
            " send the image as an image_url part.",
            param=where,
        )
    raise InvalidRequest(
        f"'{where}.type' must be 'text', 'image_url' or 'image_file'.", param=f"{where}.type"
    )


def _content(value: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [_text_part(validation.free_text(value, param, max_len=MAX_TEXT, min_len=1))]
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_PARTS:
        raise InvalidRequest(
            f"'{param}' must be a non-empty string or an array of 1 to {MAX_PARTS} content parts.",
            param=param,
        )
    return [_part(part, f"{param}.{i}") for i, part in enumerate(value)]


def parse_new_message(body: Any, param: str = "") -> NewMessage:
    """OpenAI's message create body: ``role`` (user or assistant), ``content`` (a string or
    text / image_url parts; image_file needs files, a 400 until they exist), ``attachments``
    (none yet: files again) and ``metadata``. Text is stored in OpenAI's output shape."""
    if not isinstance(body, dict):
        raise InvalidRequest(f"'{param or 'body'}' must be a JSON object.", param=param or None)
    for name in body:
        if name not in ("role", "content", "attachments", "metadata"):
            raise InvalidRequest(
                f"Unrecognized request argument supplied: {name!r}.",
                param=_at(param, str(name)[:64]),
            )
    role = body.get("role")
    if role not in _ROLES:
        raise InvalidRequest("'role' must be 'user' or 'assistant'.", param=_at(param, "role"))
    if "content" not in body:
        raise InvalidRequest("Missing required parameter: 'content'.", param=_at(param, "content"))
    content = _content(body["content"], _at(param, "content"))
    if body.get("attachments"):
        raise InvalidRequest(
            "Message attachments need the Files API, which Ringside does not have yet.",
            param=_at(param, "attachments"),
        )
    attachments: list[dict[str, Any]] | None = [] if "attachments" in body else None
    metadata = validation.metadata(body.get("metadata"), _at(param, "metadata"))
    return NewMessage(role, content, attachments, metadata)


@dataclass(frozen=True)
class ThreadSpec:
    messages: list[NewMessage]
    tool_resources: dict[str, Any] | None
    metadata: dict[str, str]
    user: str | None  # the Ringside attribution extension (``extra_body={"user": ...}``)


def parse_thread_body(body: Any) -> ThreadSpec:
    """OpenAI's thread create body (``messages``, ``tool_resources``, ``metadata``) and the
    ``user`` extension; ``None`` is an empty thread."""
    obj = validation.body_object(
        {} if body is None else body, ("messages", "tool_resources", "metadata", "user")
    )
    raw = obj.get("messages")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise InvalidRequest("'messages' must be an array of messages.", param="messages")
    if len(raw) > MAX_MESSAGES:
        raise conversation_full()
    user = obj.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string (your end-customer's id).", param="user")
    return ThreadSpec(
        messages=[parse_new_message(m, f"messages.{i}") for i, m in enumerate(raw)],
        tool_resources=parse_tool_resources(obj.get("tool_resources")),
        metadata=validation.metadata(obj.get("metadata")),
        user=user,
    )


def parse_thread_update(body: Any) -> dict[str, Any]:
    """OpenAI's thread modify body: each field named is replaced (metadata whole)."""
    obj = validation.body_object(body, ("tool_resources", "metadata"))
    changes: dict[str, Any] = {}
    if "tool_resources" in obj:
        changes["tool_resources"] = parse_tool_resources(obj["tool_resources"])
    if "metadata" in obj:
        changes["metadata"] = validation.metadata(obj["metadata"])
    return changes


def parse_message_update(body: Any) -> dict[str, str] | None:
    """OpenAI's message modify body: only ``metadata``. None: nothing to change."""
    obj = validation.body_object(body, ("metadata",))
    return validation.metadata(obj["metadata"]) if "metadata" in obj else None


def conversation_full() -> Conflict:
    return Conflict(
        f"This thread holds {MAX_MESSAGES:,} messages, the most a thread can hold; start a new"
        " thread.",
        code="conversation_full",
    )
