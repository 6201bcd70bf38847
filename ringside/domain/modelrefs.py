"""Model references (SPEC §4): ``fc:<provider>/<model>``, ``slot:<alias>``,
``match:<provider>/<family><op><version>``. Anything else is ``400 invalid_model_ref``."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from ringside.catalog import Catalog, ModelInfo, Pricing, parse_version
from ringside.errors import InvalidModelRef
from ringside.upstream.providers import PROVIDERS

_MATCH = re.compile(
    r"^(?P<provider>[a-z0-9_]+)/(?P<family>[a-z0-9][a-z0-9.-]*?)"
    r"(?:(?P<op>>=|<=|==|=|>|<)(?P<version>\d+(?:\.\d+)*))?$"
)
_LOCAL_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")
_SLOT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_OPS: Mapping[str, Callable[[tuple[int, ...], tuple[int, ...]], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "=": operator.eq,
}
_FREE = Pricing(Decimal(0), Decimal(0), Decimal(0), Decimal(0))


@dataclass(frozen=True)
class ResolvedModel:
    requested: str  # what the caller wrote
    model: ModelInfo  # what will be called, with its prices

    @property
    def ref(self) -> str:
        return self.model.ref


def _pad(v: tuple[int, ...], n: int) -> tuple[int, ...]:
    return v + (0,) * (n - len(v))


def _match(catalog: Catalog, body: str, requested: str) -> ModelInfo:
    m = _MATCH.match(body)
    if m is None:
        raise InvalidModelRef(
            f"Malformed match selector {requested!r}: expected "
            "'match:<provider>/<family>[<op><version>]', e.g. 'match:anthropic/sonnet>=4'.",
            param="model",
        )
    provider, family = m["provider"], m["family"]
    if provider not in PROVIDERS:
        raise InvalidModelRef(f"Unknown provider {provider!r} in {requested!r}.", param="model")
    candidates = catalog.family(provider, family)
    if m["op"]:
        want = parse_version(m["version"])
        compare = _OPS[m["op"]]
        candidates = [
            c for c in candidates if compare(_pad(c.version, len(want)), _pad(want, len(c.version)))
        ]
    if not candidates:
        raise InvalidModelRef(f"No catalog model matches {requested!r}.", param="model")
    return candidates[0]


def _direct(catalog: Catalog, body: str, requested: str) -> ModelInfo:
    provider, sep, model = body.partition("/")
    if not sep or not provider or not model:
        raise InvalidModelRef(
            f"Malformed model reference {requested!r}: expected 'fc:<provider>/<model>'.",
            param="model",
        )
    if provider not in PROVIDERS:
        raise InvalidModelRef(
            f"Unknown provider {provider!r} in {requested!r}. Known providers: "
            + ", ".join(sorted(PROVIDERS))
            + ".",
            param="model",
        )
    info = catalog.get(provider, model)
    if info is not None:
        return info
    if provider == "ollama" and _LOCAL_MODEL.match(model):
        # Local models are free and open-ended: any model the Ollama server has will do.
        return ModelInfo(
            provider,
            model,
            family=model,
            version=(0,),
            version_text="0",
            released=date(1970, 1, 1),
            context_window=0,
            max_output_tokens=None,
            pricing=_FREE,
            capabilities=frozenset({"chat", "streaming"}),
        )
    if provider == "ollama" or not _LOCAL_MODEL.match(model):
        raise InvalidModelRef(f"Malformed model name in {requested!r}.", param="model")
    raise InvalidModelRef(
        f"Model {requested!r} is not in the catalog, so it cannot be priced. See GET /v1/models, "
        "or add it with a catalog override (RINGSIDE_CATALOG).",
        param="model",
        code="unknown_model_pricing",
    )


def resolve(
    catalog: Catalog, requested: str, slots: Mapping[str, Sequence[str]]
) -> list[ResolvedModel]:
    """Resolve one reference to the ordered models it names (a slot may name several)."""
    prefix, sep, body = requested.partition(":")
    if sep and prefix == "fc":
        return [ResolvedModel(requested, _direct(catalog, body, requested))]
    if sep and prefix == "match":
        return [ResolvedModel(requested, _match(catalog, body, requested))]
    if sep and prefix == "slot":
        if not _SLOT.match(body) or body not in slots:
            raise InvalidModelRef(f"Unknown slot {requested!r}.", param="model")
        return [
            ResolvedModel(requested, r.model)
            for target in slots[body]
            for r in resolve(catalog, target, {})
        ]
    raise InvalidModelRef(
        f"Invalid model reference {requested!r}: a model must start with 'fc:', 'slot:' or "
        "'match:' (for example 'fc:openai/gpt-4o-mini').",
        param="model",
    )


def resolve_all(
    catalog: Catalog, requested: str | Sequence[str], slots: Mapping[str, Sequence[str]]
) -> list[ResolvedModel]:
    refs = [requested] if isinstance(requested, str) else list(requested)
    return [r for ref in refs for r in resolve(catalog, ref, slots)]
