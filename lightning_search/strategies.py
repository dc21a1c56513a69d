"""Scale-out helpers for Lightning's strategies (DDP, FSDP): nothing home-made for launching or groups."""

from __future__ import annotations

from torch import nn

# The repeated blocks of every family, by class name so that this module imports no model library:
# digits' adaLN blocks, diffusers' transformer blocks (SD/SDXL/PixArt/DiT: BasicTransformerBlock; FLUX) and
# UNet residual blocks.
BLOCK_CLASS_NAMES: frozenset[str] = frozenset(
    {
        "AdaLNBlock",
        "BasicTransformerBlock",
        "FluxTransformerBlock",
        "FluxSingleTransformerBlock",
        "ResnetBlock2D",
    }
)


def wrap_backbone_blocks(module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
    """FSDP auto-wrap policy: one FSDP unit per block of the backbone (its transformer or UNet blocks).

    Used as ``trainer.strategy.init_args.auto_wrap_policy: lightning_search.strategies.wrap_backbone_blocks``
    (``configs/trainer/fsdp.yaml``); the signature is torch's ``_Policy`` callable.
    """
    if recurse:
        return True
    return type(module).__name__ in BLOCK_CLASS_NAMES
