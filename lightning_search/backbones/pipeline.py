"""What every backbone built from a diffusers pipeline shares: one load path, schedulers, conditions, the VAE.

A :class:`PipelineBackbone` owns a diffusers pipeline object (``self.pipe``) and registers its networks as
submodules (the denoiser first, so that ``next(backbone.parameters())`` gives the sampling dtype and device),
so Lightning moves and casts them with the module. Prompt encoding, micro-conditioning, latent packing and
decoding call the pipeline's own methods, so they are the pipeline's behaviour by construction; only the
denoising loop lives in ``lightning_search.sampling`` (``solver="scheduler"`` drives the pipeline's own
scheduler and reproduces ``pipe(...)``; the framework's own solvers use :meth:`Backbone.forward` in the one
time convention).

Loading: ``pretrained`` is a hub id (``stabilityai/stable-diffusion-xl-base-1.0``), a local folder written
by ``save_pretrained`` / ``huggingface-cli download --local-dir``, or ``"tiny"`` (and, for some families,
``"tiny-<flavour>"``): the same diffusers classes built from small config dicts (``backbones/tiny.py``).
A family states its pipeline class(es), its tiny flavours and the constructor arguments that pick components;
its typed ``__init__`` (what ``LightningCLI``'s ``init_args`` configure) is one call, ``self._build(locals())``.

Conditions are prompts (``str``) or dicts ``{"prompt": ..., "negative_prompt": ...}`` (both JSON records);
an encoded batch is ``{"pos": ..., "neg": ...}``: the prompt's encoding and the encoding the pipeline uses
for the unconditional half of classifier-free guidance (the negative prompt, "" or zeros, as the pipeline
does it). :meth:`null_conditions` swaps the negative in.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, ClassVar

import torch

from lightning_search.backbones.base import Backbone, Cond
from lightning_search.backbones.loading import (
    DTYPES,
    LOADING_DEFAULTS,
    load_component,
    load_pipeline,
    resolve_dtype,
)
from lightning_search.backbones.schedules import VPSchedule
from lightning_search.backbones.tiny import (
    TINY_SEED,
    tiny_clip_text_config,
    tiny_clip_tokenizer,
    tiny_modules,
    tiny_t5_encoder,
    tiny_t5_tokenizer,
    tiny_vae,
)
from lightning_search.errors import CheckpointError, ConfigurationError, lookup

# the loading helpers and tiny-twin parts, importable from here as before they had files of their own
__all__ = [
    "DTYPES", "SCHEDULER_NAMES", "TINY_SEED", "PipelineBackbone", "load_component", "load_pipeline", "make_scheduler",
    "resolve_dtype", "split_prompts", "tiny_clip_text_config", "tiny_clip_tokenizer", "tiny_modules",
    "tiny_t5_encoder", "tiny_t5_tokenizer", "tiny_vae", "upcast_vae",
]  # fmt: skip

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

# constructor arguments passed through to ``from_pretrained`` (``**loading``); the rest are settings
LOAD_ARGUMENTS = tuple(LOADING_DEFAULTS)
BASE_SETTINGS: dict[str, Any] = {"scheduler": None, "height": None, "width": None}


def make_scheduler(name: str, config: Any):
    """A scheduler of the named class built from another scheduler's config (the usual diffusers swap)."""
    import diffusers

    cls = getattr(diffusers, lookup(SCHEDULER_NAMES, "scheduler", name))
    overrides = {"algorithm_type": ALGORITHM_TYPES[name]} if name in ALGORITHM_TYPES else {}
    return cls.from_config(config, **overrides)


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


@contextmanager
def upcast_vae(vae) -> Iterator[bool]:
    """Run the block with the VAE in float32 if it is float16 with ``force_upcast`` (SDXL's VAE overflows in
    float16), then cast it back, even on error; yields whether it upcast. The SDXL pipelines do the same around
    decoding (``upcast_vae`` in ``__call__``) and encoding (``_encode_vae_image`` of img2img / inpainting), and
    diffusers' SDXL training scripts keep that VAE in float32 to encode."""
    upcast = vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
    if upcast:
        vae.to(torch.float32)
    try:
        yield upcast
    finally:
        if upcast:
            vae.to(torch.float16)


class PipelineBackbone(Backbone):
    """A :class:`Backbone` around a diffusers pipeline (see the module docstring).

    A family sets ``pipeline_classes`` (the diffusers pipeline class names a checkpoint of it may hold: one is
    loaded as itself, several through ``DiffusionPipeline`` and checked), ``components`` (pipeline attribute
    names, denoiser first), ``tiny_flavours`` (name -> builder of a tiny pipeline), optionally
    ``pretrained_kwargs`` (fixed ``from_pretrained`` arguments) and ``component_arguments`` (constructor
    arguments that :meth:`_replacements` turns into pipeline components), and implements
    :meth:`encode_prompts` (or :meth:`encode_conditions`), :meth:`call_network` and :meth:`_native_size`.

    Every other constructor argument is a *setting*: stored as the attribute of its name (the default taken from
    the ``__init__`` signature, so :meth:`from_pipeline` and the constructor agree), then :meth:`_configure`
    derives what depends on the pipeline.
    """

    pipeline_classes: ClassVar[tuple[str, ...]] = ()
    components: ClassVar[tuple[str, ...]] = ()
    tiny_flavours: ClassVar[dict[str, Callable[[], Any]]] = {}
    pretrained_kwargs: ClassVar[dict[str, Any]] = {}
    component_arguments: ClassVar[tuple[str, ...]] = ()
    force_upcast_vae: ClassVar[bool] = False  # SDXL: the VAE in float32 when float16 would overflow
    lora_target_modules = ["to_k", "to_q", "to_v", "to_out.0"]
    # the pipelines decide "do classifier-free guidance" by guidance_scale > 1 (the sampler by != 1)

    # -- loading ----------------------------------------------------------------------------------------------
    @classmethod
    def from_pipeline(cls, pipe: Any, **settings: Any) -> PipelineBackbone:
        """Wrap an existing pipeline object (e.g. one a test calls directly), sharing its modules."""
        self = cls.__new__(cls)
        self._setup(pipe, **settings)
        return self

    def _build(self, arguments: dict[str, Any]) -> None:
        """The body of every family's ``__init__``, given its ``locals()``: load the pipeline, then wrap it."""
        settings = {k: v for k, v in arguments.items() if k not in ("self", "__class__")}
        pretrained = settings.pop("pretrained")
        loading = settings.pop("loading", None) or {}
        unknown = sorted(set(loading) - set(LOADING_DEFAULTS))
        if unknown:
            raise ConfigurationError(
                f"{type(self).__name__} has no setting {', '.join(unknown)}; its loading settings: "
                f"{', '.join(LOADING_DEFAULTS)}"
            )
        load = {**LOADING_DEFAULTS, **loading}
        chosen = {k: settings.pop(k) for k in self.component_arguments}
        replacements = self._replacements(load["torch_dtype"], **chosen)
        self._setup(self._load(pretrained, replacements, **load), **settings)

    @classmethod
    def _replacements(cls, torch_dtype: str | None, **chosen: Any) -> dict[str, Any]:
        """Pipeline components chosen by ``component_arguments`` (a loaded model, or None to leave one out)."""
        return {}

    @classmethod
    def _load(cls, pretrained: str, replacements: dict[str, Any], **load: Any):
        """The tiny twin of that flavour, or ``from_pretrained`` of the family's pipeline class."""
        import diffusers

        if pretrained.startswith("tiny"):
            pipe = tiny_modules(lookup(cls.tiny_flavours, f"tiny {cls.__name__} flavour", pretrained))
            if replacements:
                pipe.register_modules(**replacements)
            dtype = resolve_dtype(load.get("torch_dtype"))
            return pipe.to(dtype=dtype) if dtype is not None else pipe
        classes = tuple(getattr(diffusers, name) for name in cls.pipeline_classes)
        loader = classes[0] if len(classes) == 1 else diffusers.DiffusionPipeline
        pipe = load_pipeline(loader, pretrained, **load, **cls.pretrained_kwargs, **replacements)
        if not isinstance(pipe, classes):  # DiffusionPipeline builds the class model_index.json names
            raise CheckpointError(
                f"{pretrained!r} holds a {type(pipe).__name__}; {cls.__name__} takes {' or '.join(cls.pipeline_classes)}"
            )
        return pipe

    @classmethod
    def _settings(cls, given: dict[str, Any]) -> dict[str, Any]:
        """``given`` over the defaults of the family's ``__init__`` (``scheduler``, ``height``, ``width`` always)."""
        skip = {"self", "pretrained", *LOAD_ARGUMENTS, *cls.component_arguments}
        signature = inspect.signature(cls.__init__).parameters.values()
        defaults = {**BASE_SETTINGS, **{p.name: p.default for p in signature if p.name not in skip
                                        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}}  # fmt: skip
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise ConfigurationError(
                f"{cls.__name__} has no setting {', '.join(unknown)}; its settings: {', '.join(defaults)}"
            )
        return {**defaults, **given}

    def _setup(self, pipe: Any, **settings: Any) -> None:
        values = self._settings(settings)
        Backbone.__init__(self)
        for name in self.components:
            module = getattr(pipe, name, None)
            if module is None:
                continue
            if name != self.components[0]:
                module.requires_grad_(False)  # text encoders and the VAE are frozen; the denoiser is trained
            setattr(self, name, module.eval())
        self.__dict__["pipe"] = pipe  # a plain attribute: its modules are registered above
        scheduler, height, width = (values.pop(k) for k in BASE_SETTINGS)
        for name, value in values.items():
            setattr(self, name, value)
        if scheduler is not None:
            self.set_scheduler(scheduler)
        self.height, self.width = self._default_size(height, width)
        self._configure()

    def _configure(self) -> None:
        """Settings derived from the pipeline and the other settings (after size and scheduler are set)."""

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
        batch (its ``pos`` half is used) -> the model output of ``prediction_type`` (B, *latent_shape).

        The network is called with ``return_dict=False`` and returns a tensor, so forward hooks and full
        backward hooks on it see the graph (a dataclass output hides it from ``register_full_backward_hook``).
        """
        raise NotImplementedError

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        return self.call_network(x_t, self.network_timestep(t), cond)

    @staticmethod
    def _batch_timestep(timestep: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A 0-dim or (B,) timestep -> (B,) on x's device, as the pipelines broadcast ``t`` to the batch."""
        timestep = torch.as_tensor(timestep, device=x.device)
        return (timestep[None] if timestep.dim() == 0 else timestep).expand(x.shape[0])

    @staticmethod
    def _drop_learned_variance(out: torch.Tensor, net: torch.nn.Module) -> torch.Tensor:
        """PixArt and DiT predict (epsilon, variance) stacked on channels: keep epsilon, as their pipelines."""
        channels = net.config.in_channels
        return out[:, :channels] if net.config.out_channels // 2 == channels else out

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

    # -- images and latents -----------------------------------------------------------------------------------
    def _native_size(self) -> tuple[int, int]:
        """(default image size in pixels, the multiple height and width must be)."""
        raise NotImplementedError

    def _default_size(self, height: int | None, width: int | None) -> tuple[int, int]:
        default, multiple = self._native_size()
        height, width = height or default, width or default
        if height % multiple or width % multiple:
            raise ConfigurationError(
                f"{type(self).__name__} needs height and width multiples of {multiple}, got {height}x{width}"
            )
        return height, width

    @property
    def vae_scale_factor(self) -> int:
        factor = getattr(self.pipe, "vae_scale_factor", None)  # DiTPipeline has none
        return int(factor or 2 ** (len(self.pipe.vae.config.block_out_channels) - 1))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(the denoiser's input channels, height / f, width / f) with f the VAE's downsampling."""
        f = self.vae_scale_factor
        return (getattr(self, self.components[0]).config.in_channels, self.height // f, self.width // f)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 (B, *latent_shape) -> images (B, 3, H, W) in [0, 1]: ``vae.decode`` of the unscaled latents, then the
        pipeline's image processor (SDXL: in a float32 VAE where float16 would overflow, as its pipeline)."""
        vae = self.vae
        with upcast_vae(vae) if self.force_upcast_vae else nullcontext():
            image = vae.decode(self._unscale_latents(x0.to(vae.dtype)), return_dict=False)[0]
        return self._postprocess(image)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> x0 (B, *latent_shape) in the VAE's dtype: the posterior mode, scaled
        as decode's inverse (SDXL: encoded in float32 where float16 would overflow, as decoding)."""
        vae = self.vae
        dtype = vae.dtype
        with upcast_vae(vae) if self.force_upcast_vae else nullcontext():
            z = self._vae_encode(images)
        return self._scale_latents(z.to(dtype))  # as the pipelines' _encode_vae_image: back in the VAE's dtype

    def _latents_mean_std(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        config = self.vae.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is None or std is None:
            return None, None
        return torch.tensor(mean).view(1, -1, 1, 1).to(like), torch.tensor(std).view(1, -1, 1, 1).to(like)

    def _unscale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """x0 -> what the VAE decodes, as the pipelines write it: ``x0 * std / scaling_factor + mean`` for a VAE
        with latents_mean/std (SDXL's pipeline), else ``x0 / scaling_factor (+ shift_factor)`` (SD3, FLUX)."""
        config = self.vae.config
        mean, std = self._latents_mean_std(latents)
        if mean is not None:
            return latents * std / config.scaling_factor + mean
        latents = latents / config.scaling_factor
        shift = getattr(config, "shift_factor", None)
        return latents if shift is None else latents + shift

    def _scale_latents(self, z: torch.Tensor) -> torch.Tensor:
        """The VAE posterior's mode -> x0: the inverse of :meth:`_unscale_latents`."""
        config = self.vae.config
        mean, std = self._latents_mean_std(z)
        if mean is not None:
            return (z - mean) * config.scaling_factor / std
        shift = getattr(config, "shift_factor", None)
        return (z if shift is None else z - shift) * config.scaling_factor

    def _postprocess(self, image: torch.Tensor) -> torch.Tensor:
        """VAE output in [-1, 1] -> (B, 3, H, W) float32 in [0, 1], through the pipeline's image processor."""
        return self.pipe.image_processor.postprocess(image, output_type="pt").float()

    def _vae_encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the VAE posterior's mode (deterministic), unscaled."""
        vae = self.vae
        x = (images * 2 - 1).to(device=self.device, dtype=vae.dtype)
        return vae.encode(x).latent_dist.mode()
