"""Each provider's real default base URL and auth, and the environment overrides."""

from __future__ import annotations

import pytest

from ringside.errors import NoActiveProviderKeys
from ringside.tokens import TokenUsage
from ringside.upstream.keys import KeyRing
from ringside.upstream.providers import PROVIDERS, Wire, provider_configs
from ringside.upstream.shapes import choices_text_chars
from ringside.upstream.sse import SSEDecoder

REAL_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "together": "https://api.together.xyz/v1",
    "fireworks": "https://api.fireworks.ai/inference/v1",
    "perplexity": "https://api.perplexity.ai",
    "deepseek": "https://api.deepseek.com",
    "xai": "https://api.x.ai/v1",
    "cerebras": "https://api.cerebras.ai/v1",
    "sambanova": "https://api.sambanova.ai/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "ollama": "http://localhost:11434/v1",
    "mistral": "https://api.mistral.ai/v1",
    "huggingface": "https://router.huggingface.co/v1",
}


def test_nineteen_providers() -> None:
    assert len(PROVIDERS) == 19


@pytest.mark.parametrize(("name", "url"), REAL_BASE_URLS.items())
def test_real_default_base_urls(name: str, url: str) -> None:
    cfg = provider_configs({})[name]
    assert cfg.base_url == url
    assert cfg.spec.wire is Wire.OPENAI
    assert not cfg.configured or name == "ollama"  # no key, not usable (ollama needs none)


def test_azure_needs_its_resource_url_and_uses_api_versions() -> None:
    cfg = provider_configs({})["azure_openai"]
    assert cfg.base_url == ""
    assert not cfg.configured
    cfg = provider_configs(
        {
            "AZURE_OPENAI_BASE_URL": "https://acme.openai.azure.com/",
            "AZURE_OPENAI_API_KEY": "k",
            "AZURE_OPENAI_API_VERSION": "2025-01-01-preview",
        }
    )["azure_openai"]
    assert cfg.base_url == "https://acme.openai.azure.com"
    assert cfg.api_version == "2025-01-01-preview"
    assert cfg.configured


def test_key_pools_rotate_and_set_refused_and_throttled_keys_aside() -> None:
    cfg = provider_configs({"GROQ_API_KEY": "a, b,,c"})["groq"]
    assert cfg.keys == ("a", "b", "c")
    now = [100.0]
    ring = KeyRing("groq", cfg.keys, clock=lambda: now[0])
    assert [ring.lease() for _ in range(4)] == ["a", "b", "c", "a"]
    ring.refused("b")
    ring.throttled("c", 2.5)
    assert [ring.lease() for _ in range(3)] == ["a", "a", "a"]
    now[0] += 3
    assert {ring.lease() for _ in range(4)} == {"a", "c"}
    ring.refused("a")
    ring.refused("c")
    with pytest.raises(NoActiveProviderKeys):
        ring.lease()
    assert [s["state"] for s in ring.status()] == ["refused"] * 3
    ring.reset()
    assert ring.usable() == 3


def test_usage_and_text_counting_tolerate_malformed_upstream_bodies() -> None:
    assert TokenUsage.from_openai(
        {
            "prompt_tokens": "7",
            "completion_tokens": -1,
            "prompt_tokens_details": None,
            "completion_tokens_details": {"reasoning_tokens": 3},
        }
    ) == (TokenUsage(input=0, cached_input=0, output=0, reasoning=3))
    weird = [
        None,
        "x",
        {"message": "x"},
        {"message": {"content": 5, "tool_calls": "no"}},
        {"message": {"content": "abc", "tool_calls": [None, {"function": {"arguments": "{}"}}]}},
    ]
    assert choices_text_chars(weird, "message") == 5
    assert choices_text_chars("not a list", "delta") == 0


def test_sse_decoder_handles_split_reads_crlf_and_comments() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a"') == []
    assert decoder.feed(b':1}\n\n: keep-alive\n\ndata:{"b":2}\r\n\r\nevent: x\ndata: [DO') == [
        b'{"a":1}',
        b'{"b":2}',
    ]
    assert decoder.feed(b"NE]\n\n") == [b"[DONE]"]
    assert decoder.feed(b"data: line one\ndata: line two\n\n") == [b"line one\nline two"]


def test_sse_decoder_crlf_split_between_reads() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"\n\r") == []
    assert decoder.feed(b"\ndata: y\r\n\r\n") == [b"x", b"y"]
