"""Optimizer factories lose jsonargparse's instantiator (deep copies under DDP need it gone)."""

import functools

import torch

from lightning_search.factories import plain_callable


def test_optimizer_factories_lose_jsonargparse_instantiators():
    class Instantiator:  # stands in for jsonargparse's, which holds the CLI and the Trainer
        pass

    def call_without_instantiate_context(instantiator, cls, *args, **kwargs):
        return cls(*args, **kwargs)

    cli_style = functools.partial(call_without_instantiate_context, Instantiator(), torch.optim.AdamW, lr=0.01)
    plain = plain_callable(cli_style)
    assert plain.func is torch.optim.AdamW and plain.keywords == {"lr": 0.01}
    assert plain_callable(torch.optim.SGD) is torch.optim.SGD
