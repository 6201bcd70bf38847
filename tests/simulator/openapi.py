"""Validating JSON bodies against schemas of the OpenAI OpenAPI spec (shared by all tests).

``validate(body, "CreateChatCompletionResponse")`` raises ``jsonschema.ValidationError``.
The spec is OpenAPI 3.1 but still uses 3.0's ``nullable: true`` in places; those schemas are
rewritten to ``anyOf: [schema, {"type": "null"}]`` so ``null`` validates where OpenAI sends it.
The schemas come from ``tests/openapi/openai-openapi.extract.json``, an extract of OpenAI's
spec kept in the repository (``python -m tests.openapi.extract`` regenerates it; see
``tests/openapi/PROVENANCE.md``).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[1] / "openapi" / "openai-openapi.extract.json"
_SPEC_URI = "urn:openai-openapi"


def _denullable(node: Any) -> Any:
    if isinstance(node, list):
        return [_denullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _denullable(value) for key, value in node.items()}
    if out.pop("nullable", False) is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def spec() -> dict[str, Any]:
    """The extracted spec (``nullable`` rewritten), loaded once per process."""
    data: dict[str, Any] = _denullable(json.loads(SPEC_PATH.read_bytes()))
    return data


@cache
def _registry() -> Registry[Any]:
    resource: Resource[Any] = Resource.from_contents(spec(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(_SPEC_URI, resource)
    return registry


@cache
def validator(schema_name: str) -> Validator:
    """A Draft 2020-12 validator for ``#/components/schemas/<schema_name>``."""
    if schema_name not in spec()["components"]["schemas"]:
        raise KeyError(f"no schema {schema_name!r} in {SPEC_PATH}")
    ref = {"$ref": f"{_SPEC_URI}#/components/schemas/{schema_name}"}
    return jsonschema.Draft202012Validator(ref, registry=_registry())


def validate(body: Any, schema_name: str) -> None:
    """Raise ``jsonschema.ValidationError`` (the most relevant one) if ``body`` doesn't fit."""
    error = jsonschema.exceptions.best_match(validator(schema_name).iter_errors(body))
    if error is not None:
        raise error
