"""Strategies: DDP fit through the CLI with configs/trainer/ddp.yaml (two CPU processes). FSDP needs CUDA
(Lightning refuses it on CPU): what can be checked here is that configs/trainer/fsdp.yaml builds its strategy and
that the auto-wrap policy makes one FSDP unit per backbone block."""

import importlib
import os
import subprocess
import sys

import pytest
import yaml
from torch import nn

from lightning_search.backbones import DigitsBackbone
from lightning_search.backbones.digits import AdaLNBlock
from lightning_search.strategies import wrap_backbone_blocks
from tests.conftest import REPO, patched_recipe


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


def _cli(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return [sys.executable, "-m", "lightning_search.cli", *args], env


@pytest.mark.slow
def test_ddp_fit_through_the_cli_with_the_ddp_config(tmp_path):
    recipe = patched_recipe("digits/fit.yaml", tmp_path)
    cmd, env = _cli("fit", "--config", str(recipe), "--config", str(REPO / "configs/trainer/ddp.yaml"),
                    "--trainer.devices=2", "--trainer.accelerator=cpu", "--trainer.max_steps=4",
                    "--model.init_args.backbone.init_args.size=digits-xs", "--trainer.enable_progress_bar=false",
                    cwd=tmp_path)  # fmt: skip
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "distributed_backend=gloo" in out.stderr + out.stdout
    assert "All distributed processes registered" in out.stderr + out.stdout
    assert (tmp_path / "runs/digits/generator/generator.ckpt").is_file()
