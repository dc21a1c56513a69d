"""FSDP needs CUDA (Lightning refuses it on CPU): what can be checked here is that configs/trainer/fsdp.yaml
builds its strategy and that the auto-wrap policy makes one FSDP unit per backbone block."""

import importlib

import yaml
from torch import nn

from lightning_search.backbones import DigitsBackbone
from lightning_search.backbones.digits import AdaLNBlock
from lightning_search.strategies import wrap_backbone_blocks
from tests.conftest import REPO


def _resolve(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_fsdp_config_builds_its_strategy_with_our_wrap_policy():
    spec = yaml.safe_load((REPO / "configs/trainer/fsdp.yaml").read_text())["trainer"]["strategy"]
    args = dict(spec["init_args"])
    args["auto_wrap_policy"] = _resolve(args["auto_wrap_policy"])
    strategy = _resolve(spec["class_path"])(**args)
    assert strategy.kwargs["auto_wrap_policy"] is wrap_backbone_blocks


def test_wrap_policy_selects_exactly_the_backbone_blocks():
    backbone = DigitsBackbone("digits-s")
    wrapped = [m for m in backbone.modules() if wrap_backbone_blocks(m, recurse=False, nonwrapped_numel=0)]
    assert len(wrapped) == 2 and all(isinstance(m, AdaLNBlock) for m in wrapped)
    assert wrap_backbone_blocks(nn.Linear(2, 2), recurse=True, nonwrapped_numel=0)  # keeps descending


def test_diffusers_unet_and_transformer_blocks_are_wrapped():
    from lightning_search.backbones import StableDiffusionBackbone

    unet = StableDiffusionBackbone(pretrained="tiny").unet
    names = {type(m).__name__ for m in unet.modules() if wrap_backbone_blocks(m, False, 0)}
    assert names == {"ResnetBlock2D", "BasicTransformerBlock"}
