"""Extract the OpenAI OpenAPI schemas the tests validate against, so a clone needs no ../shared.

    python -m tests.openapi.extract [--source PATH] [--output PATH] [ROOT_SCHEMA ...]

reads OpenAI's spec (by default ``../shared/data/openai-openapi.yaml`` beside the repository)
and writes ``tests/openapi/openai-openapi.extract.json``: the named ``components/schemas``
(``ROOTS`` when none are given) and every schema they reach through ``$ref``, structure only.
Prose and doc-only keywords (``description``, ``title``, ``example(s)``, ``x-*``) are dropped
where they annotate a schema; a property *named* ``description`` is kept, and so are data
values (``enum``, ``const``, ``default``) verbatim. OpenAPI 3.0's ``nullable`` is kept as in the
source: ``tests/simulator/openapi.py`` rewrites it when it loads the extract. Keys are sorted so
a regeneration diffs cleanly; ``tests/openapi/test_extract.py`` checks the file is in sync.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[2] / "shared" / "data" / "openai-openapi.yaml"
DEFAULT_OUTPUT = HERE / "openai-openapi.extract.json"
SCHEMA_PREFIX = "#/components/schemas/"

# What the tests validate against today, then what later issues will (embeddings, assistants,
# files, vector stores, responses).
ROOTS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ErrorResponse",
    "ListModelsResponse",
    "Model",
    "CreateEmbeddingResponse",
    "AssistantObject",
    "ListAssistantsResponse",
    "DeleteAssistantResponse",
    "ThreadObject",
    "DeleteThreadResponse",
    "MessageObject",
    "ListMessagesResponse",
    "DeleteMessageResponse",
    "MessageDeltaObject",
    "RunObject",
    "ListRunsResponse",
    "RunStepObject",
    "ListRunStepsResponse",
    "RunStepDeltaObject",
    "OpenAIFile",
    "ListFilesResponse",
    "DeleteFileResponse",
    "VectorStoreObject",
    "ListVectorStoresResponse",
    "DeleteVectorStoreResponse",
    "VectorStoreFileObject",
    "ListVectorStoreFilesResponse",
    "DeleteVectorStoreFileResponse",
    "VectorStoreFileBatchObject",
    "VectorStoreSearchResultsPage",
    "AssistantStreamEvent",
    "CreateResponse",
    "Response",
    "ResponseStreamEvent",
)

# Annotations that never change what validates.
_DOC_ONLY = frozenset({"description", "title", "example", "examples", "$comment"})
# Keywords whose value maps names (property names, ...) to subschemas.
_SCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
# Keywords whose value is one subschema, or a list of them.
_SUBSCHEMA = frozenset(
    {
        "items",
        "additionalItems",
        "additionalProperties",
        "unevaluatedItems",
        "unevaluatedProperties",
        "propertyNames",
        "contains",
        "not",
        "if",
        "then",
        "else",
    }
)
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})


def strip_schema(node: Any) -> Any:
    """``node`` (a schema) without its doc-only keywords, recursively through subschemas only."""
    if isinstance(node, list):  # "items" as a list (draft 4 tuples)
        return [strip_schema(item) for item in node]
    if not isinstance(node, dict):
        return node  # a boolean schema
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DOC_ONLY or key.startswith("x-"):
            continue
        if key in _SCHEMA_MAPS:
            out[key] = {name: strip_schema(sub) for name, sub in value.items()}
        elif key in _SUBSCHEMA:
            out[key] = strip_schema(value)
        elif key in _SCHEMA_LISTS:
            out[key] = [strip_schema(sub) for sub in value]
        else:  # enum, const, default, required, type, format, $ref, discriminator, ...: data
            out[key] = value
    return out


def _refs(node: Any) -> Iterator[str]:
    """Every schema name a stripped schema refers to (``$ref`` and discriminator mappings)."""
    if isinstance(node, list):
        for item in node:
            yield from _refs(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield _schema_name(value)
            elif key == "discriminator" and isinstance(value, dict):
                yield from (_schema_name(ref) for ref in (value.get("mapping") or {}).values())
            elif key not in ("enum", "const", "default"):
                yield from _refs(value)


def _schema_name(ref: str) -> str:
    if not ref.startswith(SCHEMA_PREFIX):
        raise ValueError(f"unsupported $ref {ref!r}: only {SCHEMA_PREFIX}... is extracted")
    return ref.removeprefix(SCHEMA_PREFIX)


def load_spec(source: Path) -> tuple[dict[str, Any], str]:
    """The parsed spec and the sha256 of its bytes."""
    raw = source.read_bytes()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec: dict[str, Any] = yaml.load(raw, Loader=loader)
    return spec, hashlib.sha256(raw).hexdigest()


def build_extract(
    spec: dict[str, Any], sha256: str, roots: Iterable[str] = ROOTS
) -> tuple[dict[str, Any], list[str]]:
    """The extract document and the root names that the spec does not have."""
    schemas = spec["components"]["schemas"]
    wanted = list(dict.fromkeys(roots))
    missing = [name for name in wanted if name not in schemas]
    kept: dict[str, Any] = {}
    pending = [name for name in wanted if name in schemas]
    while pending:
        name = pending.pop()
        if name in kept:
            continue
        if name not in schemas:
            raise KeyError(f"$ref to {name!r}, which the spec does not define")
        kept[name] = strip_schema(schemas[name])
        pending.extend(ref for ref in _refs(kept[name]) if ref not in kept)
    document = {
        "openapi": spec["openapi"],
        "info": {"title": spec["info"]["title"], "version": spec["info"]["version"]},
        "x-extract": {
            "source": "openai/openai-openapi openapi.yaml",
            "source_sha256": sha256,
            "roots": wanted,
            "not_in_source": missing,
            "generator": "python -m tests.openapi.extract",
        },
        "components": {"schemas": kept},
    }
    return document, missing


def dumps(document: dict[str, Any]) -> str:
    """Sorted keys, one key per line: stable, reviewable diffs."""
    return json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("roots", nargs="*", default=list(ROOTS))
    args = parser.parse_args(argv)
    spec, sha256 = load_spec(args.source)
    document, missing = build_extract(spec, sha256, args.roots)
    if missing:
        print(f"not in the spec, skipped: {', '.join(missing)}", file=sys.stderr)
    args.output.write_text(dumps(document), encoding="utf-8")
    count = len(document["components"]["schemas"])
    print(f"wrote {args.output} ({count} schemas, spec {spec['info']['version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
