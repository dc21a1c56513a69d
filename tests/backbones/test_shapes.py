"""The shapes text-to-image backbone: word tokenizer, text that matters (order, null caption), CFG dropout,
sizes whose FLOPs the counter can count, and a fit + predict through DiffusionModule."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lightning_search import DiffusionModule
from lightning_search.backbones import SHAPES_SIZES, ShapesBackbone
from lightning_search.backbones.shapes import WordTokenizer
from lightning_search.data import ShapesDataModule
from lightning_search.errors import ConfigurationError, UnknownNameError
from lightning_search.metrics.flops import backbone_gflops
from lightning_search.sampling import Sampler
from lightning_search.worlds.shapes import vocabulary


@pytest.fixture(scope="module")
def tiny() -> ShapesBackbone:
    torch.manual_seed(0)
    backbone = ShapesBackbone("shapes-xs").eval()
    for p in backbone.net.out.parameters():  # the zero-initialised output layer would hide the text's effect
        torch.nn.init.normal_(p, std=0.1)
    return backbone


def test_word_tokenizer_by_hand():
    tok = WordTokenizer(["a", "circle", "photo", "of"], max_length=6)
    assert tok(["a photo of a circle"]).tolist() == [[2, 4, 5, 2, 3, 0]]  # 0 pads, 1 is the null token
    assert tok.null(2).tolist() == [[1, 0, 0, 0, 0, 0]] * 2
    with pytest.raises(ConfigurationError, match="not in the shapes vocabulary"):
        tok(["a photo of a dog"])
    with pytest.raises(ConfigurationError, match="more than 6"):
        tok(["a a a a a a a"])
    assert len(WordTokenizer(vocabulary())) == len(vocabulary()) + 2


def test_output_depends_on_words_and_their_order(tiny):
    x, t = torch.randn(1, 3, 32, 32).repeat(3, 1, 1, 1), torch.full((3,), 0.5)
    captions = [
        "a photo of a circle left of a square",
        "a photo of a square left of a circle",
        {"prompt": "a photo of a circle left of a square"},
    ]
    with torch.no_grad():
        out = tiny(x, t, tiny.encode_conditions(captions))
        null = tiny(x[:1], t[:1], tiny.null_conditions(tiny.encode_conditions(captions[:1])))
    assert out.shape == (3, 3, 32, 32)
    torch.testing.assert_close(out[0], out[2])  # a metadata dict is read by its prompt
    assert (out[0] - out[1]).abs().max() > 1e-4  # same bag of words, other order: another output
    assert (out[0] - null[0]).abs().max() > 1e-4


def test_caption_dropout_gives_null_rows():
    backbone = ShapesBackbone("shapes-xs", caption_dropout=0.5)
    cond = backbone.encode_conditions(["a photo of a red circle"] * 200)
    dropped = backbone.drop_conditions(cond, torch.Generator().manual_seed(0))
    null = (dropped == backbone.null_conditions(cond)).all(1)
    assert 70 < null.sum() < 130 and (dropped[~null] == cond[~null]).all()


def test_sizes_are_counted_and_big_is_several_times_small():
    small, big = ShapesBackbone("shapes-s"), ShapesBackbone("shapes-b")
    caption = {"prompt": "a photo of two circles", "tag": "counting"}
    gs, gb = backbone_gflops(small, caption), backbone_gflops(big, caption)
    assert 0.01 < gs < gb and gb > 2.5 * gs  # "several times": 2.9x (0.068 and 0.199)
    with pytest.raises(UnknownNameError, match="shapes-s"):
        ShapesBackbone("shapes-xl")
    assert set(SHAPES_SIZES) >= {"shapes-s", "shapes-b"}


def test_fit_then_predict_through_the_module(tmp_path):
    L.seed_everything(0)
    dm = ShapesDataModule(num_images=64, batch_size=16, prompts_per_category=1, samples_per_prompt=2)
    module = DiffusionModule(ShapesBackbone("shapes-xs"), sampler=Sampler("euler", steps=2))
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(module, dm)
    before = [p.clone() for p in module.backbone.parameters()]
    out = trainer.predict(module, dm)
    assert sum(o["images"].shape[0] for o in out) == 12 and out[0]["images"].shape[1:] == (3, 32, 32)
    assert isinstance(out[0]["condition"][0], dict) and out[0]["gflops"][0] > 0
    assert all((a == b).all() for a, b in zip(before, module.backbone.parameters()))


@pytest.mark.parametrize("target", ShapesBackbone.lora_target_modules)
def test_each_lora_target_is_live(target):
    from lightning_search.lora import LoraSettings, add_lora, lora_parameters

    torch.manual_seed(0)
    backbone = ShapesBackbone("shapes-xs").eval()
    torch.nn.init.normal_(backbone.net.out.weight, std=0.1)
    x, t = torch.randn(2, 3, 32, 32), torch.rand(2)
    cond = backbone.encode_conditions(["a photo of a circle", "a photo of two squares"])
    with torch.no_grad():
        base = backbone(x, t, cond)
        add_lora(backbone, LoraSettings(rank=2, target_modules=[target]))
        for _, p in lora_parameters(backbone):
            torch.nn.init.normal_(p, std=0.1)
        # an adapter on a layer whose weight is read directly (nn.MultiheadAttention's out_proj) changes nothing
        assert (backbone(x, t, cond) - base).abs().max() > 1e-3
