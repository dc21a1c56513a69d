"""Optimizer and scheduler factories as the CLI hands them, made plain (ground floor: imports nothing of ours)."""

from __future__ import annotations

import functools
from collections.abc import Callable


def plain_callable(fn: Callable | None) -> Callable | None:
    """An optimizer / scheduler factory without jsonargparse's instantiator attached.

    LightningCLI hands ``partial(call_without_instantiate_context, instantiator, AdamW, lr=...)``; the
    instantiator reaches the CLI and the Trainer (thread locks), so deep copies of the module fail under DDP,
    e.g. in EMAWeightAveraging's AveragedModel. The class and its arguments are all we need.
    """
    if isinstance(fn, functools.partial) and len(fn.args) == 2 and isinstance(fn.args[1], type):
        return functools.partial(fn.args[1], **fn.keywords)
    return fn
