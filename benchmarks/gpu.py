"""Best-of-N on a GPU at real sizes: one pipeline call per candidate, one batched pipeline call, and lightning-search.

    python benchmarks/gpu.py                        # CUDA: FLUX.1-dev, SDXL, SD3.5-Medium, PixArt-Sigma at 1024 px
    python benchmarks/gpu.py --tiny                 # CPU: the same code path on the tiny twins, in seconds
    python benchmarks/gpu.py --families flux,sdxl --candidates 8,32 --budget-s 480 --out $OUT/gpu.json

What runs. Each family's diffusers pipeline is built around its real-size denoiser and VAE from the published
config dicts (cited where they are defined), with random weights (throughput and memory do not depend on the
values) and no text encoders: conditions are pre-encoded random embeddings of the real shapes (T5-XXL's 4,096
channels x 512 tokens for FLUX, ...), because encoding one prompt is not search's cost. The same pipeline object
is wrapped in the project's backbone class (``FluxBackbone.from_pipeline(pipe, ...)``, ``backbones/pipeline.py``)
with :class:`PreEncoded`, the one adapter: its ``encode_conditions`` returns the pre-encoded embeddings. The
verifier is the LAION aesthetic predictor's real architecture (CLIP ViT-L/14 + its MLP head, float32, random
weights). For each family and N (8 and 32) at the paper recipe's resolution, guidance and batch sizes
(``recipes/paper/*.yaml``), with the same N noises (seeded as the framework seeds them):

(a) ``pipe(latents=noise[i:i + 1])`` once per candidate, each image scored as it comes (what public best-of-N
    scripts do by default);
(b) one ``pipe(latents=noise)`` call for all N candidates, then the N images scored (retried with VAE slicing if
    it runs out of memory);
(c) lightning-search: ``RandomSearch`` from ``build_search(SearchConfig(...))`` through a ``SearchContext`` with the
    ``scheduler`` sampler, the recipe's ``micro_batch_size`` and the decode / verifier micro-batches of its
    ``SearchConfig``.

Each measurement reports candidates per second, peak memory (``torch.cuda.max_memory_allocated``, reset before it,
with the resident weights as its baseline), and the time inside the denoiser, the VAE decode and the verifier
(CUDA events recorded around them: they do not synchronise, so they do not slow the run down). Then: a micro-batch
sweep of (c) (candidates per network call 1, 2, 4, 8 at N = 8), (c) with the denoiser compiled
(``compile_repeated_blocks`` where diffusers defines repeated blocks, else ``torch.compile`` of the whole
denoiser), and the FLUX recipe's memory claim: its 96 candidates at 1024 px with its decode and verifier batch sizes,
T5-XXL, CLIP-L and all three of its verifiers resident at their real sizes, against the peak stated in the recipe
and ``benchmarks/memory.py``'s estimate.

Steps. The recipes' 20-50 steps do not fit a GPU session of minutes; each family runs fewer (``--steps``, default
:data:`GPU_STEPS`) and the NFE accounting says so: every record carries ``steps``, ``recipe_steps`` and their NFEs,
and ``projected_candidates_per_s`` scales the measured denoiser time to the recipe's steps (decode, verifier and the
rest are per candidate, not per step). Ratios (c)/(b) and (c)/(a) are measured at the run's steps, where the fixed
per-candidate costs weigh more than at the recipe's.

Correctness. (a), (b) and (c) integrate the same noises through the same scheduler and network, so they must make
the same samples: each (family, N) records the chosen candidate of each method, the largest score difference of
(a) against (b) over all N candidates, and the largest pixel difference of the chosen images. On the tiny twins in
float32 they agree to 1e-4 (``tests/benchmarks/test_gpu.py``); in bf16 on a GPU batched and unbatched kernels
round differently, so there the numbers are reported, not asserted.

Output: a table on stdout and, after every measurement, JSON (``--out``, default ``benchmarks/results/gpu.json``,
``gpu-tiny.json`` with ``--tiny``) and a markdown snippet for BENCHMARKS.md beside it, so a run stopped by a timeout
still leaves its numbers. ``--budget-s`` skips (and records) a measurement that its estimated cost would push past
the budget; the essential ones (a, b, c at both N for every family, then the memory check) run first.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
GB = 1e9


def _load_sibling(name: str):
    """``benchmarks/<name>.py`` as a module (benchmarks/ is not a package; registered in sys.modules because its
    dataclasses look their module up while they are created)."""
    key = f"benchmarks_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).parent / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


memory = _load_sibling("memory")  # FLUX.1-dev's configs, T5-XXL's, CLIP-L's, the meta-device estimate

# -- the real models' configs (the config.json fields that decide sizes) --------------------------------------------
# FLUX.1-dev: memory.FLUX_DEV_TRANSFORMER, memory.FLUX_VAE (black-forest-labs/FLUX.1-dev/{transformer,vae}/config.json)
# and its scheduler/scheduler_config.json:
FLUX_SCHEDULER = {"shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15,
                  "base_image_seq_len": 256, "max_image_seq_len": 4096}  # fmt: skip
# stabilityai/stable-diffusion-xl-base-1.0/unet/config.json (2.57B parameters)
SDXL_UNET = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280), "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), "attention_head_dim": (5, 10, 20),
    "transformer_layers_per_block": (1, 2, 10), "cross_attention_dim": 2048, "use_linear_projection": True,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32, "act_fn": "silu",
}  # fmt: skip
# its scheduler/scheduler_config.json (EulerDiscreteScheduler)
SDXL_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1,
                  "timestep_spacing": "leading", "prediction_type": "epsilon"}  # fmt: skip
# madebyollin/sdxl-vae-fp16-fix/config.json, the VAE the SDXL recipes load (SDXL's VAE, fine-tuned to run in fp16:
# force_upcast false); PixArt-Sigma ships the same architecture (PixArt-alpha/PixArt-Sigma-XL-2-1024-MS/vae)
SDXL_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2, "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "act_fn": "silu", "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.13025, "force_upcast": False,
}  # fmt: skip
# stabilityai/stable-diffusion-3.5-medium/transformer/config.json (MMDiT-X, 2.5B; diffusers' SD3Transformer2DModel
# docstring names the same dual-attention layers 0-12 for 3.5)
SD35M_TRANSFORMER = {
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 24,
    "attention_head_dim": 64, "num_attention_heads": 24, "joint_attention_dim": 4096, "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048, "pos_embed_max_size": 384, "qk_norm": "rms_norm",
    "dual_attention_layers": tuple(range(13)),
}  # fmt: skip
# its vae/config.json: FLUX's 16-channel architecture with SD3's scaling and shift; scheduler: a fixed shift of 3
SD3_VAE = {**memory.FLUX_VAE, "scaling_factor": 1.5305, "shift_factor": 0.0609}
SD3_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0}
# PixArt-alpha/PixArt-Sigma-XL-2-1024-MS/transformer/config.json (0.6B; diffusers' PixArtTransformer2DModel defaults
# are PixArt-XL-2-1024's, the Sigma file adds the T5 caption width); its scheduler: DPM-Solver++ on linear betas
PIXART_SIGMA_TRANSFORMER = {
    "sample_size": 128, "patch_size": 2, "in_channels": 4, "out_channels": 8, "num_layers": 28,
    "num_attention_heads": 16, "attention_head_dim": 72, "cross_attention_dim": 1152, "caption_channels": 4096,
    "attention_bias": True, "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000,
    "norm_type": "ada_norm_single", "norm_elementwise_affine": False, "norm_eps": 1e-6, "interpolation_scale": 2,
    "use_additional_conditions": False,
}  # fmt: skip
PIXART_SCHEDULER = {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}
# stabilityai/stable-diffusion-xl-base-1.0/text_encoder_2/config.json (OpenCLIP ViT-bigG's text tower), also SD3's
# text_encoder_2: only counted (weights on the meta device) for the recipes' memory figures, never run
CLIP_G_TEXT = {
    "vocab_size": 49408, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
    "num_attention_heads": 20, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 1280,
}  # fmt: skip

# Steps per candidate on a GPU: the recipes' 30 / 25 / 40 / 20 scaled down so that the default run fits ~8 minutes
# of an H100 / H200 (see the module docstring: NFEs are accounted at both step counts).
GPU_STEPS = {"flux": 4, "sdxl": 5, "sd35m": 4, "pixart": 4, "sd": 4}
TINY_STEPS = 4
PROMPT = "a photo of a red fox in the snow"  # one condition: best-of-N for one prompt
SAMPLE_ID = 0
# tiny twins in float32: the three methods must agree to the backbones' parity tolerance (tests/backbones/helpers.py)
PARITY_ATOL = 1e-4
TARGETS = {"c_over_b": 0.95, "c_over_a": 3.0}  # issue 18: (c) >= 0.95 (b); (c) >= 3 (a) at N = 32 on FLUX and SDXL
RATIO_FAMILIES = ("flux", "sdxl")


# -- the recipes ---------------------------------------------------------------------------------------------------
@dataclass
class Recipe:
    """What a predict recipe says about one family's search run (its defaults are SearchConfig's and Sampler's)."""

    path: str
    steps: int
    candidate_steps: int | None
    guidance_scale: float
    micro_batch_size: int
    decode_batch_size: int
    verifier_batch_size: int
    height: int | None
    width: int | None
    torch_dtype: str | None
    backbone_args: dict[str, Any]
    verifiers: dict[str, str]
    num_candidates: int
    stated_peak_gb: float | None

    @classmethod
    def read(cls, path: Path) -> Recipe:
        from lightning_search.sampling import Sampler
        from lightning_search.search.config import SearchConfig

        text = path.read_text()
        cfg = yaml.safe_load(text)
        model = cfg["model"]["init_args"]
        args = dict(model["backbone"].get("init_args", {}))
        sampler, search = {**vars(Sampler()), **model.get("sampler", {})}, cfg.get("search", {})
        defaults = SearchConfig()
        return cls(
            path=str(path.relative_to(REPO)),
            steps=int(sampler["steps"]),
            candidate_steps=search.get("candidate_steps"),
            guidance_scale=float(sampler["guidance_scale"]),
            micro_batch_size=int(sampler["micro_batch_size"]),
            decode_batch_size=int(search.get("decode_batch_size", defaults.decode_batch_size)),
            verifier_batch_size=int(search.get("verifier_batch_size", defaults.verifier_batch_size)),
            height=args.get("height"),
            width=args.get("width"),
            torch_dtype=args.get("torch_dtype"),
            backbone_args=args,
            verifiers={k: v["class_path"].rsplit(".", 1)[-1] for k, v in cfg.get("verifiers", {}).items()},
            num_candidates=int(search.get("num_candidates", defaults.num_candidates)),
            stated_peak_gb=stated_peak_gb(text),
        )

    @property
    def search_steps(self) -> int:
        """Steps per candidate in the recipe (its candidates', which may be fewer than the final run's)."""
        return int(self.candidate_steps or self.steps)


def stated_peak_gb(text: str) -> float | None:
    """The peak memory a recipe's header states ("Estimated peak 52.6 GB", "~14 GB peak"), or None."""
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    match = re.search(r"[Ee]stimated peak\s+~?([\d.]+)\s*GB", header) or re.search(r"~([\d.]+)\s*GB peak", header)
    return float(match.group(1)) if match else None


# -- the families ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """One model family: its backbone class, recipe, real-size pipeline and the pre-encoded condition shapes."""

    name: str
    label: str
    backbone: str  # class name in lightning_search.backbones
    recipe: str  # path under REPO
    denoiser: str  # the pipeline attribute of the denoiser
    real: bool = True  # False: tiny twin only (the SD 1.x twin, for the project's tiny-SD ratio)

    def backbone_class(self) -> type:
        from lightning_search import backbones

        return getattr(backbones, self.backbone)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("flux", "FLUX.1-dev", "FluxBackbone", "recipes/paper/flux_dev_drawbench_random.yaml", "transformer"),
        Family("sdxl", "SDXL", "StableDiffusionXLBackbone", "recipes/paper/sdxl_base_drawbench_search.yaml", "unet"),
        Family("sd35m", "SD3.5-Medium", "StableDiffusion3Backbone", "recipes/paper/sd35m_drawbench_random.yaml",
               "transformer"),
        Family("pixart", "PixArt-Sigma", "PixArtBackbone", "recipes/paper/pixart_sigma_drawbench_search.yaml",
               "transformer"),
        Family("sd", "SD 1.x (tiny)", "StableDiffusionBackbone", "recipes/tiny/sd.yaml", "unet", real=False),
    ]
}  # fmt: skip
DEFAULT_FAMILIES = ("flux", "sdxl", "sd35m", "pixart")
TEXT_ENCODERS = {  # what the pipelines would hold besides denoiser and VAE: (name, transformers class, config)
    "flux": [("text_encoder", "CLIPTextModel", memory.CLIP_L_TEXT), ("text_encoder_2", "T5EncoderModel", memory.T5_XXL)],
    "sdxl": [("text_encoder", "CLIPTextModel", memory.CLIP_L_TEXT),
             ("text_encoder_2", "CLIPTextModelWithProjection", CLIP_G_TEXT)],
    "sd35m": [("text_encoder", "CLIPTextModelWithProjection", memory.CLIP_L_TEXT),
              ("text_encoder_2", "CLIPTextModelWithProjection", CLIP_G_TEXT),
              ("text_encoder_3", "T5EncoderModel", memory.T5_XXL)],
    "pixart": [("text_encoder", "T5EncoderModel", memory.T5_XXL)],
}  # fmt: skip


@contextlib.contextmanager
def building(device: str, dtype: torch.dtype, seed: int) -> Iterator[None]:
    """Modules built inside get their parameters on ``device`` in ``dtype`` (no CPU copy of a 12B model), drawn from
    generators seeded by ``seed`` and restored afterwards."""
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.device(device), memory.default_dtype(dtype):
        torch.manual_seed(seed)
        yield


def real_pipeline(name: str, device: str, dtype: torch.dtype, seed: int = 0):
    """The family's diffusers pipeline at real size, random weights, no text encoders or tokenizers."""
    import diffusers as d

    with building(device, dtype, seed):
        if name == "flux":
            denoiser, vae = d.FluxTransformer2DModel(**memory.FLUX_DEV_TRANSFORMER), d.AutoencoderKL(**memory.FLUX_VAE)
        elif name == "sdxl":
            denoiser, vae = d.UNet2DConditionModel(**SDXL_UNET), d.AutoencoderKL(**SDXL_VAE)
        elif name == "sd35m":
            denoiser, vae = d.SD3Transformer2DModel(**SD35M_TRANSFORMER), d.AutoencoderKL(**SD3_VAE)
        elif name == "pixart":
            denoiser, vae = d.PixArtTransformer2DModel(**PIXART_SIGMA_TRANSFORMER), d.AutoencoderKL(**SDXL_VAE)
        else:
            raise ValueError(f"no real-size configs for family {name!r}")
    # from_pretrained(torch_dtype=...) casts every floating tensor, buffers included (SD3's float32 position table)
    denoiser.to(dtype=dtype)
    vae.to(dtype=dtype)
    none = {"text_encoder": None, "tokenizer": None}
    if name == "flux":
        return d.FluxPipeline(scheduler=d.FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER), vae=vae,
                              transformer=denoiser, text_encoder_2=None, tokenizer_2=None, **none)  # fmt: skip
    if name == "sdxl":
        return d.StableDiffusionXLPipeline(vae=vae, unet=denoiser, scheduler=d.EulerDiscreteScheduler(**SDXL_SCHEDULER),
                                           text_encoder_2=None, tokenizer_2=None, **none)  # fmt: skip
    if name == "sd35m":
        return d.StableDiffusion3Pipeline(
            transformer=denoiser, scheduler=d.FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER), vae=vae,
            text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None, **none,
        )  # fmt: skip
    return d.PixArtSigmaPipeline(vae=vae, transformer=denoiser,
                                 scheduler=d.DPMSolverMultistepScheduler(**PIXART_SCHEDULER), **none)  # fmt: skip


def real_embeddings(name: str, device: str, dtype: torch.dtype, tokens: int | None = None, seed: int = 1) -> dict:
    """A pre-encoded condition ``{"pos": ..., "neg": ...}`` (batch 1) of the real encoders' output shapes, random;
    ``tokens``: the T5 sequence length (the backbone's ``max_sequence_length``). FLUX: T5-XXL (512 x 4096) + CLIP-L
    pooled (768); SDXL: CLIP-L + bigG hidden states (77 x 2048), bigG pooled (1280), zero negatives as SDXL base does
    for an empty negative prompt; SD3.5: CLIP-L + bigG padded to 4096, then T5's tokens (77 + 256 x 4096), both pooled
    (2048); PixArt-Sigma: T5-XXL (300 x 4096) with a 24-token mask."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g).to(device=device, dtype=dtype)

    if name == "flux":
        pos = {"prompt_embeds": randn(1, tokens or 512, 4096), "pooled": randn(1, 768)}
        return {"pos": pos, "neg": {k: torch.zeros_like(v) for k, v in pos.items()}}  # unused: FLUX-dev has no CFG
    if name == "sdxl":
        pos = {"prompt_embeds": randn(1, 77, 2048), "text_embeds": randn(1, 1280)}
        return {"pos": pos, "neg": {k: torch.zeros_like(v) for k, v in pos.items()}}  # time ids: added by the caller
    if name == "sd35m":
        return {side: {"prompt_embeds": randn(1, 77 + (tokens or 256), 4096), "pooled": randn(1, 2048)}
                for side in ("pos", "neg")}  # fmt: skip
    if name == "pixart":
        tokens, masks = tokens or 300, {"pos": 24, "neg": 1}  # a DrawBench-length prompt, and "" (its end token)
        return {
            side: {
                "prompt_embeds": randn(1, tokens, 4096),
                "attention_mask": (torch.arange(tokens) < length).long()[None].to(device),
            }
            for side, length in masks.items()
        }
    raise ValueError(f"no real-size embeddings for family {name!r}")


def pipe_embeddings(name: str, cond: dict) -> dict[str, torch.Tensor]:
    """The pipeline's ``__call__`` arguments for a pre-encoded condition (batch 1)."""
    pos, neg = cond["pos"], cond["neg"]
    if name == "flux":
        return {"prompt_embeds": pos["prompt_embeds"], "pooled_prompt_embeds": pos["pooled"]}
    if name == "sdxl":
        return {"prompt_embeds": pos["prompt_embeds"], "negative_prompt_embeds": neg["prompt_embeds"],
                "pooled_prompt_embeds": pos["text_embeds"], "negative_pooled_prompt_embeds": neg["text_embeds"]}  # fmt: skip
    if name == "sd35m":
        return {"prompt_embeds": pos["prompt_embeds"], "negative_prompt_embeds": neg["prompt_embeds"],
                "pooled_prompt_embeds": pos["pooled"], "negative_pooled_prompt_embeds": neg["pooled"]}  # fmt: skip
    if name == "pixart":
        return {"prompt_embeds": pos["prompt_embeds"], "prompt_attention_mask": pos["attention_mask"],
                "negative_prompt_embeds": neg["prompt_embeds"],
                "negative_prompt_attention_mask": neg["attention_mask"], "negative_prompt": None,
                "use_resolution_binning": False}  # fmt: skip
    return {"prompt_embeds": pos["prompt_embeds"], "negative_prompt_embeds": neg["prompt_embeds"]}


class PreEncoded:
    """Backbone mixin: ``encode_conditions`` looks each prompt up among embeddings encoded beforehand (``embeddings``:
    {prompt: encoded batch of 1}) instead of running text encoders, which the real-size pipelines do not hold. The
    benchmark's only adapter; everything else is the backbone class's own code."""

    def encode_conditions(self, conditions: Sequence[str]):
        from lightning_search.backbones import cond_cat

        table = self.__dict__["embeddings"]
        return cond_cat([table[c] for c in conditions])


def pre_encoded_backbone(family: Family, pipe, embeddings: dict, **kwargs: Any):
    """``<Backbone>.from_pipeline(pipe, **kwargs)`` with :class:`PreEncoded` conditions."""
    cls = family.backbone_class()
    adapted = type(f"PreEncoded{cls.__name__}", (PreEncoded, cls), {})
    backbone = adapted.from_pipeline(pipe, **kwargs)
    backbone.__dict__["embeddings"] = embeddings
    return backbone


@dataclass
class Built:
    family: Family
    recipe: Recipe
    pipe: Any
    backbone: Any
    cond: dict  # the pre-encoded condition of PROMPT (batch 1)
    guidance: float  # the pipeline's guidance_scale (FLUX-dev: its distilled guidance; else CFG)
    height: int
    width: int

    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, self.family.denoiser)

    @property
    def cfg(self) -> bool:
        """Classifier-free guidance: two network rows per candidate (FLUX-dev's recipe has none: its guidance is an
        input of the network)."""
        return self.recipe.guidance_scale != 1.0

    def candidates_per_call(self, micro_batch_size: int) -> int:
        return max(1, micro_batch_size // (2 if self.cfg else 1))


def backbone_kwargs(family: Family, recipe: Recipe, tiny: bool) -> dict[str, Any]:
    """The recipe's backbone arguments that shape a run (tiny: the twins' own size and 32 text tokens, as the
    backbone tests build them)."""
    args = recipe.backbone_args
    kwargs: dict[str, Any] = (
        {"height": 32, "width": 32} if tiny else {"height": args.get("height"), "width": args.get("width")}
    )
    if family.name == "flux":
        kwargs["guidance"] = args.get("guidance", 3.5)
    if tiny and family.name in ("flux", "sd35m", "pixart"):
        kwargs["max_sequence_length"] = 32
    elif "max_sequence_length" in args:
        kwargs["max_sequence_length"] = args["max_sequence_length"]
    if family.name == "pixart":
        kwargs.update(clean_caption=False)
    if family.name == "sd" and args.get("scheduler"):
        kwargs.update(scheduler=args["scheduler"])
    return kwargs


def build(family: Family, tiny: bool, device: str, dtype: torch.dtype | None, seed: int = 0) -> Built:
    """The family's pipeline and its pre-encoded backbone. tiny: the ``pretrained="tiny"`` twin, its condition encoded
    by its own text encoders, which are then removed so that every call takes the real-size code path."""
    recipe = Recipe.read(REPO / family.recipe)
    kwargs = backbone_kwargs(family, recipe, tiny)
    if tiny:
        twin = family.backbone_class()("tiny", **kwargs)
        cond = twin.encode_conditions([PROMPT])  # the twin's own encoders, once
        pipe = twin.pipe
        pipe.register_modules(
            **{n: None for n in ("text_encoder", "text_encoder_2", "text_encoder_3") if hasattr(pipe, n)}
        )
        pipe.to(device=device, dtype=dtype)
        cond = _to(cond, device, dtype)
    else:
        if not family.real:
            raise ValueError(f"family {family.name!r} exists only as a tiny twin: run it with --tiny")
        pipe = real_pipeline(family.name, device, dtype, seed)
    pipe.set_progress_bar_config(disable=True)
    backbone = pre_encoded_backbone(family, pipe, {}, **kwargs)
    if not tiny:
        cond = real_embeddings(family.name, device, dtype, getattr(backbone, "max_sequence_length", None))
    if family.name == "sdxl":  # SDXL's micro-conditioning ids, the pipeline's own (the backbone asks it)
        for side in ("pos", "neg"):
            cond[side]["time_ids"] = backbone._time_ids(cond[side]["text_embeds"])
    backbone.__dict__["embeddings"] = {PROMPT: cond}
    guidance = float(recipe.backbone_args.get("guidance", 3.5)) if family.name == "flux" else recipe.guidance_scale
    return Built(family, recipe, pipe, backbone, cond, guidance, backbone.height, backbone.width)


def _to(cond, device: str, dtype: torch.dtype | None):
    """An encoded condition on ``device``, its floating tensors in ``dtype`` (masks keep theirs)."""
    if isinstance(cond, torch.Tensor):
        return cond.to(device=device, dtype=dtype if cond.is_floating_point() else None)
    return {k: _to(v, device, dtype) for k, v in cond.items()}


def build_verifier(tiny: bool, device: str, folder: Path):
    """The LAION aesthetic predictor: CLIP ViT-L/14's vision tower + its 5-layer head (real sizes, random weights,
    float32 as DiffusionModule keeps verifiers); tiny: its tiny twin."""
    from lightning_search.verifiers import AestheticVerifier
    from lightning_search.verifiers.aesthetic import LinearStackMLP

    if tiny:
        return AestheticVerifier(clip_model="tiny").to(device)
    from safetensors.torch import save_file

    head = folder / "aesthetic_head.safetensors"  # random head weights, loaded through the verifier's own path
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_file(LinearStackMLP(768).state_dict(), str(head))
    return AestheticVerifier(clip_model="ViT-L-14", clip_pretrained=None, head=str(head)).to(device)


# -- measuring ------------------------------------------------------------------------------------------------------
def is_cuda(device: str) -> bool:
    return torch.device(device).type == "cuda"


def sync(device: str) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(device)


class Phases:
    """Time inside the denoiser (forward hooks), ``vae.decode`` and ``verifier.score`` (wrapped on the instance, so
    the pipeline's and the framework's calls are both seen). On CUDA, events recorded around each call, read after
    the run's final synchronisation: no synchronisation inside the run, so the timing does not slow it. On CPU,
    ``perf_counter``. ``time_denoiser=False`` leaves the denoiser alone (a compiled module would trace the hooks)."""

    def __init__(self, device: str, denoiser, vae, verifier, time_denoiser: bool = True) -> None:
        self.cuda = is_cuda(device)
        self.spans: dict[str, list] = {"denoiser": [], "decode": [], "verifier": []}
        self.targets = {"decode": (vae, "decode"), "verifier": (verifier, "score")}
        self.denoiser = denoiser if time_denoiser else None
        self.rows = 0  # rows through the denoiser: NFEs x candidates
        self._handles: list = []

    def _mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _wrap(self, phase: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = self._mark()
            out = fn(*args, **kwargs)
            self.spans[phase].append((start, self._mark()))
            return out

        return timed

    def __enter__(self) -> Phases:
        for phase, (obj, name) in self.targets.items():
            setattr(obj, name, self._wrap(phase, getattr(obj, name)))
        if self.denoiser is not None:
            starts: list = []

            def pre(module, args, kwargs) -> None:
                self.rows += next(t for t in [*args, *kwargs.values()] if isinstance(t, torch.Tensor)).shape[0]
                starts.append(self._mark())

            self._handles = [
                self.denoiser.register_forward_pre_hook(pre, with_kwargs=True),
                self.denoiser.register_forward_hook(
                    lambda *_: self.spans["denoiser"].append((starts.pop(), self._mark()))
                ),
            ]
        return self

    def __exit__(self, *exc) -> None:
        for obj, name in self.targets.values():
            delattr(obj, name)  # the instance attribute: the class's method shows through again
        for handle in self._handles:
            handle.remove()

    def calls(self) -> dict[str, int | None]:
        """Calls per phase: denoiser forward passes, VAE decode calls, verifier calls."""
        calls = {k: (None if k == "denoiser" and self.denoiser is None else len(v)) for k, v in self.spans.items()}
        return {**calls, "denoiser_rows": None if self.denoiser is None else self.rows}

    def totals(self) -> dict[str, float | None]:
        """Seconds per phase (call after synchronising)."""
        out: dict[str, float | None] = {}
        for phase, spans in self.spans.items():
            if phase == "denoiser" and self.denoiser is None:
                out[phase] = None
            elif self.cuda:
                out[phase] = sum(a.elapsed_time(b) for a, b in spans) / 1000
            else:
                out[phase] = sum(b - a for a, b in spans)
        return out


@dataclass
class Run:
    """One measurement (a JSON record)."""

    family: str
    method: str  # a, b, c
    kind: str  # main, sweep, compile, memory
    n: int
    steps: int
    recipe_steps: int
    nfe_per_candidate: int
    recipe_nfe_per_candidate: int
    micro_batch_size: int | None = None
    candidates_per_call: int | None = None
    decode_batch_size: int | None = None
    verifier_batch_size: int | None = None
    compiled: bool = False
    vae_slicing: bool = False
    status: str = "ok"  # ok, oom, error, skipped
    error: str | None = None
    seconds: float | None = None
    seconds_all: list[float] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    candidates_per_s: float | None = None
    projected_candidates_per_s: float | None = None
    peak_gb: float | None = None
    resident_gb: float | None = None
    phases_s: dict[str, float | None] = field(default_factory=dict)
    calls: dict[str, int | None] = field(default_factory=dict)
    shares: dict[str, float | None] = field(default_factory=dict)
    chosen: int | None = None
    score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What one method chose, kept to compare the methods (not written)."""

    chosen: int
    score: float
    image: torch.Tensor  # (3, H, W) float32 on the CPU
    scores: list[float] | None = None  # every candidate's score, where the method exposes them


def free(device: str, collect: bool = False) -> None:
    """Hand the allocator's cached blocks back to the device; ``collect``: first collect garbage cycles (an error's
    traceback keeps its frames' tensors alive) so that a family's weights are gone before the next one is built. Only
    on CUDA: a collection takes half a second with diffusers and transformers imported."""
    if is_cuda(device):
        if collect:
            gc.collect()
        torch.cuda.empty_cache()


def measure_once(run: Run, fn: Callable[[], Outcome], device: str, phases: Callable[[], Phases]) -> Outcome | None:
    """One timed call of ``fn`` (after the caller's warm-up) appended to ``run.rounds``: wall seconds, phase times
    and calls, peak memory. Out of memory or any error is recorded in ``run``, not raised."""
    try:
        free(device)
        if is_cuda(device):
            torch.cuda.reset_peak_memory_stats(device)
            run.resident_gb = torch.cuda.memory_allocated(device) / GB
        with phases() as timer, torch.no_grad():
            sync(device)
            start = time.perf_counter()
            outcome = fn()
            sync(device)
            seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) / GB if is_cuda(device) else None
        run.rounds.append({"seconds": seconds, "phases_s": timer.totals(), "calls": timer.calls(), "peak_gb": peak})
        return outcome
    except torch.OutOfMemoryError as err:
        run.status, run.error = "oom", str(err).splitlines()[0][:300]
    except Exception as err:  # a benchmark records a failure and goes on to the next measurement
        run.status, run.error = "error", f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
        run.extra["traceback"] = traceback.format_exc(limit=6)[-2000:]
    finally:
        free(device)
    return None


def summarize(run: Run, outcome: Outcome | None) -> None:
    """The run's figures from its rounds: median seconds, the median round's phases and calls, the largest peak,
    and the throughput projected to the recipe's steps (the denoiser's time scaled, the rest per candidate)."""
    if run.status != "ok" or not run.rounds or outcome is None:
        return
    times = [r["seconds"] for r in run.rounds]
    run.seconds_all, run.seconds = times, statistics.median(times)
    median = min(run.rounds, key=lambda r: abs(r["seconds"] - run.seconds))
    run.phases_s, run.calls = median["phases_s"], median["calls"]
    peaks = [r["peak_gb"] for r in run.rounds if r["peak_gb"] is not None]
    run.peak_gb = max(peaks) if peaks else None
    run.candidates_per_s = run.n / run.seconds
    known = {k: v for k, v in run.phases_s.items() if v is not None}
    run.shares = {k: (None if v is None else v / median["seconds"]) for k, v in run.phases_s.items()}
    run.shares["other"] = max(0.0, 1 - sum(known.values()) / median["seconds"]) if len(known) == 3 else None
    denoiser = run.phases_s.get("denoiser")
    if denoiser is not None and run.steps:
        run.projected_candidates_per_s = run.n / (run.seconds + denoiser * (run.recipe_steps / run.steps - 1))
    run.chosen, run.score = outcome.chosen, outcome.score


# -- the three methods ----------------------------------------------------------------------------------------------
def candidate_noise(built: Built, n: int, seed: int) -> torch.Tensor:
    """(n, *latent) noises exactly as random search draws them (``SearchContext.seeds`` / ``noise``)."""
    from lightning_search.search import SearchContext

    ctx = SearchContext(built.backbone, _sampler(built, 1, None), None, seed)
    return ctx.noise(ctx.seeds([SAMPLE_ID], 0, n))[0]


def _sampler(built: Built, steps: int, micro_batch_size: int | None):
    """The recipe's sampler (FLUX-dev's is unguided: its guidance is the backbone's ``guidance`` input)."""
    from lightning_search.sampling import Sampler

    return Sampler("scheduler", steps=steps, guidance_scale=built.recipe.guidance_scale,
                   micro_batch_size=micro_batch_size or built.recipe.micro_batch_size)  # fmt: skip


def pipe_call(built: Built, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """One pipeline call over noises (k, *latent) -> images (k, 3, H, W) in [0, 1]. The embeddings go in repeated to
    k rows: the SD3 and FLUX pipelines repeat ``prompt_embeds`` for ``num_images_per_prompt`` only when they encode
    the prompt themselves."""
    from lightning_search.backbones import cond_repeat

    pipe, k = built.pipe, noise.shape[0]
    latents = noise
    if built.family.name == "flux":  # the FLUX pipeline takes packed latents
        latents = pipe._pack_latents(noise, k, *noise.shape[1:])
    return pipe(
        **pipe_embeddings(built.family.name, cond_repeat(built.cond, k)),
        num_images_per_prompt=1,
        latents=latents.clone(),
        num_inference_steps=steps,
        guidance_scale=built.guidance,
        height=built.height,
        width=built.width,
        output_type="pt",
    ).images


def best(scores: torch.Tensor) -> int:
    from lightning_search.search.base import nan_safe

    return int(nan_safe(scores).argmax())  # ties and NaN as random search breaks them


def per_candidate_loop(built: Built, verifier, noise: torch.Tensor, steps: int) -> Outcome:
    """(a) one pipeline call per candidate, each image scored as it comes, the best kept."""
    best_score, best_index, best_image, scores = -math.inf, 0, None, []
    for i in range(noise.shape[0]):
        image = pipe_call(built, noise[i : i + 1], steps)
        score = float(verifier(image.float(), [PROMPT])[0])
        scores.append(score)
        comparable = -math.inf if math.isnan(score) else score  # NaN never wins, as random search treats it
        if best_image is None or comparable > best_score:
            best_score, best_index, best_image = comparable, i, image[0]
    return Outcome(best_index, scores[best_index], best_image.float().cpu(), scores)


def batched_call(built: Built, verifier, noise: torch.Tensor, steps: int) -> Outcome:
    """(b) one pipeline call with every candidate's latents, then the images scored."""
    images = pipe_call(built, noise, steps)
    scores = verifier(images.float(), [PROMPT] * noise.shape[0])
    i = best(scores)
    return Outcome(i, float(scores[i]), images[i].float().cpu(), scores.float().cpu().tolist())


def with_vae_slicing(built: Built, fn: Callable[[], Outcome]) -> Outcome:
    """``fn`` with the pipeline's VAE decoding one image at a time (``AutoencoderKL.enable_slicing``)."""
    built.pipe.vae.enable_slicing()
    try:
        return fn()
    finally:
        built.pipe.vae.disable_slicing()


def framework(built: Built, verifier, n: int, steps: int, micro_batch_size: int | None, seed: int,
              decode_batch_size: int | None = None, verifier_batch_size: int | None = None) -> Outcome:  # fmt: skip
    """(c) lightning-search random search, configured as ``predict`` configures it (``DiffusionModule.predict_step``)."""
    from lightning_search.search import SearchContext
    from lightning_search.search.config import SearchConfig, build_search

    config = SearchConfig(
        algorithm="random",
        verifier="aesthetic",
        num_candidates=n,
        seed=seed,
        decode_batch_size=decode_batch_size or built.recipe.decode_batch_size,
        verifier_batch_size=verifier_batch_size or built.recipe.verifier_batch_size,
    )
    ctx = SearchContext(
        built.backbone,
        _sampler(built, steps, micro_batch_size),
        verifier,
        config.seed,
        decode_batch_size=config.decode_batch_size,
        verifier_batch_size=config.verifier_batch_size,
    )
    result = build_search(config).run(ctx, [PROMPT], [SAMPLE_ID])
    return Outcome(int(result.chosen[0]["candidate"]), float(result.score[0]), result.images[0].float().cpu())


# -- the run --------------------------------------------------------------------------------------------------------
class Budget:
    """Wall-clock budget of the whole run: a measurement whose estimated cost does not fit is skipped."""

    def __init__(self, seconds: float | None) -> None:
        self.start, self.seconds = time.perf_counter(), seconds
        self.per_candidate: dict[str, float] = {}  # family -> seconds per candidate at its steps, the slowest seen

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fits(self, family: str, candidates: int) -> bool:
        """Would ``candidates`` more candidates of ``family`` end within the budget (at its slowest rate so far)?"""
        return self.seconds is None or self.elapsed + candidates * self.per_candidate.get(family, 0.0) <= self.seconds

    def learn(self, run: Run) -> None:
        """The family's slowest seconds per candidate so far, from the run's last round."""
        if run.rounds and run.kind in ("main", "sweep"):
            per = run.rounds[-1]["seconds"] / run.n
            self.per_candidate[run.family] = max(self.per_candidate.get(run.family, 0.0), per)


class Bench:
    """The whole benchmark: measurements in priority order, results written after each one."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = args.device
        self.budget = Budget(args.budget_s)
        self.results: dict[str, Any] = {"meta": environment(args), "settings": {}, "runs": [], "parity": [],
                                        "memory_check": None, "targets": []}  # fmt: skip
        self.out = Path(args.out)
        self.markdown = Path(args.markdown) if args.markdown else self.out.with_suffix(".md")
        self.folder = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
        self._verifier = None

    # -- bookkeeping --------------------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        print(text, flush=True)  # noqa: T201 - a benchmark reports on stdout

    def write(self) -> None:
        self.results["elapsed_s"] = self.budget.elapsed
        self.results["targets"] = targets(self.results)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.results, indent=1, default=str))
        self.markdown.write_text(markdown(self.results))

    def record(self, run: Run) -> None:
        self.results["runs"].append(asdict(run))
        self.log(row(run))
        self.write()

    @property
    def verifier(self):
        if self._verifier is None:
            self._verifier = build_verifier(self.args.tiny, self.device, self.folder).eval()
        return self._verifier

    def steps_for(self, family: Family) -> int:
        if self.args.steps is not None:
            return self.args.steps
        return TINY_STEPS if self.args.tiny else GPU_STEPS[family.name]

    def dtype_for(self, recipe: Recipe) -> torch.dtype | None:
        from lightning_search.backbones.pipeline import resolve_dtype

        if self.args.tiny:
            return None  # the twins' float32
        return resolve_dtype(recipe.torch_dtype) or torch.bfloat16

    def new_run(self, built: Built, method: str, kind: str, n: int, steps: int, **kw: Any) -> Run:
        per_step = 2 if built.cfg else 1
        return Run(
            family=built.family.name, method=method, kind=kind, n=n, steps=steps,
            recipe_steps=built.recipe.search_steps, nfe_per_candidate=steps * per_step,
            recipe_nfe_per_candidate=built.recipe.search_steps * per_step, **kw,
        )  # fmt: skip

    def search_run(self, built: Built, kind: str, n: int, steps: int, micro_batch_size: int, **kw: Any) -> Run:
        """A record of (c) with the batch sizes it runs with."""
        kw.setdefault("decode_batch_size", built.recipe.decode_batch_size)
        kw.setdefault("verifier_batch_size", built.recipe.verifier_batch_size)
        return self.new_run(built, "c", kind, n, steps, micro_batch_size=micro_batch_size,
                            candidates_per_call=built.candidates_per_call(micro_batch_size), **kw)  # fmt: skip

    def phases(self, built: Built, verifier=None, time_denoiser: bool = True) -> Callable[[], Phases]:
        verifier = verifier or self.verifier
        return lambda: Phases(self.device, built.denoiser, built.pipe.vae, verifier, time_denoiser)

    def timed(self, run: Run, built: Built, fn: Callable[[], Outcome], phases: Callable[[], Phases] | None = None,
              rounds: int | None = None) -> Outcome | None:  # fmt: skip
        """``rounds`` measurements of ``fn`` into ``run`` unless the budget says they do not fit; recorded either way."""
        rounds = rounds or self.args.repeats
        if not self.budget.fits(run.family, run.n * rounds):
            run.status, run.error = "skipped", "time budget"
            self.record(run)
            return None
        outcome = None
        for _ in range(rounds):
            outcome = measure_once(run, fn, self.device, phases or self.phases(built))
            self.budget.learn(run)
            if run.status != "ok":
                break
        summarize(run, outcome)
        self.record(run)
        return outcome

    # -- building -----------------------------------------------------------------------------------------------
    def build(self, family: Family) -> Built | None:
        """The family's pipeline and backbone (its settings recorded the first time), or None if it fails."""
        free(self.device, collect=True)  # the previous family's weights, released with its pass's frame
        recipe = Recipe.read(REPO / family.recipe)
        start = time.perf_counter()
        try:
            built = build(family, self.args.tiny, self.device, self.dtype_for(recipe))
        except Exception as err:
            self.log(f"{family.name}: could not build ({type(err).__name__}: {err})")
            self.results["settings"].setdefault(family.name, {"error": f"{type(err).__name__}: {err}"})
            self.write()
            return None
        build_s = time.perf_counter() - start
        if family.name in self.results["settings"]:
            self.results["settings"][family.name].setdefault("rebuild_s", []).append(build_s)
            return built
        steps = self.steps_for(family)
        self.results["settings"][family.name] = {
            "label": family.label, "recipe": recipe.path, "height": built.height, "width": built.width,
            "dtype": str(built.denoiser.dtype).removeprefix("torch."), "steps": steps, "recipe_steps": recipe.search_steps,
            "guidance": built.guidance, "cfg": built.cfg, "recipe_candidates": recipe.num_candidates,
            "micro_batch_size": recipe.micro_batch_size, "decode_batch_size": recipe.decode_batch_size,
            "verifier_batch_size": recipe.verifier_batch_size, "stated_peak_gb": recipe.stated_peak_gb,
            "latent_shape": list(built.backbone.latent_shape), "build_s": build_s,
            "parameters": {"denoiser": count(built.denoiser), "vae": count(built.pipe.vae), "verifier": count(self.verifier)},
            "unloaded_weights_gb": None if self.args.tiny else unloaded_weights_gb(family.name, recipe),
        }  # fmt: skip
        self.write()
        return built

    def warm_up(self, built: Built) -> None:
        """One pipeline call and one search of one candidate at one step: first-call costs out of the timings."""
        with torch.no_grad():
            batched_call(built, self.verifier, candidate_noise(built, 1, self.args.seed), 1)
            framework(built, self.verifier, 1, 1, None, self.args.seed)
        sync(self.device)

    @contextlib.contextmanager
    def family(self, family: Family) -> Iterator[Built | None]:
        """The family built and warmed up, or None (the failure recorded in its settings); freed afterwards."""
        built = self.build(family)
        try:
            if built is not None:
                try:
                    self.warm_up(built)
                except Exception as err:
                    self.log(f"{family.name}: warm-up failed ({type(err).__name__}: {err})")
                    self.results["settings"][family.name]["error"] = f"warm-up: {type(err).__name__}: {err}"
                    self.results["settings"][family.name]["traceback"] = traceback.format_exc(limit=8)[-3000:]
                    self.write()
                    built = None
            yield built
        finally:
            del built
            free(self.device, collect=True)

    # -- passes -------------------------------------------------------------------------------------------------
    def main_pass(self, family: Family) -> None:
        """(a), (b), (c) at every N, and whether they chose the same sample."""
        with self.family(family) as built:
            if built is None:
                return
            for n in self.args.candidates:
                self.compare(built, n, self.steps_for(family))

    def compare(self, built: Built, n: int, steps: int) -> None:
        """(b), (c), (a) for N candidates, interleaved round by round when repeated (a drifting machine then weighs
        on all three alike); (b) first, its rate sizes the budget's estimates of the others."""
        noise, seed = candidate_noise(built, n, self.args.seed), self.args.seed
        batched = partial(batched_call, built, self.verifier, noise, steps)
        methods: dict[str, tuple[Run, Callable[[], Outcome]]] = {
            "b": (self.new_run(built, "b", "main", n, steps, decode_batch_size=n, verifier_batch_size=n), batched),
            "c": (self.search_run(built, "main", n, steps, built.recipe.micro_batch_size),
                  partial(framework, built, self.verifier, n, steps, None, seed)),
            "a": (self.new_run(built, "a", "main", n, steps, candidates_per_call=1, decode_batch_size=1,
                               verifier_batch_size=1), partial(per_candidate_loop, built, self.verifier, noise, steps)),
        }  # fmt: skip
        outcomes: dict[str, Outcome | None] = dict.fromkeys(methods)
        stopped: set[str] = set()
        for _ in range(self.args.repeats):
            for method, (run, fn) in list(methods.items()):
                if run.status != "ok" or method in stopped:
                    continue
                if not self.budget.fits(run.family, n):
                    stopped.add(method)  # the rounds measured so far stand; none at all: skipped
                    run.status, run.error = ("ok", None) if run.rounds else ("skipped", "time budget")
                    run.extra["rounds_cut"] = "time budget"
                    continue
                outcomes[method] = measure_once(run, fn, self.device, self.phases(built)) or outcomes[method]
                self.budget.learn(run)
                if method == "b" and run.status == "oom" and not run.vae_slicing:
                    # what a user does next: decode one image at a time
                    summarize(run, None)
                    self.record(run)
                    run = self.new_run(built, "b", "main", n, steps, decode_batch_size=1, verifier_batch_size=n,
                                       vae_slicing=True)  # fmt: skip
                    fn = partial(with_vae_slicing, built, batched)
                    methods["b"] = (run, fn)
                    outcomes["b"] = measure_once(run, fn, self.device, self.phases(built))
                    self.budget.learn(run)
        for method, (run, _) in methods.items():
            summarize(run, outcomes[method])
            self.record(run)
        self.results["parity"].append(parity(built.family.name, n, outcomes, {k: r for k, (r, _) in methods.items()}))
        self.log(parity_row(self.results["parity"][-1]))
        self.write()

    def memory_pass(self) -> None:
        """The FLUX recipe at 1024 px with its N, micro-batch, decode and verifier batch sizes, its search verifier
        (CLIPScore, real size) and everything else it holds resident (T5-XXL, CLIP-L, its other verifiers), one step
        per candidate (the peak does not depend on the number of steps)."""
        family = FAMILIES["flux"]
        settings = memory.RunSettings.from_recipe(REPO / family.recipe)
        if self.args.memory_candidates:
            settings.num_candidates = self.args.memory_candidates
        n = settings.num_candidates
        # one step per candidate: about a third of a candidate's time at 4 steps (decoding and scoring stay)
        per = self.budget.per_candidate.get("flux", 0.0) * (1 / self.steps_for(family) + 0.25)
        if self.budget.seconds is not None and self.budget.elapsed + n * per + 20 > self.budget.seconds:
            self.results["memory_check"] = {"recipe": family.recipe, "num_candidates": n, "skipped": "time budget",
                                            "run": None}  # fmt: skip
            self.log("flux memory check skipped (time budget)")
            self.write()
            return
        with self.family(family) as built:
            if built is None:
                return
            check: dict[str, Any] = {"recipe": built.recipe.path, "num_candidates": n,
                                     "stated_peak_gb": built.recipe.stated_peak_gb}  # fmt: skip
            run = self.search_run(built, "memory", n, 1, settings.micro_batch_size,
                                  decode_batch_size=settings.decode_batch_size,
                                  verifier_batch_size=settings.verifier_batch_size)  # fmt: skip
            ballast: list[torch.nn.Module] = []
            try:
                search_verifier, ballast = self.recipe_residents(built.recipe, settings)
                check["resident_extra_gb"] = sum(memory.module_bytes(m) for m in ballast) / GB
                check["search_verifier"] = type(search_verifier).__name__
                fn = partial(framework, built, search_verifier, n, 1, settings.micro_batch_size, self.args.seed,
                             settings.decode_batch_size, settings.verifier_batch_size)  # fmt: skip
                summarize(run, measure_once(run, fn, self.device, self.phases(built, search_verifier)))
            except Exception as err:
                run.status, run.error = "error", f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
            finally:
                ballast.clear()
                free(self.device)
            if not self.args.tiny:
                try:
                    check["estimate_gb"] = memory.estimate(settings).peak / GB
                except Exception as err:
                    check["estimate_error"] = f"{type(err).__name__}: {err}"
            check["run"] = asdict(run)
            self.results["memory_check"] = check
            self.record(run)

    def recipe_residents(self, recipe: Recipe, settings) -> tuple[Any, list[torch.nn.Module]]:
        """(the recipe's search verifier, the modules it keeps resident that the benchmark's FLUX pipeline lacks).
        Resident-only modules are built on the meta device and given uninitialised device storage (``to_empty``):
        their bytes are real, their values never read. tiny: the tiny CLIPScore twin and nothing else."""
        from lightning_search.verifiers import ClipScoreVerifier

        search_name = yaml.safe_load((REPO / recipe.path).read_text())["search"]["verifier"]
        if self.args.tiny:
            return ClipScoreVerifier(model="tiny").to(self.device).eval(), []
        if settings.verifiers.get(search_name) != "ClipScoreVerifier":
            raise ValueError(f"the memory check runs CLIPScore as the search verifier, the recipe names {search_name}")
        search_verifier = ClipScoreVerifier(model="ViT-L-14", pretrained=None).to(self.device).eval()
        from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

        with torch.device("meta"), memory.default_dtype(memory.DTYPES[settings.dtype]):
            encoders = [T5EncoderModel(T5Config(**memory.T5_XXL)), CLIPTextModel(CLIPTextConfig(**memory.CLIP_L_TEXT))]
        others = {k: v for k, v in settings.verifiers.items() if k not in (search_name, "aesthetic")}
        verifiers = memory.build_verifiers(type("S", (), {"verifiers": others})())
        ballast = [m.to_empty(device=self.device) for m in [*encoders, *verifiers.values()]]
        return search_verifier, ballast  # the run's aesthetic verifier is self.verifier, already resident

    def extras_pass(self, family: Family) -> None:
        """The micro-batch sweep of (c) at the smallest N, then (c) with the denoiser compiled."""
        sweep = family.name in self.args.sweep_families
        compiled = family.name in self.args.compile
        n = min(self.args.candidates)
        if not (sweep or compiled) or not self.budget.fits(family.name, n):
            return
        with self.family(family) as built:
            if built is None:
                return
            steps, seed = self.steps_for(family), self.args.seed
            main = built.candidates_per_call(built.recipe.micro_batch_size)
            for k in self.args.sweep if sweep else []:
                mb = k * (2 if built.cfg else 1)
                run = self.search_run(built, "sweep", n, steps, mb)
                if k == main:  # the main pass measured it
                    run.status, run.error = "skipped", "= the main pass's (c)"
                    self.record(run)
                    continue
                self.timed(run, built, lambda mb=mb: framework(built, self.verifier, n, steps, mb, seed))
            if compiled:
                self.compiled_run(built, n, steps)

    def compiled_run(self, built: Built, n: int, steps: int) -> None:
        """(c) at N with the denoiser compiled; the first call (one step, the measured shapes) is the compile time."""
        seed = self.args.seed
        run = self.search_run(built, "compile", n, steps, built.recipe.micro_batch_size, compiled=True)
        reserve = (
            self.budget.seconds is not None and self.budget.elapsed + self.args.compile_reserve_s > self.budget.seconds
        )
        if reserve or not self.budget.fits(built.family.name, 2 * n * self.args.repeats):
            run.status, run.error = "skipped", "time budget"
            self.record(run)
            return
        try:
            how = compile_denoiser(built.denoiser, self.args.compile_backend)
            start = time.perf_counter()
            with torch.no_grad():
                framework(built, self.verifier, n, 1, None, seed)
            sync(self.device)
            run.extra.update(compile=how, compile_s=time.perf_counter() - start, backend=self.args.compile_backend)
            # a compiled module would trace the timing hooks: the denoiser's share is what decode and verifier leave
            self.timed(run, built, partial(framework, built, self.verifier, n, steps, None, seed),
                       phases=self.phases(built, time_denoiser=False))  # fmt: skip
        except Exception as err:
            run.status, run.error = "error", f"compile: {type(err).__name__}: {str(err).splitlines()[0][:300]}"
            self.record(run)
        finally:
            torch._dynamo.reset()  # its caches hold the compiled blocks, and so the family's weights

    def run(self) -> dict[str, Any]:
        families = [FAMILIES[name] for name in self.args.families]
        self.log(f"# {self.results['meta']['device']} | torch {torch.__version__} | "
                 f"{'tiny twins' if self.args.tiny else 'real sizes, random weights'} | budget {self.args.budget_s} s")  # fmt: skip
        self.log(HEADER)
        try:
            for family in families:
                self.main_pass(family)
            if self.args.memory_check and "flux" in self.args.families:
                self.memory_pass()
            for family in families:
                self.extras_pass(family)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.write()
        self.log("")
        for target in self.results["targets"]:
            self.log(f"{target['status']:>4}  {target['name']}: {target['detail']}")
        self.log(f"\nresults: {self.out}  markdown: {self.markdown}  ({self.budget.elapsed:.0f} s)")
        return self.results


def compile_denoiser(denoiser: torch.nn.Module, backend: str) -> str:
    """Regional compilation where diffusers names the repeated blocks (FLUX, the UNet; its docs' advice: the compile
    time of one block, nearly the full speed-up), else ``Module.compile`` of the whole denoiser."""
    if getattr(denoiser, "_repeated_blocks", None):
        denoiser.compile_repeated_blocks(backend=backend)
        return "compile_repeated_blocks"
    denoiser.compile(backend=backend)
    return "compile"


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- comparing and reporting ----------------------------------------------------------------------------------------
def parity(family: str, n: int, outcomes: dict[str, Outcome | None], runs: dict[str, Run] | None = None) -> dict:
    """Do (a), (b), (c) choose the same candidate and make the same image? Scores of (a) against (b) over all N;
    with repeated rounds, the median of the rounds' own (c)/(b) and (c)/(a) throughput ratios."""
    done = {k: v for k, v in outcomes.items() if v is not None}
    out: dict[str, Any] = {"family": family, "n": n, "chosen": {k: v.chosen for k, v in done.items()}}
    if "a" in done and "b" in done and done["a"].scores and done["b"].scores:
        out["max_score_diff_a_b"] = max(abs(x - y) for x, y in zip(done["a"].scores, done["b"].scores))
    for x, y in (("a", "b"), ("c", "b"), ("c", "a")):
        if x in done and y in done:
            out[f"max_image_diff_{x}_{y}"] = float((done[x].image - done[y].image).abs().nan_to_num(0.0).max())
    out["same_choice"] = len(set(out["chosen"].values())) == 1 if len(done) > 1 else None
    rounds = {k: [r["seconds"] for r in run.rounds] for k, run in (runs or {}).items() if run.status == "ok"}
    for other in ("b", "a"):
        if len(rounds.get("c", [])) > 1 and len(rounds.get(other, [])) > 1:
            pairs = [o / c for o, c in zip(rounds[other], rounds["c"])]
            out[f"paired_c_over_{other}"] = statistics.median(pairs)
    return out


def ratio(results: dict, family: str, n: int, num: str, den: str, key: str = "candidates_per_s") -> float | None:
    def value(method: str):
        for r in results["runs"]:
            if (
                r["family"] == family
                and r["n"] == n
                and r["method"] == method
                and r["kind"] == "main"
                and r["status"] == "ok"
            ):
                return r[key]
        return None

    a, b = value(num), value(den)
    return a / b if a and b else None


def targets(results: dict) -> list[dict[str, Any]]:
    """PASS / FAIL / n/a for the issue's targets."""
    out = []
    settings = {k: v for k, v in results["settings"].items() if "error" not in v}
    ns = sorted({r["n"] for r in results["runs"] if r["kind"] == "main"})

    def add(name: str, value: float | None, threshold: float, detail: str, upper: bool = False) -> None:
        status = (
            "n/a" if value is None else ("PASS" if (value <= threshold if upper else value >= threshold) else "FAIL")
        )
        out.append({"name": name, "value": value, "threshold": threshold, "status": status, "detail": detail})

    for family in settings:
        for n in ns:
            r = ratio(results, family, n, "c", "b")
            add(f"{family} N={n}: (c) >= {TARGETS['c_over_b']} x (b)", r, TARGETS["c_over_b"],
                f"(c)/(b) = {_fmt(r, '.3f')}")  # fmt: skip
    for family in [f for f in RATIO_FAMILIES if f in settings and ns]:
        r = ratio(results, family, max(ns), "c", "a")
        add(f"{family} N={max(ns)}: (c) >= {TARGETS['c_over_a']} x (a)", r, TARGETS["c_over_a"],
            f"(c)/(a) = {_fmt(r, '.2f')}")  # fmt: skip
    check = results.get("memory_check") or {}
    for family, s in settings.items():
        stated = s.get("stated_peak_gb")
        if stated is None:
            continue
        if family == "flux" and check.get("run"):
            peak = check["run"]["peak_gb"]
            add(f"flux recipe memory ({check['num_candidates']} candidates, decode {check['run']['decode_batch_size']}, "
                f"all its models resident) <= {stated} GB", peak, stated,
                f"measured {_fmt(peak, '.1f')} GB; memory.py estimates {_fmt(check.get('estimate_gb'), '.1f')} GB",
                upper=True)  # fmt: skip
            continue
        # the recipe's N may not be one of the run's: the peak grows with N, so a larger N that fits proves it,
        # a smaller one that does not disproves it
        peaks = {r["n"]: r["peak_gb"] for r in results["runs"] if r["family"] == family and r["method"] == "c"
                 and r["kind"] == "main" and r["peak_gb"] is not None}  # fmt: skip
        extra, want = s.get("unloaded_weights_gb") or 0.0, s["recipe_candidates"]
        above = [n for n in peaks if n >= want and peaks[n] + extra <= stated]
        below = [n for n in peaks if n <= want and peaks[n] + extra > stated]
        total = peaks[min(above)] + extra if above else (peaks[max(below)] + extra if below else None)
        n = min(above) if above else (max(below) if below else None)
        add(f"{family} (c) at the recipe's N={want}: peak + unloaded weights <= {stated} GB", total, stated,
            f"(c) peak at N={n}: {_fmt(peaks.get(n), '.1f')} GB + text encoders and other verifiers {extra:.1f} GB",
            upper=True)  # fmt: skip
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


HEADER = (f"{'family':<8}{'kind':<8}{'m':<3}{'N':>4}{'steps':>6}{'k/call':>7}{'s':>9}{'cand/s':>9}{'proj/s':>9}"
          f"{'peak GB':>9}{'den%':>6}{'dec%':>6}{'ver%':>6}  status")  # fmt: skip


def row(r: Run) -> str:
    def pct(key: str) -> str:
        v = r.shares.get(key) if r.shares else None
        return "-" if v is None else f"{100 * v:.0f}"

    return (f"{r.family:<8}{r.kind:<8}{r.method:<3}{r.n:>4}{r.steps:>6}{_fmt(r.candidates_per_call, 'd'):>7}"
            f"{_fmt(r.seconds, '.3f'):>9}{_fmt(r.candidates_per_s, '.2f'):>9}{_fmt(r.projected_candidates_per_s, '.2f'):>9}"
            f"{_fmt(r.peak_gb, '.1f'):>9}{pct('denoiser'):>6}{pct('decode'):>6}{pct('verifier'):>6}  "
            f"{r.status}{' (' + r.error + ')' if r.error else ''}")  # fmt: skip


def parity_row(p: dict) -> str:
    diffs = ", ".join(f"{k.removeprefix('max_')} {v:.2e}" for k, v in p.items() if k.startswith("max_"))
    return f"{p['family']:<8}parity  N={p['n']}: chosen {p['chosen']} same={p['same_choice']}; {diffs}"


def markdown(results: dict) -> str:
    """A section ready to paste into BENCHMARKS.md: the machine, every figure, the targets."""
    meta, settings = results["meta"], results["settings"]
    lines = [f"## GPU benchmark (`python benchmarks/gpu.py {meta['argv']}`)", ""]
    lines.append(f"{meta['device']} ({_fmt(meta.get('device_memory_gb'), '.0f')} GB), driver {meta.get('driver')}, "
                 f"CUDA {meta.get('cuda')}, torch {meta['torch']}, diffusers {meta['diffusers']}, transformers "
                 f"{meta['transformers']}, open_clip {meta['open_clip']}, Python {meta['python']}; "
                 f"{meta['started']}, {results.get('elapsed_s', 0):.0f} s in all.")  # fmt: skip
    lines.append("")
    if meta.get("tiny"):
        lines.append('The tiny twins (`pretrained="tiny"`, 32 px, float32) on the CPU: the code path of the GPU run.')
    else:
        lines.append(
            "Real-size architectures with random weights, pre-encoded random text embeddings of the real shapes, the "
            "aesthetic predictor's architecture (CLIP ViT-L/14 + head, float32) as the verifier. (a) one pipeline call "
            "per candidate, (b) one pipeline call for all N, (c) lightning-search random search. Steps are cut for "
            "time: *proj.* scales the measured denoiser time to the recipe's steps."
        )
    lines += ["", "| family | px, dtype | steps (recipe) | NFE/cand. (recipe) | micro-batch, decode, verifier batch | "
              "not loaded (text encoders, other verifiers) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, s in settings.items():
        if "label" not in s:
            lines.append(f"| {name} | could not build: {s['error']} | | | | |")
            continue
        nfe = 2 if s["cfg"] else 1
        lines.append(f"| {s['label']}{' (' + s['error'] + ')' if 'error' in s else ''} | {s['height']}, {s['dtype']} | "
                     f"{s['steps']} ({s['recipe_steps']}) | {s['steps'] * nfe} ({s['recipe_steps'] * nfe}) | "
                     f"{s['micro_batch_size']}, {s['decode_batch_size']}, {s['verifier_batch_size']} | "
                     f"{_fmt(s.get('unloaded_weights_gb'), '.1f')} GB |")  # fmt: skip
    lines += ["", "| family | N | method | s | cand./s | proj. cand./s | peak GB (resident) | denoiser / decode / verifier | (c)/(b) | (c)/(a) |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    names = {"a": "(a) pipe per candidate", "b": "(b) one batched pipe call", "c": "(c) lightning-search"}
    for r in results["runs"]:
        if r["kind"] != "main":
            continue
        share = " / ".join("-" if r["shares"].get(k) is None else f"{100 * r['shares'][k]:.0f}%"
                           for k in ("denoiser", "decode", "verifier")) if r["shares"] else "-"  # fmt: skip
        cb = ratio(results, r["family"], r["n"], "c", "b") if r["method"] == "c" else None
        ca = ratio(results, r["family"], r["n"], "c", "a") if r["method"] == "c" else None
        status = "" if r["status"] == "ok" else f" **{r['status']}**"
        lines.append(f"| {r['family']} | {r['n']} | {names[r['method']]}{' (VAE slicing)' if r['vae_slicing'] else ''}"
                     f"{status} | {_fmt(r['seconds'], '.2f')} | {_fmt(r['candidates_per_s'], '.2f')} | "
                     f"{_fmt(r['projected_candidates_per_s'], '.3f')} | {_fmt(r['peak_gb'], '.1f')} "
                     f"({_fmt(r['resident_gb'], '.1f')}) | {share} | "
                     f"{_fmt(cb, '.3f')} | {_fmt(ca, '.2f')} |")  # fmt: skip
    sweep = [r for r in results["runs"] if r["kind"] in ("sweep", "compile")]
    if sweep:
        lines += ["", "| family | N | (c) variant | candidates per call | s | cand./s | peak GB | note |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in sweep:
            variant = "compiled denoiser" if r["compiled"] else "micro-batch sweep"
            note = r["status"] if r["status"] != "ok" else ""
            if r["compiled"] and r["extra"].get("compile_s") is not None:
                note = f"{r['extra']['compile']}, compile {r['extra']['compile_s']:.0f} s {note}"
            lines.append(f"| {r['family']} | {r['n']} | {variant} | {r['candidates_per_call']} | "
                         f"{_fmt(r['seconds'], '.2f')} | {_fmt(r['candidates_per_s'], '.2f')} | "
                         f"{_fmt(r['peak_gb'], '.1f')} | {note} |")  # fmt: skip
    check = results.get("memory_check")
    if check and check.get("run"):
        r = check["run"]
        lines += ["", f"FLUX recipe memory ({check['recipe']}): {check['num_candidates']} candidates, micro-batch "
                  f"{r['micro_batch_size']}, decode {r['decode_batch_size']}, verifier {r['verifier_batch_size']} "
                  f"({check.get('search_verifier')}), with {_fmt(check.get('resident_extra_gb'), '.1f')} GB of "
                  f"T5-XXL, CLIP-L and the other verifiers resident: peak **{_fmt(r['peak_gb'], '.1f')} GB** "
                  f"(recipe states {check['stated_peak_gb']} GB; `benchmarks/memory.py` estimates "
                  f"{_fmt(check.get('estimate_gb'), '.1f')} GB){'; ' + r['status'] if r['status'] != 'ok' else ''}."]  # fmt: skip
    parities = results.get("parity", [])
    if parities:

        def paired(p: dict) -> str:
            found = [
                f"{k.removeprefix('paired_').replace('_over_', '/')} {p[k]:.3f}" for k in p if k.startswith("paired")
            ]
            return f", paired round ratios {', '.join(found)}" if found else ""

        lines += ["", "Same noises, same samples: " + "; ".join(
            f"{p['family']} N={p['n']} chosen {p['chosen']}, max image diff (c)-(b) "
            f"{_fmt(p.get('max_image_diff_c_b'), '.1e')}{paired(p)}" for p in parities) + "."]  # fmt: skip
    if results.get("targets"):
        lines += ["", "| target | result | |", "|---|---|---|"]
        lines += [f"| {t['name']} | **{t['status']}** | {t['detail']} |" for t in results["targets"]]
    return "\n".join(lines) + "\n"


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import diffusers
    import open_clip
    import transformers

    cuda = is_cuda(args.device)
    props = torch.cuda.get_device_properties(args.device) if cuda else None
    return {
        "argv": " ".join(args.argv),
        "tiny": args.tiny,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "device": torch.cuda.get_device_name(args.device)
        if cuda
        else f"CPU ({platform.processor() or platform.machine()})",
        "device_memory_gb": props.total_memory / GB if props else None,
        "driver": driver_version() if cuda else None,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "open_clip": getattr(open_clip, "__version__", "?"),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "commit": _git_commit(),
    }


def driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)  # fmt: skip
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def unloaded_weights_gb(family: str, recipe: Recipe) -> float:
    """Bytes of what the recipe's run holds and this benchmark does not load: the text encoders (real configs on the
    meta device, the recipe's dtype) and the recipe's verifiers other than the aesthetic one (float32)."""
    import transformers

    from lightning_search.backbones.pipeline import resolve_dtype

    dtype = resolve_dtype(recipe.torch_dtype) or torch.float32
    total = 0
    with torch.device("meta"), memory.default_dtype(dtype):
        for _, cls, config in TEXT_ENCODERS[family]:
            model_cls = getattr(transformers, cls)
            config_cls = transformers.T5Config if cls == "T5EncoderModel" else transformers.CLIPTextConfig
            total += memory.module_bytes(model_cls(config_cls(**config)))
    others = {k: v for k, v in recipe.verifiers.items() if v != "AestheticVerifier"}
    known = {k: v for k, v in others.items() if v in memory.VERIFIER_CLASSES}
    settings = type("S", (), {"verifiers": known})()
    total += sum(memory.module_bytes(v) for v in memory.build_verifiers(settings).values())
    if any(v == "PickScoreVerifier" for v in others.values()):  # PickScore v1 is CLIP ViT-H/14 (its model card)
        import open_clip

        with memory.weightless_verifiers():
            total += memory.module_bytes(open_clip.create_model("ViT-H-14"))
    return total / GB


def preflight(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The real sizes on the meta device (shapes only: no memory, no GPU, seconds on a CPU): each family's pipeline
    built from its configs, its pre-encoded condition through one backbone forward and one VAE decode at batch 1, as
    the GPU run will call them. Catches a config or embedding shape that does not fit before device time is spent."""
    from lightning_search.backbones.pipeline import resolve_dtype

    out = {}
    for name in names:
        family = FAMILIES[name]
        recipe = Recipe.read(REPO / family.recipe)
        dtype = resolve_dtype(recipe.torch_dtype) or torch.bfloat16
        pipe = real_pipeline(name, "meta", dtype)
        backbone = pre_encoded_backbone(family, pipe, {}, **backbone_kwargs(family, recipe, tiny=False))
        cond = real_embeddings(name, "meta", dtype)
        if name == "sdxl":
            for side in ("pos", "neg"):
                cond[side]["time_ids"] = backbone._time_ids(cond[side]["text_embeds"])
        backbone.__dict__["embeddings"] = {PROMPT: cond}
        x = torch.empty(2, *backbone.latent_shape, device="meta", dtype=dtype)
        with torch.no_grad(), memory.FusedAttentionMemory():  # no (L x L) scores: the GPU's fused attention
            velocity = backbone(x, torch.full((2,), 0.5, device="meta"), backbone.encode_conditions([PROMPT] * 2))
            images = backbone.decode(x[:1])
        denoiser = getattr(pipe, family.denoiser)
        out[name] = {
            "denoiser_parameters": count(denoiser),
            "denoiser_bytes": memory.module_bytes(denoiser),  # parameters and buffers (SD3's position table)
            "vae_parameters": count(pipe.vae),
            "latent_shape": list(backbone.latent_shape),
            "output_shape": list(velocity.shape),
            "image_shape": list(images.shape),
            "unloaded_weights_gb": unloaded_weights_gb(name, recipe),
        }
    return out


# -- the command line -----------------------------------------------------------------------------------------------
def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _names(text: str) -> list[str]:
    names = [x for x in text.split(",") if x]
    unknown = sorted(set(names) - set(FAMILIES) - {"none"})
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    return [x for x in names if x != "none"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny twins on the CPU (the suite's test)")
    parser.add_argument("--preflight", action="store_true", help="real sizes on the meta device only (CPU, seconds)")
    parser.add_argument("--device", default=None, help="default: cuda if available (cpu with --tiny)")
    parser.add_argument("--families", type=_names, default=None,
                        help=f"comma-separated, of {', '.join(FAMILIES)} (default {','.join(DEFAULT_FAMILIES)}; sd: tiny only)")  # fmt: skip
    parser.add_argument("--candidates", type=_ints, default=[8, 32], help="N values (default 8,32)")
    parser.add_argument(
        "--steps", type=int, default=None, help=f"steps per candidate (default {GPU_STEPS}; tiny {TINY_STEPS})"
    )
    parser.add_argument("--sweep", type=_ints, default=[1, 2, 4, 8], help="candidates per network call in the sweep")
    parser.add_argument("--sweep-families", type=_names, default=None, help="default flux,sdxl")
    parser.add_argument(
        "--compile",
        type=_names,
        default=None,
        help="families whose denoiser is compiled (default flux,sdxl; tiny none)",
    )
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--compile-reserve-s", type=float, default=90.0, help="time kept for one compilation")
    parser.add_argument("--no-memory-check", dest="memory_check", action="store_false")
    parser.add_argument(
        "--memory-candidates", type=int, default=None, help="N of the memory check (default: the recipe's)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats per measurement (median)")
    parser.add_argument(
        "--budget-s", type=float, default=None, help="wall-clock budget (default 480 on CUDA, none with --tiny)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    parser.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/gpu.json, gpu-tiny.json with --tiny)"
    )
    parser.add_argument("--markdown", default=None, help="markdown path (default: --out with .md)")  # fmt: skip
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if not args.tiny and not args.preflight and not is_cuda(args.device):
        parser.error("real sizes need a CUDA device; use --tiny on a CPU")
    args.families = args.families if args.families is not None else list(DEFAULT_FAMILIES)
    args.sweep_families = args.sweep_families if args.sweep_families is not None else ["flux", "sdxl"]
    args.compile = args.compile if args.compile is not None else ([] if args.tiny else ["flux", "sdxl"])
    if args.budget_s is None and not args.tiny:
        args.budget_s = 480.0
    if args.out is None:
        args.out = str(RESULTS / ("gpu-tiny.json" if args.tiny else "gpu.json"))
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    if not is_cuda(args.device):
        torch.set_num_threads(args.threads)
    if args.preflight:
        result = preflight(args.families)
        print(json.dumps(result, indent=1))  # noqa: T201
        return result
    return Bench(args).run()


if __name__ == "__main__":
    main()
