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


class RunFolderError(LightningSearchError, ValueError):
    """A run folder cannot be used: not writable, damaged, or made with other settings."""


class Interrupted(LightningSearchError):
    """A run stopped by a signal at a sample / step boundary, with what it had done saved to be resumed.

    ``exit_code`` is the shell's convention for a process ended by that signal (128 + its number)."""

    EXIT_CODES = {"SIGTERM": 143, "SIGINT": 130}

    def __init__(self, signal_name: str, what: str, resume: str = "rerun the same command to resume") -> None:
        self.signal_name, self.exit_code = signal_name, self.EXIT_CODES.get(signal_name, 1)
        super().__init__(f"{what} stopped by {signal_name}; everything done so far is saved: {resume}")


def lookup(registry: dict, kind: str, name: str):
    """``registry[name]`` or an :class:`UnknownNameError` listing the valid names."""
    try:
        return registry[name]
    except KeyError:
        raise UnknownNameError(kind, name, registry) from None
