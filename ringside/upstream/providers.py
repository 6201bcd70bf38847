"""The 19 providers: their real default base URLs, auth styles and wire protocols.

Every base URL is overridable with ``<NAME>_BASE_URL`` and keys come from ``<NAME>_API_KEY``
(comma-separated keys form a pool), so tests and benchmarks point providers at a simulator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum


class Wire(Enum):
    OPENAI = "openai"  # OpenAI Chat Completions, spoken natively
    AZURE = "azure"  # OpenAI wire on Azure's deployment URLs with the api-key header
    NATIVE = "native"  # its own wire format, through its adapter (upstream/<name>.py)


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    display: str
    default_base_url: str
    wire: Wire
    key_required: bool = True


PROVIDERS: Mapping[str, ProviderSpec] = {
    p.name: p
    for p in (
        ProviderSpec("openai", "OpenAI", "https://api.openai.com/v1", Wire.OPENAI),
        ProviderSpec("anthropic", "Anthropic", "https://api.anthropic.com", Wire.NATIVE),
        ProviderSpec(
            "gemini", "Google Gemini", "https://generativelanguage.googleapis.com", Wire.NATIVE
        ),
        ProviderSpec("mistral", "Mistral AI", "https://api.mistral.ai/v1", Wire.OPENAI),
        ProviderSpec("cohere", "Cohere", "https://api.cohere.com", Wire.NATIVE),
        ProviderSpec("groq", "Groq", "https://api.groq.com/openai/v1", Wire.OPENAI),
        ProviderSpec("together", "Together AI", "https://api.together.xyz/v1", Wire.OPENAI),
        ProviderSpec(
            "fireworks", "Fireworks AI", "https://api.fireworks.ai/inference/v1", Wire.OPENAI
        ),
        ProviderSpec("perplexity", "Perplexity", "https://api.perplexity.ai", Wire.OPENAI),
        ProviderSpec("deepseek", "DeepSeek", "https://api.deepseek.com", Wire.OPENAI),
        ProviderSpec("xai", "xAI", "https://api.x.ai/v1", Wire.OPENAI),
        ProviderSpec("cerebras", "Cerebras", "https://api.cerebras.ai/v1", Wire.OPENAI),
        ProviderSpec("sambanova", "SambaNova", "https://api.sambanova.ai/v1", Wire.OPENAI),
        ProviderSpec("openrouter", "OpenRouter", "https://openrouter.ai/api/v1", Wire.OPENAI),
        ProviderSpec(
            "ollama", "Ollama", "http://localhost:11434/v1", Wire.OPENAI, key_required=False
        ),
        # Azure has no global endpoint: AZURE_OPENAI_BASE_URL is https://<resource>.openai.azure.com
        ProviderSpec("azure_openai", "Azure OpenAI", "", Wire.AZURE),
        ProviderSpec(
            "bedrock",
            "Amazon Bedrock",
            "https://bedrock-runtime.us-east-1.amazonaws.com",
            Wire.NATIVE,
            key_required=False,  # signed with AWS credentials (SigV4), not an API key
        ),
        ProviderSpec(
            "huggingface", "Hugging Face", "https://router.huggingface.co/v1", Wire.OPENAI
        ),
        ProviderSpec("replicate", "Replicate", "https://api.replicate.com/v1", Wire.NATIVE),
    )
}

AZURE_DEFAULT_API_VERSION = "2024-10-21"


# Provider-specific settings read from the environment (beside <NAME>_API_KEY/_BASE_URL).
_OPTIONS: Mapping[str, tuple[str, ...]] = {
    "bedrock": (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "BEDROCK_REGION",
    ),
}


@dataclass(frozen=True)
class ProviderConfig:
    """A provider's configuration, immutable; per-process state (which keys are usable) is in
    ``upstream.keys.KeyRing``."""

    spec: ProviderSpec
    base_url: str
    keys: tuple[str, ...] = ()
    api_version: str | None = None  # Azure only
    options: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float | None = None  # <NAME>_TIMEOUT_SECONDS: this provider's call deadline

    @property
    def configured(self) -> bool:
        return bool(self.base_url) and (bool(self.keys) or not self.spec.key_required)


def provider_configs(env: Mapping[str, str]) -> dict[str, ProviderConfig]:
    configs: dict[str, ProviderConfig] = {}
    for name, spec in PROVIDERS.items():
        prefix = name.upper()
        raw_keys = env.get(f"{prefix}_API_KEY", "")
        keys = tuple(k.strip() for k in raw_keys.split(",") if k.strip())
        base = (env.get(f"{prefix}_BASE_URL") or spec.default_base_url).rstrip("/")
        api_version = (
            env.get("AZURE_OPENAI_API_VERSION", AZURE_DEFAULT_API_VERSION)
            if spec.wire is Wire.AZURE
            else None
        )
        options = {k: env[k] for k in _OPTIONS.get(name, ()) if env.get(k)}
        raw_timeout = env.get(f"{prefix}_TIMEOUT_SECONDS")
        timeout = float(raw_timeout) if raw_timeout else None
        configs[name] = ProviderConfig(spec, base, keys, api_version, options, timeout)
    return configs
