"""Stable Diffusion 3 / 3.5 (SD3Transformer2DModel, two CLIP text encoders with projection + T5, a 16-channel VAE).

Rectified flow (Esser et al. 2024, "Scaling Rectified Flow Transformers"): ``x_t = (1 - t) x0 + t eps``
(FlowSchedule, t = sigma) and the MMDiT predicts the velocity ``eps - x0``. The pipeline's grid is
``FlowMatchEulerDiscreteScheduler`` with the fixed shift 3.0 of the SD3 / 3.5 scheduler configs; a scheduler
configured with ``use_dynamic_shifting`` gets the resolution-dependent ``mu`` the pipeline computes from the
image's token count. Classifier-free guidance is the pipeline's: the negative prompt ("" if none) in the same
batch, 2 NFEs per step. Prompt encoding (CLIP-L and CLIP-G hidden states concatenated and zero-padded to T5's
width, then T5's tokens after them; pooled = both CLIP projections), decoding
(``latents / scaling_factor + shift_factor``) and image post-processing are the pipeline's own methods.

``drop_t5=True`` loads the pipeline without T5 (``text_encoder_3=None``), as the pipeline allows: its T5 tokens
become zeros (``max_sequence_length`` of them), which saves ~9.5 GB at some cost in prompt following.
``scheduler`` swaps in DPM-Solver++ or UniPC on flow sigmas (``use_flow_sigmas``, ``flow_prediction``, the
pipeline's shift as ``flow_shift``), as diffusers' docs suggest for flow models.

Real models (GPU, bfloat16; weights of the transformer + T5-XXL 4.7B (~9.5 GB) + CLIP-L and CLIP-G (~1.6 GB)
+ VAE, before activations):
    StableDiffusion3Backbone("stabilityai/stable-diffusion-3.5-medium", torch_dtype="bfloat16")  # 2.5B, ~16 GB
    StableDiffusion3Backbone("stabilityai/stable-diffusion-3.5-large", torch_dtype="bfloat16")   # 8.1B, ~27 GB
    StableDiffusion3Backbone("stabilityai/stable-diffusion-3-medium-diffusers", torch_dtype="float16")  # 2B, ~15 GB
    StableDiffusion3Backbone(..., drop_t5=True)   # ~9.5 GB less (all three repositories are gated: accept the
                                                  # licence on the hub and `huggingface-cli login` first)
The model cards sample 3.5-medium with 40 steps at CFG 4.5, 3.5-large with 28 steps at CFG 3.5, 3-medium with
28 steps at CFG 7.0, all at 1024 x 1024.
"""

from __future__ import annotations

import inspect

import torch

from lightning_search.backbones.base import Cond
from lightning_search.backbones.pipeline import (
    SCHEDULER_NAMES,
    PipelineBackbone,
    make_scheduler,
    tiny_clip_text_config,
    tiny_clip_tokenizer,
    tiny_t5_encoder,
    tiny_t5_tokenizer,
    tiny_vae,
)
from lightning_search.backbones.schedules import FlowSchedule
from lightning_search.errors import ConfigurationError, lookup

# Schedulers that integrate a flow model: the pipeline's own, or multistep solvers on flow sigmas.
FLOW_SCHEDULERS = ("flow_match_euler", "dpmsolver++", "unipc")


def _tiny_sd3(sd35: bool):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tokenizer, tokenizer_2 = tiny_clip_tokenizer(), tiny_clip_tokenizer(pad_token="!")  # CLIP-G pads with "!"
    tokenizer_3 = tiny_t5_tokenizer()
    # CLIP-L (16) + CLIP-G (32) hidden states are padded to T5's width (64), as 768 + 1280 are padded to 4096
    text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(**tiny_clip_text_config(tokenizer, 16, 16)))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**tiny_clip_text_config(tokenizer_2, 32, 32)))
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=64,  # T5's d_model
        caption_projection_dim=16,
        pooled_projection_dim=16 + 32,  # both CLIP projections
        pos_embed_max_size=16,
        # SD3.5: RMS-normalised queries and keys, and MMDiT-X dual attention in the first blocks
        qk_norm="rms_norm" if sd35 else None,
        dual_attention_layers=(0,) if sd35 else (),
    )
    # the scheduler config of stable-diffusion-3-medium-diffusers and 3.5-medium / -large
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    # SD3's VAE: 16 latent channels, no quant convs, its scaling and shift factors
    vae = tiny_vae(
        latent_channels=16, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=1.5305, shift_factor=0.0609
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        text_encoder_3=tiny_t5_encoder(tokenizer_3, 64),
        tokenizer_3=tokenizer_3,
    )


def tiny_sd35_pipeline():
    """A random StableDiffusion3Pipeline like SD3.5 (qk RMS norm, a dual-attention block), 32 x 32 px."""
    return _tiny_sd3(sd35=True)


def tiny_sd3_pipeline():
    """A random StableDiffusion3Pipeline like SD3-medium (plain joint attention), 32 x 32 px."""
    return _tiny_sd3(sd35=False)


class StableDiffusion3Backbone(PipelineBackbone):
    """Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``).

    Args:
        pretrained: hub id or folder of a StableDiffusion3Pipeline, ``tiny`` (3.5-like) or ``tiny-sd3``.
        scheduler: replace the pipeline's scheduler: flow_match_euler, dpmsolver++ or unipc (the last two on
            flow sigmas); None keeps it.
        height, width: image size (default: the transformer's sample size x 8, 1024; multiples of 16).
        max_sequence_length: T5 tokens (the pipeline's default 256).
        drop_t5: load without the T5 encoder (its tokens are zeros, as the pipeline does).
        clip_skip: the pipeline's ``clip_skip`` (applied to the prompt, not the negative, as the pipeline).
        torch_dtype, variant, revision, local_files_only: passed to ``from_pretrained``.
    """

    components = ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
    tiny_flavours = {"tiny": tiny_sd35_pipeline, "tiny-sd35": tiny_sd35_pipeline, "tiny-sd3": tiny_sd3_pipeline}
    # diffusers' examples/dreambooth/train_dreambooth_lora_sd3.py default (no --lora_layers): the joint attention
    # projections of both streams (huggingface/diffusers@58eb52c, lines 1248-1260)
    lora_target_modules = [
        "attn.add_k_proj",
        "attn.add_q_proj",
        "attn.add_v_proj",
        "attn.to_add_out",
        "attn.to_k",
        "attn.to_out.0",
        "attn.to_q",
        "attn.to_v",
    ]

    def __init__(
        self,
        pretrained: str = "tiny",
        scheduler: str | None = None,
        height: int | None = None,
        width: int | None = None,
        max_sequence_length: int = 256,
        drop_t5: bool = False,
        clip_skip: int | None = None,
        torch_dtype: str | None = None,
        variant: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
    ) -> None:
        from diffusers import StableDiffusion3Pipeline

        no_t5 = {"text_encoder_3": None, "tokenizer_3": None} if drop_t5 else {}
        pipe = self._load(
            pretrained,
            StableDiffusion3Pipeline,
            torch_dtype=torch_dtype,
            variant=variant,
            revision=revision,
            local_files_only=local_files_only,
            **no_t5,
        )
        if drop_t5 and pipe.text_encoder_3 is not None:  # a tiny twin is built whole
            pipe.register_modules(**no_t5)
        self._setup(pipe, scheduler=scheduler, height=height, width=width,
                    max_sequence_length=max_sequence_length, clip_skip=clip_skip)  # fmt: skip

    def _setup(self, pipe, **kwargs):
        max_sequence_length = kwargs.pop("max_sequence_length", 256)
        clip_skip = kwargs.pop("clip_skip", None)
        super()._setup(pipe, **kwargs)
        self.max_sequence_length, self.clip_skip = max_sequence_length, clip_skip
        self._flow = FlowSchedule()

    @property
    def schedule(self):  # type: ignore[override]
        return self._flow

    @property
    def prediction_type(self) -> str:  # type: ignore[override]
        return "velocity"

    def _default_size(self, height, width):
        default = self.pipe.default_sample_size * self.vae_scale_factor
        height, width = height or default, width or default
        multiple = self.vae_scale_factor * self.pipe.patch_size
        if height % multiple or width % multiple:
            raise ConfigurationError(f"SD3 needs height and width multiples of {multiple}, got {height}x{width}")
        return height, width

    @property
    def latent_shape(self) -> tuple[int, ...]:
        f = self.vae_scale_factor
        return (self.transformer.config.in_channels, self.height // f, self.width // f)

    # -- the scheduler grid ---------------------------------------------------------------------------------
    def set_scheduler(self, name: str) -> None:
        """flow_match_euler, or DPM-Solver++ / UniPC on flow sigmas with the pipeline scheduler's shift."""
        import diffusers

        cls = getattr(diffusers, SCHEDULER_NAMES[lookup({n: n for n in FLOW_SCHEDULERS}, "flow scheduler", name)])
        config = dict(self.pipe.scheduler.config)
        shift = config.get("shift", config.get("flow_shift", 3.0))
        if name == "flow_match_euler":
            config["shift"] = shift
        else:
            config.update(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift)
        # keep only the new class's own settings (diffusers warns about every foreign key, at each copy)
        accepted = inspect.signature(cls.__init__).parameters
        self.pipe.scheduler = make_scheduler(name, {k: v for k, v in config.items() if k in accepted})

    def set_timesteps(self, scheduler, num_inference_steps: int, device=None) -> None:
        """As the pipeline: ``set_timesteps(n)``, with ``mu`` from the token count under dynamic shifting."""
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

        config, kwargs = scheduler.config, {}
        if config.get("use_dynamic_shifting", None):
            _, h, w = self.latent_shape
            p = self.transformer.config.patch_size
            kwargs["mu"] = calculate_shift(
                (h // p) * (w // p),
                config.get("base_image_seq_len", 256),
                config.get("max_image_seq_len", 4096),
                config.get("base_shift", 0.5),
                config.get("max_shift", 1.16),  # the SD3 pipeline's default (FLUX's is 1.15)
            )
        scheduler.set_timesteps(num_inference_steps, device=device, **kwargs)

    def scheduler_times(self, scheduler) -> list[float]:
        return [float(s) for s in scheduler.sigmas]  # t = sigma; the last is 0

    def network_timestep(self, t: torch.Tensor) -> torch.Tensor:
        return t * float(self.scheduler.config.num_train_timesteps)  # the scheduler's timestep = sigma x 1000

    # -- conditions -----------------------------------------------------------------------------------------
    def encode_prompts(self, prompts: list[str], negatives: list[str | None]) -> tuple[Cond, Cond]:
        pe, ne, pooled, npooled = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=[n or "" for n in negatives],  # the pipeline's default negative is ""
            clip_skip=self.clip_skip,
            max_sequence_length=self.max_sequence_length,
        )
        return {"prompt_embeds": pe, "pooled": pooled}, {"prompt_embeds": ne, "pooled": npooled}

    # -- the network ----------------------------------------------------------------------------------------
    def call_network(self, x: torch.Tensor, timestep: torch.Tensor, cond: Cond) -> torch.Tensor:
        """x (B, C, h, w); timestep = sigma x 1000 (the scheduler's), as the pipeline passes it -> velocity."""
        pos, net = cond["pos"], self.transformer
        timestep = torch.as_tensor(timestep, device=x.device)
        timestep = (timestep[None] if timestep.dim() == 0 else timestep).expand(x.shape[0])
        return net(
            hidden_states=x.to(net.dtype),
            timestep=timestep,
            encoder_hidden_states=pos["prompt_embeds"],
            pooled_projections=pos["pooled"],
            joint_attention_kwargs=None,
            return_dict=False,
        )[0]

    # -- images ---------------------------------------------------------------------------------------------
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 (B, C, h, w) -> images (B, 3, H, W) in [0, 1]: ``vae.decode(x0 / scaling_factor + shift_factor)``."""
        vae = self.vae
        latents = x0.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
        return self._postprocess(vae.decode(latents, return_dict=False)[0])

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> x0 = (VAE mode - shift_factor) x scaling_factor: decode's inverse."""
        vae = self.vae
        return (self._vae_encode(images) - vae.config.shift_factor) * vae.config.scaling_factor
