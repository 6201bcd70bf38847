"""The committed extract of OpenAI's spec: self-contained, and in sync with the source spec
whenever that is at hand (``../shared/data/openai-openapi.yaml`` or ``RINGSIDE_OPENAPI_SOURCE``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.openapi.extract import DEFAULT_OUTPUT, DEFAULT_SOURCE, build_extract, dumps, load_spec
from tests.simulator.openapi import validator

SOURCE = Path(os.environ.get("RINGSIDE_OPENAPI_SOURCE") or DEFAULT_SOURCE)


def _committed() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DEFAULT_OUTPUT.read_text(encoding="utf-8"))
    return document


def _refs(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*map(_refs, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
    return found.union(*(_refs(v) for k, v in node.items() if k not in ("enum", "default")))


def test_every_ref_resolves_inside_the_extract() -> None:
    schemas = _committed()["components"]["schemas"]
    dangling = {r for r in _refs(schemas) if r.removeprefix("#/components/schemas/") not in schemas}
    assert dangling == set()


def test_every_root_compiles_to_a_validator() -> None:
    meta = _committed()["x-extract"]
    roots = [name for name in meta["roots"] if name not in meta["not_in_source"]]
    assert "CreateChatCompletionResponse" in roots
    for name in roots:
        list(validator(name).iter_errors({}))  # follows the root's $refs: none may dangle


def test_prose_is_stripped_but_properties_named_description_stay() -> None:
    schemas = _committed()["components"]["schemas"]
    assert "description" not in schemas["AssistantObject"]
    assert "description" in schemas["AssistantObject"]["properties"]
    assert "x-oaiMeta" not in schemas["AssistantObject"]


@pytest.mark.skipif(not SOURCE.is_file(), reason=f"no source spec at {SOURCE}")
def test_extract_is_in_sync_with_the_source_spec() -> None:
    committed = _committed()
    spec, sha256 = load_spec(SOURCE)
    regenerated, _missing = build_extract(spec, sha256, committed["x-extract"]["roots"])
    # Byte for byte, so the committed file is exactly what the extractor writes.
    assert dumps(regenerated) == DEFAULT_OUTPUT.read_text(encoding="utf-8"), (
        "stale extract: run `python -m tests.openapi.extract`"
    )
