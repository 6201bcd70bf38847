"""Client token helpers: origins and IPs as browsers send them, the signing-key setting."""

from __future__ import annotations

import pytest

from ringside.domain.client_tokens import normalize_ip, normalize_origin
from ringside.settings import Settings


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://app.example", "https://app.example"),
        ("HTTPS://App.Example:443/", "https://app.example"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("http://app.example:80", "http://app.example"),
        ("https://[::1]:8443", "https://[::1]:8443"),
        ("chrome-extension://abcdef", "chrome-extension://abcdef"),
        ("null", None),
        ("app.example", None),
        ("https://app.example/path", None),
        ("https://u:p@app.example", None),
        ("https://app.example?x", None),
        ("https://app.example#x", None),
        ("https://app.example:99999", None),
        ("https://app.éxample", None),
        ("https://app.example\x00", None),
        ("", None),
    ],
)
def test_origins_normalize_as_browsers_send_them(given: str, expected: str | None) -> None:
    assert normalize_origin(given) == expected


def test_ips_normalize() -> None:
    assert normalize_ip("127.0.0.1") == "127.0.0.1"
    assert normalize_ip("::ffff:127.0.0.1") == "127.0.0.1"
    assert normalize_ip("2001:DB8::1") == "2001:db8::1"
    assert normalize_ip("localhost") is None


def test_signing_keys_setting() -> None:
    secret = "s" * 32
    env = {"RINGSIDE_DATA_DIR": "/nonexistent"}
    keys = Settings.from_env({**env, "RINGSIDE_CLIENT_TOKEN_KEYS": f"b:{secret}, a:{secret}"})
    assert keys.client_token_keys == (("b", secret), ("a", secret))
    assert Settings.from_env(env).client_token_keys == ()
    for bad in ("nokid", f"a:{secret[:31]}", f"a b:{secret}", f"a:{secret},a:{secret}"):
        with pytest.raises(ValueError, match="RINGSIDE_CLIENT_TOKEN_KEYS"):
            Settings.from_env({**env, "RINGSIDE_CLIENT_TOKEN_KEYS": bad})
