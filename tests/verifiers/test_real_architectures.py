"""Every real verifier default, built on the meta device without weights, against what its weights were trained
with: the activation found in the built vision tower, the input size, the normalisation and the resize.

Only weight I/O is replaced (downloads return a dummy path, checkpoints are not read, models land on the
``meta`` device); every argument that decides the architecture is the verifier's own default, read from its
signature, and goes through the verifier's own loading code. The reference is the pretrained tag's config in
open_clip's registry (``open_clip.get_pretrained_cfg``) or the released inference code, cited per model.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path

import open_clip
import pytest
import torch
from torch import nn

from lightning_search.verifiers import (
    AestheticVerifier,
    ClipScoreVerifier,
    HPSVerifier,
    ImageRewardVerifier,
    PickScoreVerifier,
    SelfSupervisedVerifier,
    clip_models,
)
from lightning_search.verifiers import aesthetic as aesthetic_module
from lightning_search.verifiers import hps as hps_module
from lightning_search.verifiers import image_reward as image_reward_module
from lightning_search.verifiers.clip_models import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, OpenClipImageEncoder, Preprocess

# HPS v2 / v2.1 fine-tune open_clip ViT-H-14 from this tag with force_quick_gelu=False, and score with
# image_transform(224, is_train=False, mean=None, std=None, resize_longest_max=True): OpenAI mean/std, the longest
# side resized (bicubic) to 224 and padded (github.com/tgxs002/HPSv2, hpsv2/img_score.py and its open_clip fork).
HPS_BASE_TAG = "laion2b_s32b_b79k"
HPS_EVAL = Preprocess(224, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "bicubic", "longest")
# PickScore v1 is CLIP-H fine-tuned on Pick-a-Pic (its model card), in open_clip from the same LAION tag.
PICKSCORE_BASE = ("ViT-H-14", "laion2b_s32b_b79k")
# config.json of yuvalkirstain/PickScore_v1 (the architecture fields; it is laion/CLIP-ViT-H-14-laion2B-s32B-b79K's,
# converted from open_clip's GELU ViT-H-14). transformers' CLIPConfig defaults to quick_gelu: these must say gelu.
PICKSCORE_CONFIG = {
    "projection_dim": 1024,
    "text_config": {
        "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24,
        "hidden_act": "gelu", "max_position_embeddings": 77, "vocab_size": 49408,
    },
    "vision_config": {
        "hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 16, "num_hidden_layers": 32,
        "hidden_act": "gelu", "image_size": 224, "patch_size": 14,
    },
}  # fmt: skip
# preprocessor_config.json of laion/CLIP-ViT-H-14-laion2B-s32B-b79K (the processor PickScore's authors load)
LAION_H14_PREPROCESSOR = {
    "size": 224, "crop_size": 224, "do_center_crop": True, "do_resize": True, "resample": 3,
    "image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD),
}  # fmt: skip
# med_config.json of THUDM/ImageReward: BERT-base with cross-attention (BLIP's med config, vocab + [DEC], [ENC])
IMAGE_REWARD_MED = {
    "hidden_act": "gelu", "hidden_size": 768, "intermediate_size": 3072, "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512, "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0,
    "vocab_size": 30524, "encoder_width": 768, "add_cross_attention": True,
}  # fmt: skip
# ImageReward.ImageReward (github.com/THUDM/ImageReward): BLIP_Pretrain(image_size=224, vit="large"), whose timm-style
# ViT blocks use nn.GELU (exact), and _transform(224) = Resize(224, BICUBIC), CenterCrop(224), OpenAI mean/std.
IMAGE_REWARD_EVAL = Preprocess(224, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "bicubic", "shortest")


def default(cls: type, name: str):
    """A constructor argument's default, read from the signature (never retyped here)."""
    return inspect.signature(cls).parameters[name].default


def activations(module: nn.Module) -> set[str]:
    """The GELU-family activations found by walking the built modules: 'quick_gelu', 'gelu' (exact) or
    'gelu_<approximation>'."""
    from open_clip.transformer import QuickGELU
    from transformers.activations import GELUActivation, NewGELUActivation, QuickGELUActivation

    found = set()
    for m in module.modules():
        if isinstance(m, (QuickGELU, QuickGELUActivation)):
            found.add("quick_gelu")
        elif isinstance(m, nn.GELU):
            found.add("gelu" if m.approximate == "none" else f"gelu_{m.approximate}")
        elif isinstance(m, NewGELUActivation):
            found.add("gelu_tanh")
        elif isinstance(m, GELUActivation):
            found.add("gelu" if m.act is nn.functional.gelu or m.act.__name__ == "_gelu_python" else "gelu_other")
    return found


def tag_activation(model: str, tag: str) -> str:
    cfg = open_clip.get_pretrained_cfg(model, tag)
    assert cfg, f"open_clip has no tag {model}/{tag}"
    return "quick_gelu" if cfg.get("quick_gelu", False) else "gelu"


def tag_preprocess(model: str, tag: str) -> Preprocess:
    """The eval transform open_clip attaches to ``model`` loaded with ``tag``: the tag's normalisation and resize,
    the model config's image size."""
    cfg = open_clip.get_pretrained_cfg(model, tag)
    size = open_clip.get_model_config(model)["vision_cfg"]["image_size"]
    return Preprocess(size, tuple(cfg["mean"]), tuple(cfg["std"]), cfg["interpolation"], cfg["resize_mode"])


def vit_grid_size(visual: nn.Module) -> int:
    """Input side length implied by a built open_clip ViT's positional embedding: patch x sqrt(tokens - 1)."""
    tokens = visual.positional_embedding.shape[0] - 1
    patch = visual.conv1.kernel_size[0]
    return patch * round(tokens**0.5)


@pytest.fixture
def meta_build(monkeypatch, caplog):
    """Build every model on the meta device with no weight I/O; yields a function returning the QuickGELU
    warnings and log records emitted so far."""
    real_create = open_clip.create_model

    def create_model(*args, **kwargs):
        # only where and whether weights land changes; the rest is what load_open_clip passed
        kwargs.update(device="meta", load_weights=False, require_pretrained=False)
        with torch.device("meta"):
            return real_create(*args, **kwargs)

    def download(cfg, *args, **kwargs):
        return "/nonexistent/weights.safetensors"

    monkeypatch.setattr(open_clip, "create_model", create_model)
    monkeypatch.setattr(open_clip, "download_pretrained", download)
    monkeypatch.setattr(open_clip.factory, "download_pretrained", download)
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught, torch.device("meta"):
        warnings.simplefilter("always")

        def quick_gelu_messages() -> list[str]:
            texts = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
            return [t for t in texts if "QuickGELU" in t]

        yield quick_gelu_messages


def assert_open_clip_tower(visual: nn.Module, preprocess: Preprocess, model: str, tag: str) -> None:
    assert next(visual.parameters()).device.type == "meta"  # built without weights
    assert activations(visual) == {tag_activation(model, tag)}
    assert preprocess == tag_preprocess(model, tag)
    assert vit_grid_size(visual) == preprocess.size


def test_clip_score_default(meta_build):
    model, tag = default(ClipScoreVerifier, "model"), default(ClipScoreVerifier, "pretrained")
    verifier = ClipScoreVerifier()
    assert_open_clip_tower(verifier.clip.visual, verifier.preprocess, model, tag)
    assert activations(verifier.clip.transformer) == {tag_activation(model, tag)}  # the text tower as well
    assert meta_build() == []


def test_aesthetic_default_is_the_embedding_its_head_was_trained_on(meta_build, monkeypatch):
    heads = []
    monkeypatch.setattr(aesthetic_module, "load_head", lambda head, *args, **kwargs: heads.append(head))
    model, tag = default(AestheticVerifier, "clip_model"), default(AestheticVerifier, "clip_pretrained")
    verifier = AestheticVerifier()
    assert heads == [verifier.head]
    assert_open_clip_tower(verifier.visual, verifier.preprocess, model, tag)
    # improved-aesthetic-predictor embedded images with clip.load("ViT-L/14"): OpenAI's weights, QuickGELU, 224 px
    # bicubic shortest-side resize + centre crop, OpenAI mean/std; its head takes that 768-wide embedding
    assert (model, tag) == ("ViT-L-14", "openai")
    assert activations(verifier.visual) == {"quick_gelu"}
    assert verifier.preprocess == Preprocess(224, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "bicubic", "shortest")
    assert verifier.head.layers[0].in_features == verifier.visual.output_dim == 768
    assert meta_build() == []


def test_self_supervised_clip_default(meta_build):
    model = default(OpenClipImageEncoder, "model")
    tag = default(SelfSupervisedVerifier, "clip_pretrained")
    verifier = SelfSupervisedVerifier(clip_model=model)
    assert_open_clip_tower(verifier.features.visual, verifier.features.preprocess, model, tag)
    assert meta_build() == []


@pytest.mark.parametrize("version", ["v2.0", "v2.1"])
def test_hps_default(meta_build, monkeypatch, version):
    clip_model = default(HPSVerifier, "clip_model")
    files = []
    monkeypatch.setattr(hps_module, "hub_file", lambda repo, name, **kw: files.append((repo, name)) or Path(name))
    # a state dict of the same architecture stands in for the checkpoint (the activation has no parameters)
    stand_in = open_clip.create_model(clip_model).state_dict()
    monkeypatch.setattr(clip_models, "load_state_dict_file", lambda path: stand_in)
    verifier = HPSVerifier(version=version)
    assert files == [(default(HPSVerifier, "checkpoint"), hps_module.HPS_FILES[version])]
    assert next(verifier.clip.parameters()).device.type == "meta"
    assert activations(verifier.clip.visual) == {tag_activation(clip_model, HPS_BASE_TAG)} == {"gelu"}
    assert verifier.preprocess == HPS_EVAL
    assert vit_grid_size(verifier.clip.visual) == HPS_EVAL.size
    assert meta_build() == []


def test_pickscore_default(meta_build, monkeypatch):
    from transformers import AutoProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from lightning_search.verifiers.pickscore import clip_bpe_tokenizer

    asked = []

    def model_from_pretrained(cls, name, **kwargs):
        asked.append(name)
        return CLIPModel(CLIPConfig(**PICKSCORE_CONFIG))

    def processor_from_pretrained(cls, name, **kwargs):
        asked.append(name)
        return CLIPProcessor(
            image_processor=CLIPImageProcessor(**LAION_H14_PREPROCESSOR), tokenizer=clip_bpe_tokenizer()
        )

    monkeypatch.setattr(CLIPModel, "from_pretrained", classmethod(model_from_pretrained))
    monkeypatch.setattr(AutoProcessor, "from_pretrained", classmethod(processor_from_pretrained))
    verifier = PickScoreVerifier()
    assert asked == [default(PickScoreVerifier, "processor"), default(PickScoreVerifier, "model")]
    vision = verifier.clip.vision_model
    assert next(vision.parameters()).device.type == "meta"
    assert activations(vision) == {tag_activation(*PICKSCORE_BASE)} == {"gelu"}
    assert activations(verifier.clip.text_model) == {"gelu"}
    # the processor's own settings: shortest side to 224 (bicubic = PIL resample 3), centre crop 224, mean/std
    expected = Preprocess(224, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "bicubic", "shortest")
    assert verifier.preprocess == expected == tag_preprocess(*PICKSCORE_BASE)
    assert vision.embeddings.position_embedding.num_embeddings == 1 + (224 // 14) ** 2
    assert meta_build() == []


def test_image_reward_default(meta_build, monkeypatch, tmp_path):
    import json

    from lightning_search.verifiers.image_reward import tiny_blip_tokenizer

    (tmp_path / "med_config.json").write_text(json.dumps(IMAGE_REWARD_MED))
    files = []

    def hub_file(repo, name, **kwargs):
        files.append((repo, name))
        return tmp_path / name

    monkeypatch.setattr(image_reward_module, "hub_file", hub_file)
    monkeypatch.setattr(image_reward_module, "load_state_dict_file", lambda path: {})
    monkeypatch.setattr(image_reward_module, "blip_tokenizer", lambda *a, **k: tiny_blip_tokenizer())
    monkeypatch.setattr(ImageRewardVerifier, "load_state_dict", lambda self, state, strict=True: ([], []))
    verifier = ImageRewardVerifier()
    repo = default(ImageRewardVerifier, "model")
    names = (default(ImageRewardVerifier, "checkpoint_file"), default(ImageRewardVerifier, "config_file"))
    assert files == [(repo, names[0]), (repo, names[1])]
    vision = verifier.vision_model
    assert next(vision.parameters()).device.type == "meta"
    assert activations(vision) == {"gelu"}  # BLIP's ViT: nn.GELU, not CLIP's QuickGELU
    assert activations(verifier.text_encoder) == {"gelu"}  # BERT's exact GELU (med_config hidden_act)
    assert verifier.preprocess == IMAGE_REWARD_EVAL
    patch = vision.embeddings.patch_embedding.kernel_size[0]
    assert (patch, vision.embeddings.num_positions) == (16, 1 + (224 // 16) ** 2)
    assert vision.config.hidden_size == 1024 and vision.config.num_hidden_layers == 24  # ViT-L
    assert meta_build() == []


def test_the_check_sees_open_clips_own_mismatch(meta_build):
    """The failure these tests guard against, observed: open_clip 3.x builds ViT-L-14 with nn.GELU for OpenAI's
    QuickGELU weights unless told otherwise, and only warns."""
    net = open_clip.create_model("ViT-L-14", pretrained="openai")
    assert activations(net.visual) == {"gelu"} != {tag_activation("ViT-L-14", "openai")}
    assert any("QuickGELU mismatch" in m for m in meta_build())
