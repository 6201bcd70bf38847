"""A provider's key pool: the keys are used in turn; a key the provider refused (401) is set
aside until an operator resets it (or the process restarts), a throttled one (429) rests for
its Retry-After. One ring per provider per process, shared by all requests; the configuration
(``ProviderConfig.keys``) stays immutable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ringside.errors import NoActiveProviderKeys

_DEFAULT_COOLDOWN_S = 1.0
_MAX_COOLDOWN_S = 300.0


def mask(key: str) -> str:
    """A key as operators may see it: its last four characters."""
    return "…" + key[-4:] if len(key) > 8 else "…"


@dataclass
class KeyRing:
    provider: str
    keys: tuple[str, ...]
    key_required: bool = True
    clock: Callable[[], float] = field(default=trio.current_time, repr=False)
    _next: int = field(default=0, init=False, repr=False)
    _disabled: set[str] = field(default_factory=set, init=False, repr=False)
    _resting_until: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    def lease(self) -> str | None:
        """The next usable key, round-robin; None when the provider needs no key. Raises
        ``NoActiveProviderKeys`` (503) when every configured key is set aside or resting."""
        if not self.keys:
            if self.key_required:
                raise NoActiveProviderKeys(
                    f"No API key is configured for provider {self.provider!r} "
                    f"(set {self.provider.upper()}_API_KEY)."
                )
            return None
        now = self.clock() if self._resting_until else 0.0
        for _ in range(len(self.keys)):
            key = self.keys[self._next % len(self.keys)]
            self._next += 1
            if key in self._disabled:
                continue
            until = self._resting_until.get(key)
            if until is not None:
                if until > now:
                    continue
                del self._resting_until[key]
            return key
        resting = [until - now for until in self._resting_until.values() if until > now]
        raise NoActiveProviderKeys(
            f"Every API key of provider {self.provider!r} is set aside (refused by the "
            "provider) or resting (rate limited by it).",
            retry_after_seconds=round(min(resting), 3) if resting else None,
        )

    def usable(self) -> int:
        now = self.clock() if self._resting_until else 0.0
        return sum(
            1
            for k in self.keys
            if k not in self._disabled and self._resting_until.get(k, 0.0) <= now
        )

    def refused(self, key: str | None) -> None:
        """The provider answered 401 for ``key``: set it aside."""
        if key is not None:
            self._disabled.add(key)

    def throttled(self, key: str | None, retry_after_s: float | None) -> None:
        """The provider answered 429 for ``key``: rest it for ``retry_after_s``."""
        if key is not None:
            rest = min(max(retry_after_s or _DEFAULT_COOLDOWN_S, 0.0), _MAX_COOLDOWN_S)
            self._resting_until[key] = self.clock() + rest

    def reset(self) -> None:
        """Operator action: every key usable again."""
        self._disabled.clear()
        self._resting_until.clear()

    def status(self) -> list[dict[str, object]]:
        now = self.clock()
        out: list[dict[str, object]] = []
        for k in self.keys:
            until = self._resting_until.get(k, 0.0)
            state = "refused" if k in self._disabled else "resting" if until > now else "active"
            entry: dict[str, object] = {"key": mask(k), "state": state}
            if state == "resting":
                entry["resting_for_seconds"] = round(until - now, 3)
            out.append(entry)
        return out
