"""CLIP plumbing shared by the CLIP-based verifiers: tensor preprocessing, open_clip loading, tiny twins.

Everything here works on tensors already in [0, 1] (what a backbone's ``decode`` returns), so no PIL round trip:
``clip_preprocess`` reproduces open_clip's / OpenAI CLIP's eval transform (bicubic resize of the shortest side,
centre crop, normalisation by the CLIP mean and std) on a batch.

Real weights: ``load_open_clip("ViT-L-14", "openai")`` (an open_clip model name and pretrained tag, a weights
file, ``"hf-hub:org/repo"`` or ``"local-dir:/folder"``). Without network the weights are looked up first, so a
missing file raises :class:`CheckpointError` at once instead of after building a 400M-parameter model. A
pretrained tag's model is built with the activation the tag was trained with (QuickGELU for OpenAI's weights).
Tests: ``load_open_clip("tiny")`` builds a small random open_clip ``CLIP`` from a fixed seed, with the real
CLIP BPE tokenizer (bundled with open_clip).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_search.errors import CheckpointError, ConfigurationError

log = logging.getLogger(__name__)

# OpenAI CLIP's normalisation constants (open_clip.constants.OPENAI_DATASET_MEAN / _STD).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

TINY = "tiny"


@dataclass(frozen=True)
class Preprocess:
    """Eval-time image transform of a CLIP-like model (open_clip's ``PreprocessCfg`` fields we need)."""

    size: int = 224
    mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    std: tuple[float, ...] = OPENAI_CLIP_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return clip_preprocess(images, self.size, self.mean, self.std, self.resize_mode, self.interpolation)

    @classmethod
    def from_open_clip(cls, model: nn.Module) -> Preprocess:
        import open_clip

        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg.get("size", 224)
        size = size if isinstance(size, int) else int(size[-1])
        return cls(
            size=size,
            mean=tuple(cfg.get("mean", OPENAI_CLIP_MEAN)),
            std=tuple(cfg.get("std", OPENAI_CLIP_STD)),
            interpolation=cfg.get("interpolation", "bicubic"),
            resize_mode=cfg.get("resize_mode", "shortest"),
        )


def clip_preprocess(
    images: torch.Tensor,
    size: int,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
    resize_mode: str = "shortest",
    interpolation: str = "bicubic",
) -> torch.Tensor:
    """CLIP's eval transform on a batch: images (B, 3, H, W) in [0, 1] -> (B, 3, size, size) normalised.

    ``shortest`` (OpenAI CLIP, open_clip's default): ``Resize(size)`` of the shortest side then
    ``CenterCrop(size)``. ``longest`` (open_clip's ``ResizeKeepRatio(longest=1)`` + ``CenterCropOrPad``, the
    HPS eval transform): the longest side to ``size``, then zero padding. Antialiased resizing and a clamp to
    [0, 1] mimic PIL, whose bicubic output is saturated to uint8 before ``ToTensor``.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    mode = InterpolationMode.BILINEAR if interpolation == "bilinear" else InterpolationMode.BICUBIC
    h, w = images.shape[-2:]
    if resize_mode == "shortest":
        if min(h, w) != size:
            images = TF.resize(images, [size], interpolation=mode, antialias=True)
        images = TF.center_crop(images, [size, size])
    elif resize_mode == "longest":
        scale = size / max(h, w)
        new = [max(1, round(h * scale)), max(1, round(w * scale))]
        if new != [h, w]:
            images = TF.resize(images, new, interpolation=mode, antialias=True)
        images = TF.center_crop(images, [size, size])  # pads with zeros when smaller, as CenterCropOrPad
    elif resize_mode == "squash":
        images = TF.resize(images, [size, size], interpolation=mode, antialias=True)
    else:
        raise ConfigurationError(f"resize_mode must be 'shortest', 'longest' or 'squash', got {resize_mode!r}")
    images = images.clamp(0, 1)
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


def condition_text(condition: Any) -> str:
    """The prompt of a text-to-image condition: a string, a mapping with ``"prompt"``, or an object with
    a ``prompt`` attribute."""
    if isinstance(condition, str):
        return condition
    if isinstance(condition, dict) and isinstance(condition.get("prompt"), str):
        return condition["prompt"]
    prompt = getattr(condition, "prompt", None)
    if isinstance(prompt, str):
        return prompt
    raise ConfigurationError(
        f"a text-to-image verifier needs prompts as conditions (str or {{'prompt': str}}), got {type(condition).__name__}"
    )


def unique_texts(conditions: Sequence[Any]) -> tuple[list[str], torch.Tensor]:
    """Distinct prompts and, for each condition, the index of its prompt: search passes B x N candidates that
    share B prompts, so each prompt is encoded once."""
    texts = [condition_text(c) for c in conditions]
    order: dict[str, int] = {}
    inverse = [order.setdefault(t, len(order)) for t in texts]
    return list(order), torch.tensor(inverse, dtype=torch.long)


def model_dtype_device(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    p = next(module.parameters())
    return p.dtype, p.device


def tiny_open_clip(seed: int = 0, image_size: int = 32, embed_dim: int = 16) -> nn.Module:
    """A small random open_clip ``CLIP`` (2-layer ViT and text transformer, width 32) with CLIP's 49,408-token
    vocabulary, so the real BPE tokenizer fits; built from ``seed`` without touching the global generator."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=image_size)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(embed_dim=embed_dim, vision_cfg=vision, text_cfg=text)
    open_clip.set_model_preprocess_cfg(
        model,
        {
            "size": image_size,
            "mode": "RGB",
            "mean": OPENAI_CLIP_MEAN,
            "std": OPENAI_CLIP_STD,
            "interpolation": "bicubic",
            "resize_mode": "shortest",
            "fill_color": 0,
        },
    )
    return model.eval()


def missing_weights_error(what: str, how: str, err: BaseException | None = None) -> CheckpointError:
    reason = f" ({type(err).__name__}: {str(err).splitlines()[0][:200]})" if err is not None else ""
    return CheckpointError(f"could not load {what}{reason}. Without network access, {how}")


@cache
def _clip_simple_tokenizer() -> Callable[[list[str]], torch.Tensor]:
    """open_clip's CLIP BPE tokenizer: reading its 49k merges takes ~40 ms, and it keeps no state between calls
    but a memo of words it has split, so the tiny verifiers of one process share it."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=77)


def load_open_clip(
    model: str, pretrained: str | None = None, *, cache_dir: str | None = None, seed: int = 0
) -> tuple[nn.Module, Callable[[list[str]], torch.Tensor]]:
    """An open_clip model (eval mode, frozen) and its tokenizer (list of str -> (B, context_length) ids).

    model: an open_clip model name (``"ViT-L-14"``), ``"hf-hub:org/repo"``, ``"local-dir:/folder"`` (a folder
        holding ``open_clip_config.json`` and weights, as ``open_clip.push_to_hf_hub`` writes), or ``"tiny"``.
    pretrained: a pretrained tag of that model name (``"openai"``, ``"laion2b_s32b_b79k"``), a local weights
        file, or None for the architecture alone (random weights: callers load their own checkpoint).
    """
    import open_clip

    if model == TINY:
        return tiny_open_clip(seed).requires_grad_(False), _clip_simple_tokenizer()

    how_local = (
        "download the weights elsewhere and pass a local file as pretrained=/path/to/open_clip_model.safetensors, "
        "or a folder as model='local-dir:/path/to/folder'"
    )
    kwargs: dict[str, Any] = {"cache_dir": cache_dir}
    if model.startswith("local-dir:"):
        folder = Path(model.removeprefix("local-dir:"))
        if not folder.is_dir():
            raise CheckpointError(f"open_clip folder {str(folder)!r} does not exist; {how_local}")
        # open_clip only warns when the folder has a config but no weights: a verifier must not run random
        kwargs["require_pretrained"] = True
        pretrained = None  # the folder holds the weights (open_clip ignores pretrained= with a schema)
    elif model.startswith("hf-hub:"):
        kwargs["require_pretrained"] = True
        pretrained = None
    else:
        if model not in open_clip.list_models():
            raise ConfigurationError(
                f"unknown open_clip model {model!r}; see open_clip.list_models(), or use 'hf-hub:' / 'local-dir:'"
            )
        if pretrained is not None:
            if Path(pretrained).suffix or "/" in pretrained:  # a file path, not a tag
                if not Path(pretrained).is_file():
                    raise CheckpointError(f"open_clip weights file {pretrained!r} not found; {how_local}")
            else:
                cfg = open_clip.get_pretrained_cfg(model, pretrained)
                if not cfg:
                    tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
                    raise ConfigurationError(
                        f"open_clip model {model!r} has no pretrained tag {pretrained!r}; tags: {tags}"
                    )
                # open_clip 3.x builds a model name's own config whatever the tag (ViT-L-14: nn.GELU) and only
                # warns ("QuickGELU mismatch") when the tag's weights were trained with QuickGELU (OpenAI's,
                # MetaCLIP, DFN): the features then differ from the released model's. Build the activation the
                # tag's config says. force_quick_gelu rather than renaming to "<name>-quickgelu": the tag lookup
                # stays keyed by the name the user gave, it works for every architecture (not only those with a
                # -quickgelu twin), and open_clip's own check still runs, silently. It can only switch QuickGELU
                # on; no tag of open_clip 3.3 says GELU for a name built with QuickGELU.
                kwargs["force_quick_gelu"] = bool(cfg.get("quick_gelu", False))
                # Fetch (or find in the cache) before building the model: offline, this fails in milliseconds.
                try:
                    open_clip.download_pretrained(cfg, cache_dir=cache_dir)
                except Exception as err:  # hub, HTTP and file errors alike
                    where = cfg.get("hf_hub") or cfg.get("url")
                    raise missing_weights_error(
                        f"open_clip weights {model}/{pretrained} from {where}", how_local, err
                    ) from err
            kwargs["require_pretrained"] = True
        else:
            log.info("open_clip %s built without pretrained weights", model)
    try:
        net = open_clip.create_model(model, pretrained=pretrained, **kwargs)
        tokenizer = open_clip.get_tokenizer(model, cache_dir=cache_dir)
    except CheckpointError:
        raise
    except Exception as err:
        raise missing_weights_error(f"open_clip model {model!r} (pretrained={pretrained!r})", how_local, err) from err
    return net.eval().requires_grad_(False), tokenizer


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a torch pickle loaded with ``weights_only=True`` (a bare
    state dict, or one under ``"state_dict"`` / ``"model"``); never arbitrary pickles."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"could not read {str(path)!r} with torch.load(weights_only=True) ({type(err).__name__}); "
            "convert it to safetensors or a plain state dict"
        ) from err
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{str(path)!r} holds a {type(obj).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def hub_file(repo_or_folder: str, filename: str, *, cache_dir: str | None = None) -> Path:
    """``filename`` inside a local folder, or fetched from a Hugging Face hub repo (cached); CheckpointError
    naming the repo and how to pass a local folder when it cannot be had."""
    folder = Path(repo_or_folder)
    if folder.is_dir():
        path = folder / filename
        if not path.is_file():
            raise CheckpointError(f"{filename!r} not found in folder {repo_or_folder!r}")
        return path
    if folder.is_file():  # a weights file given directly, whatever its name
        return folder
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_or_folder, filename, cache_dir=cache_dir))
    except Exception as err:
        raise missing_weights_error(
            f"{filename!r} from the Hugging Face hub repo {repo_or_folder!r}",
            f"download it elsewhere (`hf download {repo_or_folder} {filename} --local-dir DIR`) and pass the folder DIR "
            "instead of the hub id",
            err,
        ) from err


def load_weights(module: nn.Module, path: Path, what: str, prefix: str = "") -> None:
    """Load the state dict in ``path`` (keys starting with ``prefix``, stripped) into ``module`` strictly;
    CheckpointError naming the file and ``what`` it was meant for when the keys or shapes differ."""
    state = load_state_dict_file(path)
    if prefix:
        state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{str(path)!r} does not fit {what}: {err}") from err


def load_hub_weights(
    module: nn.Module, repo_or_folder: str, filename: str, what: str, *, prefix: str = "", cache_dir: str | None = None
) -> None:
    """:func:`load_weights` of ``filename`` in a hub repo, a local folder, or a local file (:func:`hub_file`)."""
    load_weights(module, hub_file(repo_or_folder, filename, cache_dir=cache_dir), what, prefix)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity in float32: (B, D), (B, D) -> (B,)."""
    return F.cosine_similarity(a.float().flatten(1), b.float().flatten(1), dim=-1)


class OpenClipImageEncoder(nn.Module):
    """images (B, 3, H, W) in [0, 1] -> CLIP image embeddings (B, D), with the model's own preprocessing.

    The self-supervised verifier's feature extractor for text-to-image models; the aesthetic predictor's input.
    """

    def __init__(self, model: str = "ViT-L-14", pretrained: str | None = "openai", cache_dir: str | None = None):
        super().__init__()
        net, _ = load_open_clip(model, pretrained, cache_dir=cache_dir)
        self.visual = net.visual
        self.preprocess = Preprocess.from_open_clip(net)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dtype, _ = model_dtype_device(self.visual)
        return self.visual(self.preprocess(images.float()).to(dtype))
