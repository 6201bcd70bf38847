"""The simulated providers: each mirrors its real URL layout under a first path segment.

``PROVIDER_BASES[name]`` is the base path a gateway should use for that provider (what the real
provider documents as its base URL, minus the host). Requests are routed by exact path, so a
gateway that builds a wrong URL gets a 404 just as it would from the real provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

PROVIDER_BASES: Final[Mapping[str, str]] = {
    "openai": "/openai/v1",
    "groq": "/groq/openai/v1",
    "together": "/together/v1",
    "fireworks": "/fireworks/inference/v1",
    "perplexity": "/perplexity",
    "deepseek": "/deepseek",
    "xai": "/xai/v1",
    "cerebras": "/cerebras/v1",
    "sambanova": "/sambanova/v1",
    "openrouter": "/openrouter/api/v1",
    "ollama": "/ollama/v1",
    "mistral": "/mistral/v1",
    "huggingface": "/huggingface/v1",
    "azure_openai": "/azure_openai",
    # Native wires (tests/simulator/native.py): the base URL each official SDK takes.
    "anthropic": "/anthropic",
    "gemini": "/gemini",
    "cohere": "/cohere",
    "bedrock": "/bedrock",
    "replicate": "/replicate/v1",
}

NATIVE_PROVIDERS: Final[frozenset[str]] = frozenset(
    {"anthropic", "gemini", "cohere", "bedrock", "replicate"}
)

NO_AUTH_PROVIDERS: Final[frozenset[str]] = frozenset({"ollama"})
AZURE: Final = "azure_openai"
AZURE_DEPLOYMENTS_PREFIX: Final = "/azure_openai/openai/deployments/"
CHAT_SUFFIX: Final = "/chat/completions"
EMBEDDINGS_SUFFIX: Final = "/embeddings"

CHAT: Final = "chat"
EMBEDDINGS: Final = "embeddings"
MODELS: Final = "models"
# What an Azure deployment URL may end with, and the kind of request it is.
AZURE_DEPLOYMENT_KINDS: Final = ((CHAT_SUFFIX, CHAT), (EMBEDDINGS_SUFFIX, EMBEDDINGS))

# Extra accepted base paths (the real provider serves both).
_ALIASES: Final[Mapping[str, tuple[str, ...]]] = {"deepseek": ("/deepseek/v1",)}


def _build_routes() -> dict[str, tuple[str, str]]:
    routes: dict[str, tuple[str, str]] = {}
    for provider, base in PROVIDER_BASES.items():
        if provider in NATIVE_PROVIDERS:
            continue  # routed by tests/simulator/native.py
        if provider == AZURE:
            routes["/azure_openai/openai/models"] = (provider, MODELS)
            continue
        for prefix in (base, *_ALIASES.get(provider, ())):
            routes[prefix + CHAT_SUFFIX] = (provider, CHAT)
            routes[prefix + EMBEDDINGS_SUFFIX] = (provider, EMBEDDINGS)
            routes[prefix + "/models"] = (provider, MODELS)
    return routes


# exact path -> (provider, kind); Azure paths carry a deployment and are matched apart.
ROUTES: Final[Mapping[str, tuple[str, str]]] = _build_routes()

_MODEL_IDS: Final[Mapping[str, tuple[str, ...]]] = {
    "openai": ("gpt-4o-mini", "gpt-4o", "o3-mini"),
    "groq": ("llama-3.3-70b-versatile", "llama-3.1-8b-instant"),
    "together": ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "Qwen/Qwen2.5-72B-Instruct-Turbo"),
    "fireworks": ("accounts/fireworks/models/llama-v3p1-8b-instruct",),
    "perplexity": ("sonar", "sonar-pro"),
    "deepseek": ("deepseek-chat", "deepseek-reasoner"),
    "xai": ("grok-3", "grok-3-mini"),
    "cerebras": ("llama3.1-8b", "llama-3.3-70b"),
    "sambanova": ("Meta-Llama-3.3-70B-Instruct",),
    "openrouter": ("openai/gpt-4o-mini", "anthropic/claude-3.5-sonnet"),
    "ollama": ("llama3.2", "qwen2.5"),
    "mistral": ("mistral-small-latest", "mistral-large-latest"),
    "huggingface": ("meta-llama/Llama-3.1-8B-Instruct",),
    "azure_openai": ("gpt-4o-mini", "gpt-4o"),
}

MODELS_CREATED: Final = 1_700_000_000


def models_payload(provider: str) -> dict[str, object]:
    """The OpenAI ``ListModelsResponse`` the provider's ``GET .../models`` returns."""
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": MODELS_CREATED, "owned_by": provider}
            for m in _MODEL_IDS.get(provider, ())
        ],
    }


def base_path(provider: str) -> str:
    try:
        return PROVIDER_BASES[provider]
    except KeyError:
        raise ValueError(f"unknown simulated provider {provider!r}") from None
