"""Turning an Embeddings request into a deterministic answer (an ``EmbeddingPlan``), and
rendering it as OpenAI's ``CreateEmbeddingResponse``.

Rules:

* ``input`` is a string, an array of strings, an array of token ids or an array of arrays of
  token ids, 1 to 2,048 items, no empty string or empty token array (OpenAI's own checks and
  error bodies: ``'$.input' is invalid. ...``).
* each vector is drawn from a seeded Gaussian (the seed is a SHA-256 of the input, directives
  stripped), cut to ``dimensions`` and scaled to unit length, as OpenAI shortens embeddings;
  the values are float32, so the ``base64`` encoding (little-endian float32, as OpenAI sends
  it) decodes to exactly the floats of the ``float`` encoding.
* ``prompt_tokens`` = whitespace words of every string input (directives stripped), or the
  number of token ids; ``total_tokens`` the same. ``#sim{...}`` directives in string inputs
  work as for chat (``status``, ``error``, ``headers``, ``delay``, ``hang``, ``usage``
  overriding ``prompt_tokens`` / ``total_tokens``, ``no_usage``).
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
from dataclasses import dataclass
from typing import Any, Final

from .completion import SimError, dumps, strip_directives

MAX_INPUTS: Final = 2048
DEFAULT_DIMENSIONS: Final = 1536
# Native sizes of the models the catalog knows (anything else gets DEFAULT_DIMENSIONS).
NATIVE_DIMENSIONS: Final = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "mistral-embed": 1024,
    "codestral-embed": 1536,
    "BAAI/bge-base-en-v1.5": 768,
    "intfloat/multilingual-e5-large-instruct": 1024,
    "nomic-ai/nomic-embed-text-v1.5": 768,
    "nomic-embed-text": 768,
    "mxbai-embed-large": 1024,
}
# OpenAI's first-generation model cannot be shortened.
FIXED_DIMENSIONS: Final = frozenset({"text-embedding-ada-002"})
ENCODINGS: Final = ("float", "base64")

_INVALID_INPUT: Final = (
    "'$.input' is invalid. Please check the API reference: "
    "https://platform.openai.com/docs/api-reference."
)


def _bad(message: str, param: str | None = None, code: str | None = None) -> SimError:
    return SimError(400, message, param=param, code=code)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_int(t) and t >= 0 for t in value)


@dataclass(slots=True)
class EmbeddingPlan:
    """Everything needed to answer one embeddings request."""

    model: str
    directive: dict[str, Any]
    seeds: list[bytes]  # one per input
    dimensions: int
    native: int
    encoding: str
    usage: dict[str, int] | None
    stream: bool = False  # never: the app's guarded path asks


def _inputs(raw: Any) -> list[str | list[int]]:
    """The inputs as a list, refusing what OpenAI refuses."""
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif isinstance(raw, list) and 1 <= len(raw) <= MAX_INPUTS:
        items = [raw] if all(_is_int(t) for t in raw) else raw
    else:
        raise _bad(_INVALID_INPUT)
    kinds = {type(item) for item in items}
    if len(kinds) != 1:
        raise _bad(_INVALID_INPUT)
    for item in items:
        if isinstance(item, str):
            if not item:
                raise _bad(_INVALID_INPUT)
        elif not _is_tokens(item):
            raise _bad(_INVALID_INPUT)
    return items


def _dimensions(body: dict[str, Any], model: str, native: int) -> int:
    value = body.get("dimensions")
    if value is None:
        return native
    if not _is_int(value) or value < 1:
        raise _bad(
            "Invalid 'dimensions': must be an integer at least 1.", "dimensions", "invalid_value"
        )
    if model in FIXED_DIMENSIONS:
        raise _bad("This model does not support specifying dimensions.")
    if value > native:
        raise _bad(
            f"Invalid value for 'dimensions' = {value}. Must be less than or equal to {native}.",
            "dimensions",
            "invalid_value",
        )
    return int(value)


def _usage(prompt: int, directive: dict[str, Any]) -> dict[str, int] | None:
    if directive.get("no_usage"):
        return None
    over = directive.get("usage")
    over = over if isinstance(over, dict) else {}
    prompt = int(over.get("prompt_tokens", prompt))
    return {"prompt_tokens": prompt, "total_tokens": int(over.get("total_tokens", prompt))}


def make_embedding_plan(
    body: Any, model: str | None, defaults: dict[str, Any] | None = None
) -> EmbeddingPlan:
    """Interpret a parsed request body; ``model`` overrides ``body["model"]`` (Azure)."""
    if not isinstance(body, dict):
        raise _bad("Invalid body: expected a JSON object.", None, "invalid_type")
    if model is None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _bad("you must provide a model parameter")
    if "input" not in body:
        raise _bad("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    items = _inputs(body["input"])
    encoding = body.get("encoding_format", "float")
    if encoding not in ENCODINGS:
        raise _bad(
            f"Invalid value for 'encoding_format': {encoding!r}. Supported values are: "
            "'float' and 'base64'.",
            "encoding_format",
            "invalid_value",
        )
    native = NATIVE_DIMENSIONS.get(model, DEFAULT_DIMENSIONS)
    dimensions = _dimensions(body, model, native)
    directive: dict[str, Any] = dict(defaults) if defaults else {}
    seeds: list[bytes] = []
    tokens = 0
    for item in items:
        if isinstance(item, str):
            # A directive and the spaces around it are not part of the text embedded.
            text = strip_directives(item, directive).strip() if "#sim{" in item else item
            tokens += len(text.split())
            seeds.append(hashlib.sha256(b"text\0" + text.encode()).digest())
        else:
            tokens += len(item)
            seeds.append(hashlib.sha256(b"tokens\0" + dumps(item)).digest())
    return EmbeddingPlan(
        model=model,
        directive=directive,
        seeds=seeds,
        dimensions=dimensions,
        native=native,
        encoding=str(encoding),
        usage=_usage(tokens, directive),
    )


def vector(seed: bytes, native: int, dimensions: int) -> list[float]:
    """The unit-length float32 vector of one input: its native vector cut to ``dimensions``
    and re-normalised, so a shortened embedding points where the full one's prefix does."""
    rng = random.Random(seed)
    raw = [rng.gauss(0.0, 1.0) for _ in range(native)][:dimensions]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(x / norm for x in raw))
    return list(struct.unpack(f"<{dimensions}f", packed))


def encode_base64(values: list[float]) -> str:
    """OpenAI's ``base64`` encoding: the little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def embedding_body(plan: EmbeddingPlan) -> bytes:
    """The ``CreateEmbeddingResponse``."""
    data = []
    for index, seed in enumerate(plan.seeds):
        values = vector(seed, plan.native, plan.dimensions)
        embedding: list[float] | str = (
            encode_base64(values) if plan.encoding == "base64" else values
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    out: dict[str, Any] = {"object": "list", "data": data, "model": plan.model}
    if plan.usage is not None:
        out["usage"] = plan.usage
    return dumps(out)
