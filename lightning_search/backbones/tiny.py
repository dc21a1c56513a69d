"""The tiny twins: every family's diffusers pipeline built from small config dicts, offline, in seconds.

``pretrained="tiny"`` (and ``"tiny-<flavour>"``) builds these instead of downloading weights: the same diffusers
classes as the real checkpoints (pipeline, denoiser, text encoders, VAE, the published scheduler configs), with
few layers and channels and random weights drawn under a fixed seed (:func:`tiny_modules`), and tokenizers built
in code from Python objects (no files). Tests, CI recipes and the benchmarks' CPU runs use them; a family file
names its flavours (``tiny_flavours``) and holds only the real model's wrapper.

Sizes: 32 x 32 px images through a 2-level VAE (``vae_scale_factor`` 2), so latents are 16 x 16. Each builder
makes its modules in a fixed order from the one seeded generator: reordering them changes every twin's weights.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from functools import cache
from typing import Any

import torch

TINY_SEED = 0


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


# -- text encoders and the VAE ----------------------------------------------------------------------------


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


def _clip_text_encoder(tokenizer, hidden_size: int = 32, projection_dim: int | None = None):
    """A CLIPTextModel, or a CLIPTextModelWithProjection when ``projection_dim`` is given (SDXL's second, SD3's)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(**tiny_clip_text_config(tokenizer, hidden_size, projection_dim))
    return (CLIPTextModel if projection_dim is None else CLIPTextModelWithProjection)(config)


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


def _unet(**kwargs: Any):
    """A 2-level UNet2DConditionModel on 4 x 16 x 16 latents, cross-attention in the lower level."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        **kwargs,
    )


# -- Stable Diffusion 1.x / 2.x and SDXL ------------------------------------------------------------------


def tiny_sd_pipeline():
    """A random StableDiffusionPipeline at 32 x 32 px (latents 4 x 16 x 16), ~1 M parameters."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    tokenizer = tiny_clip_tokenizer()
    unet = _unet(cross_attention_dim=32, attention_head_dim=8)
    text_encoder = _clip_text_encoder(tokenizer)
    # SD's training schedule and inference spacing (scaled_linear betas, "leading" timesteps, offset 1)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)  # fmt: skip
    return StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_sdxl_pipeline():
    """A random StableDiffusionXLPipeline at 32 x 32 px with both text encoders and micro-conditioning."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    tokenizer = tiny_clip_tokenizer()
    tokenizer_2 = tiny_clip_tokenizer(pad_token="!")  # SDXL's second tokenizer pads with "!"
    unet = _unet(
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six time ids x 8 + pooled text (projection_dim)
        cross_attention_dim=64,  # both encoders' hidden states concatenated (32 + 32)
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")  # fmt: skip
    return StableDiffusionXLPipeline(
        vae=tiny_vae(force_upcast=True),
        text_encoder=_clip_text_encoder(tokenizer),
        text_encoder_2=_clip_text_encoder(tokenizer_2, projection_dim=32),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )


# -- PixArt-Alpha / -Sigma and DiT --------------------------------------------------------------------------

# the geometry the tiny PixArt, DiT and SD3 transformers share: 16 x 16 latents in 2 x 2 patches, 2 layers of 2
# heads of width 8
TINY_TRANSFORMER = {
    "sample_size": 16,
    "patch_size": 2,
    "num_layers": 2,
    "num_attention_heads": 2,
    "attention_head_dim": 8,
}


def _tiny_pixart(pipeline_name: str):
    import diffusers
    from diffusers import DPMSolverMultistepScheduler, PixArtTransformer2DModel

    tokenizer = tiny_t5_tokenizer()
    transformer = PixArtTransformer2DModel(
        **TINY_TRANSFORMER,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=16,
        out_channels=8,  # learned variance, as the real models
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    # PixArt's published scheduler: DPM-Solver++ (2nd order) on the linear-beta DDPM schedule
    scheduler = DPMSolverMultistepScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02)
    return getattr(diffusers, pipeline_name)(
        tokenizer=tokenizer,
        text_encoder=tiny_t5_encoder(tokenizer, 32),
        vae=tiny_vae(),
        transformer=transformer,
        scheduler=scheduler,
    )


def tiny_pixart_sigma_pipeline():
    """A random PixArtSigmaPipeline at 32 x 32 px (latents 4 x 16 x 16)."""
    return _tiny_pixart("PixArtSigmaPipeline")


def tiny_pixart_alpha_pipeline():
    """A random PixArtAlphaPipeline at 32 x 32 px."""
    return _tiny_pixart("PixArtAlphaPipeline")


def tiny_dit_pipeline():
    """A random DiTPipeline at 32 x 32 px (latents 4 x 16 x 16), 1,000 classes plus the null class."""
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    transformer = DiTTransformer2DModel(
        **TINY_TRANSFORMER,
        in_channels=4,
        out_channels=8,  # learned variance, as DiT-XL/2
        num_embeds_ada_norm=1000,  # must be 1000: the pipeline's null class is 1000
        norm_type="ada_norm_zero",
    )
    # facebook/DiT-XL-2-256's scheduler config (linear betas, 1000 steps, epsilon)
    scheduler = DDIMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, clip_sample=False)
    return DiTPipeline(transformer=transformer, vae=tiny_vae(), scheduler=scheduler)


# -- the rectified-flow families: FLUX.1 and SD3 / 3.5 --------------------------------------------------------


def _tiny_flux(guidance_embeds: bool, dynamic_shift: bool):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    tokenizer = tiny_clip_tokenizer()
    tokenizer_2 = tiny_t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels x a 2 x 2 patch
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 4, 8),
    )
    # FLUX.1-dev's scheduler config; schnell's has a fixed shift of 1
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0 if dynamic_shift else 1.0, use_dynamic_shifting=dynamic_shift,
                                                base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                                max_image_seq_len=4096)  # fmt: skip
    vae = tiny_vae(latent_channels=4, use_quant_conv=False, use_post_quant_conv=False,
                   scaling_factor=0.3611, shift_factor=0.1159)  # fmt: skip
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=_clip_text_encoder(tokenizer),
        tokenizer=tokenizer,
        text_encoder_2=tiny_t5_encoder(tokenizer_2, 32),
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


def tiny_flux_dev_pipeline():
    """A random FluxPipeline like FLUX.1-dev (guidance embedding, resolution-dependent shift), 32 x 32 px."""
    return _tiny_flux(guidance_embeds=True, dynamic_shift=True)


def tiny_flux_schnell_pipeline():
    """A random FluxPipeline like FLUX.1-schnell (no guidance embedding, no shift)."""
    return _tiny_flux(guidance_embeds=False, dynamic_shift=False)


def _tiny_sd3(sd35: bool):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    tokenizer, tokenizer_2 = tiny_clip_tokenizer(), tiny_clip_tokenizer(pad_token="!")  # CLIP-G pads with "!"
    tokenizer_3 = tiny_t5_tokenizer()
    # CLIP-L (16) + CLIP-G (32) hidden states are padded to T5's width (64), as 768 + 1280 are padded to 4096
    text_encoder, text_encoder_2 = _clip_text_encoder(tokenizer, 16, 16), _clip_text_encoder(tokenizer_2, 32, 32)
    transformer = SD3Transformer2DModel(
        **TINY_TRANSFORMER,
        in_channels=16,
        out_channels=16,
        joint_attention_dim=64,  # T5's d_model
        caption_projection_dim=16,
        pooled_projection_dim=16 + 32,  # both CLIP projections
        pos_embed_max_size=16,
        # SD3.5: RMS-normalised queries and keys, and MMDiT-X dual attention in the first blocks
        qk_norm="rms_norm" if sd35 else None,
        dual_attention_layers=(0,) if sd35 else (),
    )
    # SD3's VAE: 16 latent channels, no quant convs, its scaling and shift factors
    vae = tiny_vae(latent_channels=16, use_quant_conv=False, use_post_quant_conv=False,
                   scaling_factor=1.5305, shift_factor=0.0609)  # fmt: skip
    return StableDiffusion3Pipeline(
        transformer=transformer,
        # the scheduler config of stable-diffusion-3-medium-diffusers and 3.5-medium / -large
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
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
