"""What every backbone built from a diffusers pipeline shares: loading, tiny twins, schedulers, conditions.

A :class:`PipelineBackbone` owns a diffusers pipeline object (``self.pipe``) and registers its networks as
submodules (the denoiser first, so that ``next(backbone.parameters())`` gives the sampling dtype and device),
so Lightning moves and casts them with the module. Prompt encoding, micro-conditioning, latent packing and
decoding call the pipeline's own methods, so they are the pipeline's behaviour by construction; only the
denoising loop lives in ``lightning_search.sampling`` (``solver="scheduler"`` drives the pipeline's own
scheduler and reproduces ``pipe(...)``; the framework's own solvers use :meth:`Backbone.forward` in the one
time convention).

Loading: ``pretrained`` is a hub id (``stabilityai/stable-diffusion-xl-base-1.0``), a local folder written
by ``save_pretrained`` / ``huggingface-cli download --local-dir``, or ``"tiny"`` (and, for some families,
``"tiny-<flavour>"``): the same diffusers classes built from small config dicts with random weights drawn
from a fixed seed, with tokenizers built in code, for tests and CI recipes (no download, seconds on a CPU).

Conditions are prompts (``str``) or dicts ``{"prompt": ..., "negative_prompt": ...}`` (both JSON records);
an encoded batch is ``{"pos": ..., "neg": ...}``: the prompt's encoding and the encoding the pipeline uses
for the unconditional half of classifier-free guidance (the negative prompt, "" or zeros, as the pipeline
does it). :meth:`null_conditions` swaps the negative in.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import torch

from lightning_search.backbones.base import Backbone, Cond
from lightning_search.backbones.schedules import VPSchedule
from lightning_search.errors import CheckpointError, ConfigurationError, lookup

TINY_SEED = 0

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """``"bfloat16"`` -> ``torch.bfloat16`` (None stays None: the weights' own dtype)."""
    if name is None or isinstance(name, torch.dtype):
        return name
    return lookup(DTYPES, "dtype", str(name).removeprefix("torch."))


# The schedulers the scheduler sampler can start and stop anywhere (see sampling/scheduler.py), by the names
# a backbone's ``scheduler:`` takes; the stochastic ones (ddpm, euler_ancestral, dpmsolver++_sde) get their
# noise from per-row seeded generators.
SCHEDULER_NAMES: dict[str, str] = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "dpmsolver++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "flow_match_euler": "FlowMatchEulerDiscreteScheduler",
    "ddpm": "DDPMScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "dpmsolver++_sde": "DPMSolverMultistepScheduler",
}
ALGORITHM_TYPES = {"dpmsolver++": "dpmsolver++", "dpmsolver++_sde": "sde-dpmsolver++"}


def make_scheduler(name: str, config: Any):
    """A scheduler of the named class built from another scheduler's config (the usual diffusers swap)."""
    import diffusers

    cls = getattr(diffusers, lookup(SCHEDULER_NAMES, "scheduler", name))
    overrides = {"algorithm_type": ALGORITHM_TYPES[name]} if name in ALGORITHM_TYPES else {}
    return cls.from_config(config, **overrides)


def _looks_like_path(pretrained: str) -> bool:
    return pretrained.startswith((".", "/", "~")) or "\\" in pretrained or pretrained.count("/") > 1


def load_pipeline(
    pipeline_class: type,
    pretrained: str,
    *,
    torch_dtype: str | torch.dtype | None = None,
    variant: str | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
    **components: Any,
):
    """``pipeline_class.from_pretrained(pretrained, dtype, variant, ...)`` with errors a user can act on.

    ``pretrained``: a local folder (``model_index.json`` inside) or a hub id. A hub id that cannot be fetched
    (no network, ``HF_HUB_OFFLINE=1``, gated, misspelt) raises :class:`CheckpointError` naming the id and
    showing how to download it once and pass the folder instead.
    """
    path = Path(pretrained).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise CheckpointError(
                f"{str(path)!r} is not a diffusers pipeline folder (no model_index.json inside); pass the folder "
                f"written by `pipe.save_pretrained(folder)` or `huggingface-cli download <id> --local-dir <folder>`"
            )
        source = str(path)
    elif _looks_like_path(pretrained):
        raise CheckpointError(f"pipeline folder {pretrained!r} does not exist")
    else:
        source = pretrained
    kwargs: dict[str, Any] = {"variant": variant, "revision": revision, "local_files_only": local_files_only}
    dtype = resolve_dtype(torch_dtype)
    if dtype is not None:
        # diffusers >= 0.36 renamed torch_dtype to dtype (the old name still works, with a deprecation warning)
        kwargs["dtype" if _accepts_dtype() else "torch_dtype"] = dtype
    try:
        return pipeline_class.from_pretrained(source, **kwargs, **components)
    except (OSError, ValueError) as err:
        name = source.rstrip("/").split("/")[-1]
        raise CheckpointError(
            f"could not load the pipeline {source!r} ({type(err).__name__}: {str(err).splitlines()[0][:300]}). "
            f"Without network access (or with HF_HUB_OFFLINE=1) a hub id cannot be fetched: download it once "
            f"where there is network, e.g. `huggingface-cli download {source} --local-dir /models/{name}`, then pass "
            f"the folder: `pretrained: /models/{name}` (for a gated model, accept its licence on the hub and "
            f"`huggingface-cli login` first). Use `pretrained: tiny` for the random offline twin."
        ) from err


@cache
def _accepts_dtype() -> bool:
    try:
        from diffusers.utils import deprecation_utils

        return hasattr(deprecation_utils, "_resolve_dtype")
    except ImportError:
        return False


def load_component(model_class: type, source: str, subfolder: str | None, **kwargs: Any):
    """One model (e.g. a fine-tuned UNet) from a hub id or folder, with the same error handling."""
    path = Path(source).expanduser()
    dtype = resolve_dtype(kwargs.pop("torch_dtype", None))
    if dtype is not None:
        kwargs["dtype" if _accepts_dtype() else "torch_dtype"] = dtype
    try:
        return model_class.from_pretrained(str(path) if path.exists() else source, subfolder=subfolder, **kwargs)
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"could not load {model_class.__name__} from {source!r} (subfolder {subfolder!r}): "
            f"{str(err).splitlines()[0][:300]}. Download it once with `huggingface-cli download {source} "
            f"--local-dir <folder>` and pass the folder instead."
        ) from err


def tiny_modules(build: Callable[[], Any], seed: int = TINY_SEED) -> Any:
    """Run ``build`` with the CPU generator seeded, leaving the global generator as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


# -- tokenizers built in code (no files): real CLIP BPE merges, a small T5 unigram vocabulary ------------


@cache
def _clip_merges() -> tuple[tuple[str, str], ...]:
    from importlib.resources import files

    text = gzip.open(files("open_clip") / "bpe_simple_vocab_16e6.txt.gz").read().decode("utf-8")
    # the first line is a header; 49152 - 256 - 2 merges follow (as open_clip's SimpleTokenizer reads them)
    return tuple(tuple(line.split()) for line in text.split("\n")[1 : 49152 - 256 - 2 + 1])


def tiny_clip_tokenizer(num_merges: int = 2000, model_max_length: int = 77, pad_token: str = "<|endoftext|>"):
    """CLIP's byte-level BPE with its first ``num_merges`` merges: real CLIP tokenisation of common words,
    a vocabulary of ``514 + num_merges`` ids (the text encoder's ``vocab_size``)."""
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    merges = list(_clip_merges()[:num_merges])
    base = list(bytes_to_unicode().values())
    vocab = base + [v + "</w>" for v in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(
        vocab={v: i for i, v in enumerate(vocab)},
        merges=merges,
        model_max_length=model_max_length,
        pad_token=pad_token,
    )


_T5_WORDS = (
    "a an the of and in on with to at by for from is are red blue green yellow black white brown pink purple "
    "orange car dog cat bird horse cow person man woman boy girl tree house bench bowl table chair cup book "
    "sign text two three four one left right top bottom above below next photo painting image"
).split()


def tiny_t5_tokenizer():
    """A small SentencePiece-unigram T5 tokenizer (pad 0, eos 1, unk 2 as in T5) built from Python objects."""
    from transformers import T5Tokenizer

    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -4.0) for c in chars] + [("\u2581" + w, -1.0) for w in _T5_WORDS]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def tiny_clip_text_config(tokenizer, hidden_size: int = 32, projection_dim: int | None = None) -> dict:
    """CLIPTextConfig kwargs of a 2-layer text encoder matching ``tokenizer``'s ids."""
    config = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": tokenizer.model_max_length,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "hidden_act": "gelu",
    }
    if projection_dim is not None:
        config["projection_dim"] = projection_dim
    return config


def tiny_t5_encoder(tokenizer, d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config)


def tiny_vae(latent_channels: int = 4, **kwargs: Any):
    """A 2-level AutoencoderKL (8x fewer channels than SD's, a 2x downsampling: vae_scale_factor 2)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=32,
        **kwargs,
    )


# -- conditions -------------------------------------------------------------------------------------------


def split_prompts(conditions: Sequence[Any]) -> tuple[list[str], list[str | None]]:
    """Prompts ``str`` or ``{"prompt", "negative_prompt"?}`` -> (prompts, negative prompts or None)."""
    prompts: list[str] = []
    negatives: list[str | None] = []
    for c in conditions:
        if isinstance(c, str):
            prompts.append(c)
            negatives.append(None)
        elif isinstance(c, dict) and isinstance(c.get("prompt"), str):
            prompts.append(c["prompt"])
            negatives.append(c.get("negative_prompt"))
        else:
            raise ConfigurationError(
                f"a text-to-image condition is a prompt string or a dict {{'prompt': ..., 'negative_prompt': ...}}, "
                f"got {c!r}"
            )
    return prompts, negatives


class PipelineBackbone(Backbone):
    """A :class:`Backbone` around a diffusers pipeline (see the module docstring).

    Subclasses set ``components`` (pipeline attribute names, denoiser first), ``tiny_flavours`` (name ->
    builder of a tiny pipeline), and implement :meth:`encode_prompts` (or :meth:`encode_conditions`),
    :meth:`call_network`, :meth:`decode`, :meth:`encode_images` and :meth:`latent_shape`.
    """

    components: ClassVar[tuple[str, ...]] = ()
    tiny_flavours: ClassVar[dict[str, Callable[[], Any]]] = {}
    lora_target_modules = ["to_k", "to_q", "to_v", "to_out.0"]
    # the pipelines decide "do classifier-free guidance" by guidance_scale > 1 (the sampler by != 1)

    @classmethod
    def from_pipeline(cls, pipe: Any, **kwargs: Any) -> PipelineBackbone:
        """Wrap an existing pipeline object (e.g. one a test calls directly), sharing its modules."""
        self = cls.__new__(cls)
        self._setup(pipe, **kwargs)
        return self

    @classmethod
    def _load(cls, pretrained: str, pipeline_class: type, **kwargs: Any):
        if pretrained.startswith("tiny"):
            builder = lookup(cls.tiny_flavours, f"tiny {cls.__name__} flavour", pretrained)
            pipe = tiny_modules(builder)
            dtype = resolve_dtype(kwargs.get("torch_dtype"))
            return pipe.to(dtype=dtype) if dtype is not None else pipe
        return load_pipeline(pipeline_class, pretrained, **kwargs)

    def _setup(self, pipe: Any, *, scheduler: str | None = None, height: int | None = None, width: int | None = None):
        Backbone.__init__(self)
        for name in self.components:
            module = getattr(pipe, name, None)
            if module is None:
                continue
            if name != self.components[0]:
                module.requires_grad_(False)  # text encoders and the VAE are frozen; the denoiser is trained
            setattr(self, name, module.eval())
        self.__dict__["pipe"] = pipe  # a plain attribute: its modules are registered above
        if scheduler is not None:
            self.set_scheduler(scheduler)
        self.height, self.width = self._default_size(height, width)

    # -- scheduler and schedule -----------------------------------------------------------------------------
    @property
    def scheduler(self):
        """The pipeline's scheduler (a template: the scheduler sampler works on fresh copies of it)."""
        return self.pipe.scheduler

    def set_scheduler(self, name: str) -> None:
        """Replace the pipeline's scheduler by ``name`` (ddim, euler, dpmsolver++, unipc, flow_match_euler),
        built from the pipeline's scheduler config as in diffusers' docs; the pipeline object uses it too."""
        self.pipe.scheduler = make_scheduler(name, self.pipe.scheduler.config)

    @property
    def schedule(self):  # type: ignore[override]
        """VP schedule from the scheduler's ``alphas_cumprod`` (timestep k at t = (k + 1) / T)."""
        if self.__dict__.get("_schedule_of") is not self.scheduler:
            self.__dict__["_schedule"] = VPSchedule(self.scheduler.alphas_cumprod)
            self.__dict__["_schedule_of"] = self.scheduler
        return self.__dict__["_schedule"]

    @property
    def prediction_type(self) -> str:  # type: ignore[override]
        return self.scheduler.config.get("prediction_type", "epsilon")

    def set_timesteps(self, scheduler: Any, num_inference_steps: int, device: torch.device | None = None) -> None:
        """``scheduler.set_timesteps`` as the pipeline calls it for ``num_inference_steps``."""
        scheduler.set_timesteps(num_inference_steps, device=device)

    def scheduler_times(self, scheduler: Any) -> list[float]:
        """The times t of ``scheduler.timesteps`` in the one convention, then the terminal time 0."""
        num_train = self.scheduler.config.num_train_timesteps
        return [(float(k) + 1.0) / num_train for k in scheduler.timesteps] + [0.0]

    def network_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """Continuous t (B,) -> the (fractional) timestep the network was trained on."""
        return self.schedule.timestep(t)

    # -- the network ----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def call_network(self, x: torch.Tensor, timestep: torch.Tensor, cond: Cond) -> torch.Tensor:
        """One network call exactly as the pipeline makes it: ``x`` is the scheduler-scaled model input
        (B, *latent_shape), ``timestep`` the scheduler's own timestep (0-dim or (B,)); ``cond`` an encoded
        batch (its ``pos`` half is used) -> the model output of ``prediction_type`` (B, *latent_shape)."""
        raise NotImplementedError

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        return self.call_network(x_t, self.network_timestep(t), cond)

    # -- conditions -----------------------------------------------------------------------------------------
    def encode_prompts(self, prompts: list[str], negatives: list[str | None]) -> tuple[Cond, Cond]:
        """(prompt encodings, unconditional encodings), each a dict of (B, ...) tensors."""
        raise NotImplementedError

    def encode_conditions(self, conditions: Sequence[Any]) -> Cond:
        prompts, negatives = split_prompts(conditions)
        with torch.no_grad():
            pos, neg = self.encode_prompts(prompts, negatives)
        return {"pos": pos, "neg": neg}

    def null_conditions(self, cond: Cond) -> Cond:
        return {"pos": cond["neg"], "neg": cond["neg"]}

    # -- images ---------------------------------------------------------------------------------------------
    def _default_size(self, height: int | None, width: int | None) -> tuple[int, int]:
        raise NotImplementedError

    @property
    def vae_scale_factor(self) -> int:
        factor = getattr(self.pipe, "vae_scale_factor", None)  # DiTPipeline has none
        return int(factor or 2 ** (len(self.pipe.vae.config.block_out_channels) - 1))

    def _postprocess(self, image: torch.Tensor) -> torch.Tensor:
        """VAE output in [-1, 1] -> (B, 3, H, W) float32 in [0, 1], through the pipeline's image processor."""
        return self.pipe.image_processor.postprocess(image, output_type="pt").float()

    def _vae_encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the VAE posterior's mode (deterministic), unscaled."""
        vae = self.vae
        x = (images * 2 - 1).to(device=self.device, dtype=vae.dtype)
        return vae.encode(x).latent_dist.mode()
