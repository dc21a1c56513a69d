"""Peak GPU memory of a FLUX.1-dev predict run with search, estimated from the real model configs on a CPU.

    python benchmarks/memory.py [--recipe recipes/paper/flux_dev_drawbench_random.yaml]
                                [--decode-batch-size N] [--verifier-batch-size N] [--micro-batch-size N]

What is counted, stage by stage (the stages run one after the other, so the run's peak is the largest total):

* weights: the exact bytes of every parameter and buffer (distinct storages) of the FLUX.1-dev transformer, T5-XXL,
  CLIP-L and the 16-channel VAE in the recipe's dtype, and of the run's verifiers in float32 (``DiffusionModule``
  keeps verifiers in a plain dict, so ``precision: bf16-true`` does not cast them);
* activations: the peak of live tensor bytes during one call of each stage, measured by running the real modules
  (``FluxBackbone.encode_conditions`` / ``forward`` / ``decode`` and each verifier's ``score``) on the ``meta``
  device, at the recipe's batch sizes: text encoding of one prompt and its negative, the transformer at
  ``micro_batch_size`` rows (4,096 image + 512 text tokens at 1024 px), the VAE at ``decode_batch_size`` latents,
  each verifier at ``verifier_batch_size`` images (any of them can be ``--search.verifier``);
* kept: what random search holds meanwhile, from the shapes in ``lightning_search/search``: the N candidates' noises
  and final latents, the prompt embeddings repeated N times while integrating (``cond_repeat``), and the decoded
  images in float32 as ``SearchContext.decode`` returns them (twice over while its ``torch.cat`` runs).

How activations are measured. Models are built on the meta device (shapes, dtypes and storage sizes, no data, no
allocation; a 12B-parameter transformer builds in seconds) and run under :class:`LiveBytes`, a
``TorchDispatchMode`` that adds the bytes of every new meta storage an op returns and subtracts them when the
storage is garbage (torch keeps one Python object per storage while it lives, so a weakref finalizer fires then);
views and in-place results share a storage already counted. Why not FakeTensorMode: nothing here mixes real and
fake tensors, and meta tensors already carry what is counted. Why not ``torch.distributed._tools.mem_tracker.
MemTracker`` (private API, used by the test as a cross-check): it does the same bookkeeping per module but offers
no control over attention. Attention: on the meta device ``scaled_dot_product_attention`` decomposes into the math
path, which materialises the (N x N) scores (8 GB for one FLUX block at 8 rows); on an H100 / A100 torch runs
flash attention (FLUX, head dim 128) or the memory-efficient kernel (the VAE's single 512-wide head, beyond flash's
256), which allocate only the output and a float32 log-sum-exp, so :class:`FusedAttentionMemory` counts just those.

Not counted: the CUDA context (~0.5 GB, outside torch's allocator), cuDNN / cuBLAS workspaces (transient, inside
single ops) and allocator fragmentation; keep a few GB of headroom below the card's memory.

Prints a table and writes ``benchmarks/results/memory.json`` (gitignored).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import weakref
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
RECIPE = REPO / "recipes" / "paper" / "flux_dev_drawbench_random.yaml"
GB = 1e9

# -- the real models' configs (diffusers / transformers config.json fields that decide sizes) ------------------
# black-forest-labs/FLUX.1-dev/transformer/config.json: diffusers' FluxTransformer2DModel defaults are FLUX.1's
# (its docstring), plus dev's guidance embedding.
FLUX_DEV_TRANSFORMER = {
    "patch_size": 1, "in_channels": 64, "out_channels": None, "num_layers": 19, "num_single_layers": 38,
    "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768,
    "guidance_embeds": True, "axes_dims_rope": (16, 56, 56),
}  # fmt: skip
# black-forest-labs/FLUX.1-dev/vae/config.json: the 16-channel AutoencoderKL, no quant convs
FLUX_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 16, "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2, "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "act_fn": "silu", "norm_num_groups": 32, "sample_size": 1024, "scaling_factor": 0.3611, "shift_factor": 0.1159,
    "use_quant_conv": False, "use_post_quant_conv": False, "mid_block_add_attention": True, "force_upcast": True,
}  # fmt: skip
# black-forest-labs/FLUX.1-dev/text_encoder_2/config.json: the encoder of google/t5-v1_1-xxl
T5_XXL = {
    "vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
    "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128, "feed_forward_proj": "gated-gelu",
    "layer_norm_epsilon": 1e-6, "tie_word_embeddings": False, "dropout_rate": 0.1,
}  # fmt: skip
# black-forest-labs/FLUX.1-dev/text_encoder/config.json: openai/clip-vit-large-patch14's text tower
CLIP_L_TEXT = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
    "layer_norm_eps": 1e-5, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1,
}  # fmt: skip
# THUDM/ImageReward/med_config.json (BERT-base with cross-attention); its ViT-L/16 is built by ImageRewardVerifier
IMAGE_REWARD_MED = {
    "hidden_act": "gelu", "hidden_size": 768, "intermediate_size": 3072, "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512, "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0,
    "vocab_size": 30524, "encoder_width": 768, "add_cross_attention": True,
}  # fmt: skip

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, None: torch.float32}


# -- the activation tracker -------------------------------------------------------------------------------------
class LiveBytes(TorchDispatchMode):
    """Bytes of the ``device`` storages created inside the block that are still alive, and their peak.

    A storage an op returns that was not seen before is new memory; a storage first seen as an op's *input* existed
    before the block (weights, inputs) and is never counted. A counted storage leaves the count when it is freed.
    """

    def __init__(self, device: str = "meta") -> None:
        super().__init__()
        self.device, self.live, self.peak = torch.device(device), 0, 0
        self._bytes: dict[int, int] = {}

    def _register(self, t: torch.Tensor, new: bool) -> None:
        if t.device != self.device:
            return
        storage = t.untyped_storage()
        key = id(storage)
        if key in self._bytes:
            return
        nbytes = storage.nbytes() if new else 0
        self._bytes[key] = nbytes
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.live -= self._bytes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for t in pytree.tree_leaves((args, kwargs)):
            if isinstance(t, torch.Tensor):
                self._register(t, new=False)
        out = func(*args, **kwargs)
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._register(t, new=True)
        return out


class FusedAttentionMemory(TorchFunctionMode):
    """``F.scaled_dot_product_attention`` allocating what flash / memory-efficient attention allocate on a GPU: the
    output and a float32 log-sum-exp (B, H, L), instead of the math path's (L x S) scores."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            query = kwargs["query"] if "query" in kwargs else args[0]
            value = kwargs["value"] if "value" in kwargs else args[2]
            lse = torch.empty(query.shape[:-1], dtype=torch.float32, device=query.device)
            out = torch.empty((*query.shape[:-1], value.shape[-1]), dtype=query.dtype, device=query.device)
            del lse  # live together with the output inside the kernel, then dropped (no grad)
            return out
        return func(*args, **kwargs)


def peak_activation_bytes(fn, *args: Any, **kwargs: Any) -> int:
    """Peak live bytes of new meta tensors while ``fn(*args, **kwargs)`` runs (its output included), no grad."""
    tracker = LiveBytes("meta")
    with torch.no_grad(), FusedAttentionMemory(), tracker:
        out = fn(*args, **kwargs)
        del out
    return tracker.peak


def module_bytes(*modules: nn.Module) -> int:
    """Bytes of the distinct parameter and buffer storages of the modules."""
    seen: dict[int, int] = {}
    for module in modules:
        for t in [*module.parameters(), *module.buffers()]:
            storage = t.untyped_storage()
            seen[id(storage)] = storage.nbytes()
    return sum(seen.values())


def tensor_bytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return torch.Size(shape).numel() * dtype.itemsize


# -- the run's settings, from a recipe ---------------------------------------------------------------------------
VERIFIER_CLASSES = ("ClipScoreVerifier", "AestheticVerifier", "ImageRewardVerifier")


@dataclass
class RunSettings:
    num_candidates: int
    micro_batch_size: int
    guided: bool
    decode_batch_size: int
    verifier_batch_size: int
    height: int
    width: int
    max_sequence_length: int
    dtype: str
    verifiers: dict[str, str] = field(default_factory=dict)  # name -> verifier class name

    @classmethod
    def from_recipe(cls, path: str | Path, **overrides: Any) -> RunSettings:
        """The settings of a FLUX.1-dev predict recipe; what it leaves out takes :class:`SearchConfig`'s and
        :class:`Sampler`'s defaults, as the CLI does."""
        from lightning_search.sampling import Sampler
        from lightning_search.search.config import SearchConfig

        cfg = yaml.safe_load(Path(path).read_text())
        model = cfg["model"]["init_args"]
        backbone = model["backbone"]
        if (
            not backbone["class_path"].endswith("FluxBackbone")
            or "FLUX.1-dev" not in backbone["init_args"]["pretrained"]
        ):
            raise ValueError(
                f"{path}: this estimate holds FLUX.1-dev's configs, not {backbone['init_args']['pretrained']}"
            )
        args, sampler, search = backbone["init_args"], model.get("sampler", {}), cfg.get("search", {})
        defaults = SearchConfig()
        verifiers = {name: spec["class_path"].rsplit(".", 1)[-1] for name, spec in cfg.get("verifiers", {}).items()}
        unknown = sorted(set(verifiers.values()) - set(VERIFIER_CLASSES))
        if unknown:
            raise ValueError(f"no memory model for verifiers {unknown}; known: {', '.join(VERIFIER_CLASSES)}")
        settings = cls(
            num_candidates=int(search.get("num_candidates", defaults.num_candidates)),
            micro_batch_size=int(sampler.get("micro_batch_size", Sampler.micro_batch_size)),
            guided=float(sampler.get("guidance_scale", 1.0)) != 1.0,
            decode_batch_size=int(search.get("decode_batch_size", defaults.decode_batch_size)),
            verifier_batch_size=int(search.get("verifier_batch_size", defaults.verifier_batch_size)),
            height=int(args.get("height") or 1024),
            width=int(args.get("width") or 1024),
            max_sequence_length=int(args.get("max_sequence_length", 512)),
            dtype=args.get("torch_dtype") or "float32",
            verifiers=verifiers,
        )
        for key, value in overrides.items():
            if value is not None:
                setattr(settings, key, value)
        return settings

    @property
    def transformer_rows(self) -> int:
        """Rows per transformer call: the sampler's micro-batch (guided: halves of conditional + unconditional)."""
        rows = max(1, self.micro_batch_size // (2 if self.guided else 1))
        return min(rows, self.num_candidates) * (2 if self.guided else 1)


# -- the models, on the meta device -------------------------------------------------------------------------------
def flux_backbone(settings: RunSettings):
    """FLUX.1-dev as ``FluxBackbone`` wraps it, every module on the meta device in the recipe's dtype (tokenizers:
    the tests' small ones; ids and padded lengths are what matter here)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from lightning_search.backbones import FluxBackbone
    from lightning_search.backbones.pipeline import tiny_clip_tokenizer, tiny_t5_tokenizer

    with torch.device("meta"), default_dtype(DTYPES[settings.dtype]):
        pipe = FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
            vae=AutoencoderKL(**FLUX_VAE),
            text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT)),
            tokenizer=tiny_clip_tokenizer(),
            text_encoder_2=T5EncoderModel(T5Config(**T5_XXL)),
            tokenizer_2=tiny_t5_tokenizer(),
            transformer=FluxTransformer2DModel(**FLUX_DEV_TRANSFORMER),
        )
    return FluxBackbone.from_pipeline(
        pipe, height=settings.height, width=settings.width, max_sequence_length=settings.max_sequence_length
    )


@contextmanager
def default_dtype(dtype: torch.dtype):
    """Modules built inside get ``dtype`` parameters, as ``from_pretrained(torch_dtype=...)`` loads them."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@contextmanager
def weightless_verifiers():
    """Build verifiers with their own constructors on the meta device, replacing only weight I/O: downloads
    return a dummy path, checkpoints are neither read nor loaded, BERT's tokenizer is the tests' small one."""
    import open_clip

    from lightning_search.verifiers import ImageRewardVerifier
    from lightning_search.verifiers import aesthetic as aesthetic_module
    from lightning_search.verifiers import image_reward as image_reward_module
    from lightning_search.verifiers.image_reward import tiny_blip_tokenizer

    real_create = open_clip.create_model

    def create_model(*args, **kwargs):
        kwargs.update(device="meta", load_weights=False, require_pretrained=False)
        return real_create(*args, **kwargs)

    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        (Path(folder) / "med_config.json").write_text(json.dumps(IMAGE_REWARD_MED))
        for target, attribute, value in [
            (open_clip, "create_model", create_model),
            (open_clip, "download_pretrained", lambda *a, **k: "/nonexistent/weights.safetensors"),
            (open_clip.factory, "download_pretrained", lambda *a, **k: "/nonexistent/weights.safetensors"),
            (aesthetic_module, "load_head", lambda *a, **k: None),
            (image_reward_module, "hub_file", lambda repo, name, **k: Path(folder) / name),
            (image_reward_module, "load_state_dict_file", lambda path: {}),
            (image_reward_module, "blip_tokenizer", lambda *a, **k: tiny_blip_tokenizer()),
            (ImageRewardVerifier, "load_state_dict", lambda self, state, strict=True: ([], [])),
        ]:
            stack.enter_context(mock.patch.object(target, attribute, value))
        stack.enter_context(torch.device("meta"))
        yield


def build_verifiers(settings: RunSettings) -> dict[str, nn.Module]:
    """The run's verifiers with their default (real) architectures, float32 as the run keeps them."""
    from lightning_search import verifiers as package

    with weightless_verifiers():
        return {name: getattr(package, cls)().eval() for name, cls in settings.verifiers.items()}


@dataclass
class Models:
    backbone: Any
    verifiers: dict[str, nn.Module]
    peaks: dict[tuple, int] = field(default_factory=dict)  # measured stage peaks, by stage and input shape

    @classmethod
    def build(cls, settings: RunSettings) -> Models:
        return cls(flux_backbone(settings), build_verifiers(settings))

    def peak(self, key: tuple, fn, *args: Any) -> int:
        """:func:`peak_activation_bytes` of one stage, measured once per ``key`` (the stage and its input shapes):
        estimating another batch size of the same run re-measures only the stages that batch size changes."""
        if key not in self.peaks:
            self.peaks[key] = peak_activation_bytes(fn, *args)
        return self.peaks[key]


# -- the estimate -------------------------------------------------------------------------------------------------
@dataclass
class Stage:
    name: str
    batch: int
    kept: int
    activations: int
    weights: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kept + self.activations


@dataclass
class Estimate:
    settings: RunSettings
    weights: dict[str, int]
    stages: list[Stage]

    @property
    def peak(self) -> int:
        return max(stage.total for stage in self.stages)

    @property
    def peak_stage(self) -> Stage:
        return max(self.stages, key=lambda s: s.total)

    def table(self) -> str:
        rows = [f"{'stage':<28}{'batch':>7}{'weights':>10}{'kept':>9}{'activ.':>9}{'total':>9}  (GB)"]
        for s in self.stages:
            rows.append(
                f"{s.name:<28}{s.batch:>7}{s.weights / GB:>10.2f}{s.kept / GB:>9.2f}"
                f"{s.activations / GB:>9.2f}{s.total / GB:>9.2f}"
            )
        rows.append(f"peak: {self.peak / GB:.1f} GB ({self.peak_stage.name})")
        rows.append("weights: " + ", ".join(f"{k} {v / GB:.2f}" for k, v in self.weights.items()))
        return "\n".join(rows)

    def to_dict(self) -> dict:
        return {
            "settings": asdict(self.settings),
            "weights_bytes": self.weights,
            "stages": [{**asdict(s), "total": s.total} for s in self.stages],
            "peak_bytes": self.peak,
        }


def estimate(settings: RunSettings, models: Models | None = None) -> Estimate:
    """Weights + kept tensors + the peak activations of each stage of random search (see the module docstring).
    ``models``: built once (:meth:`Models.build`) to estimate several batch sizes of the same run."""
    from lightning_search.backbones.base import cond_repeat

    models = models or Models.build(settings)
    backbone, verifiers = models.backbone, models.verifiers
    dtype = DTYPES[settings.dtype]
    weights = {
        "transformer": module_bytes(backbone.transformer),
        "text_encoder_2 (T5-XXL)": module_bytes(backbone.text_encoder_2),
        "text_encoder (CLIP-L)": module_bytes(backbone.text_encoder),
        "vae": module_bytes(backbone.vae),
        **{f"verifier {name}": module_bytes(v) for name, v in verifiers.items()},
    }
    resident = sum(weights.values())
    n = settings.num_candidates
    latent = tuple(backbone.latent_shape)
    image = (3, settings.height, settings.width)
    latents = tensor_bytes((n, *latent), dtype)  # one set of N candidates' latents
    images = tensor_bytes((n, *image), torch.float32)  # decoded in float32 (the backbone's postprocess)

    prompt = ["a photo of a cat on a red sofa"]
    text = models.peak(("text",), backbone.encode_conditions, prompt)
    cond = backbone.encode_conditions(prompt)
    repeated_cond = sum(tensor_bytes((n, *t.shape[1:]), t.dtype) for t in pytree.tree_leaves(cond))

    rows = settings.transformer_rows
    # the rows' conditions (guided: conditional then unconditional halves, the same shapes)
    row_cond = cond_repeat(cond, rows)
    x_t = torch.empty(rows, *latent, device="meta", dtype=dtype)
    t = torch.full((rows,), 0.5, device="meta", dtype=dtype)
    denoise = models.peak(("denoising", rows, dtype), backbone.forward, x_t, t, row_cond)

    dbs = min(settings.decode_batch_size, n)
    decode = models.peak(
        ("decoding", dbs, dtype), backbone.decode, torch.empty(dbs, *latent, device="meta", dtype=dtype)
    )

    vbs = min(settings.verifier_batch_size, n)
    from transformers import masking_utils

    # transformers asks whether a padding mask may be skipped (a data-dependent check meta tensors cannot
    # answer): keep the mask, as for a padded prompt
    with mock.patch.object(masking_utils, "_ignore_bidirectional_mask_sdpa", lambda *a, **k: False):
        scoring = {
            name: models.peak(
                ("scoring", name, vbs, image),
                verifier.score,
                torch.empty(vbs, *image, device="meta", dtype=torch.float32),
                prompt * vbs,
            )
            for name, verifier in verifiers.items()
        }
    decoded_parts = tensor_bytes((n - dbs, *image), torch.float32)
    stages = [
        Stage("text encoding", 1, 0, text),
        # noises + finished chunks' latents + the prompt embeddings repeated for all N candidates
        Stage("denoising (transformer)", rows, 2 * latents + repeated_cond, denoise),
        # noises + final latents + the images decoded so far; the VAE call's output is in its activations
        Stage("decoding (VAE)", dbs, 2 * latents + decoded_parts, decode),
        # SearchContext.decode's torch.cat of the parts: parts and result alive together
        Stage("decoding (concatenation)", n, 2 * latents + 2 * images, 0),
    ]
    # any verifier of the run can be --search.verifier: each one's scoring stage, images of all N kept
    stages += [Stage(f"scoring ({name})", vbs, 2 * latents + images, peak) for name, peak in scoring.items()]
    for stage in stages:
        stage.weights = resident
    return Estimate(settings, weights, stages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument("--decode-batch-size", type=int)
    parser.add_argument("--verifier-batch-size", type=int)
    parser.add_argument("--micro-batch-size", type=int)
    args = parser.parse_args()
    settings = RunSettings.from_recipe(
        args.recipe,
        decode_batch_size=args.decode_batch_size,
        verifier_batch_size=args.verifier_batch_size,
        micro_batch_size=args.micro_batch_size,
    )
    result = estimate(settings)
    print(result.table())  # noqa: T201 - a benchmark script reports on stdout
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps(result.to_dict(), indent=2))


if __name__ == "__main__":
    main()
