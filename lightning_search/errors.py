"""The project's exceptions: callers can catch :class:`LightningSearchError` for every error we raise."""

from __future__ import annotations

from collections.abc import Iterable


class LightningSearchError(Exception):
    """Base class of every error raised by lightning-search."""


class UnknownNameError(LightningSearchError, KeyError):
    """A registry lookup failed; the message lists the valid names."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]) -> None:
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


class ConfigurationError(LightningSearchError, ValueError):
    """A setting is out of range or inconsistent with another one."""


class CheckpointError(LightningSearchError, FileNotFoundError):
    """A checkpoint or weights folder is missing or unreadable."""


def lookup(registry: dict, kind: str, name: str):
    """``registry[name]`` or an :class:`UnknownNameError` listing the valid names."""
    try:
        return registry[name]
    except KeyError:
        raise UnknownNameError(kind, name, registry) from None
