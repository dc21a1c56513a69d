"""Model families behind one interface (:class:`Backbone`); one file per family.

The diffusers families wrap their pipelines through ``pipeline.py`` (one load path, the VAE, schedulers),
the rectified-flow ones through ``flow.py`` as well; their offline tiny twins are all in ``tiny.py``.
"""

from lightning_search.backbones.base import (
    Backbone,
    cond_batch_size,
    cond_cat,
    cond_index,
    cond_repeat,
    cond_where,
)
from lightning_search.backbones.digits import DIGITS_SIZES, DigitsBackbone
from lightning_search.backbones.dit import DiTBackbone
from lightning_search.backbones.flux import FluxBackbone
from lightning_search.backbones.pipeline import PipelineBackbone
from lightning_search.backbones.pixart import PixArtBackbone
from lightning_search.backbones.schedules import FlowSchedule, Schedule, VPSchedule
from lightning_search.backbones.sd3 import StableDiffusion3Backbone
from lightning_search.backbones.shapes import SHAPES_SIZES, ShapesBackbone
from lightning_search.backbones.stable_diffusion import StableDiffusionBackbone, StableDiffusionXLBackbone

__all__ = [
    "DIGITS_SIZES",
    "SHAPES_SIZES",
    "Backbone",
    "DiTBackbone",
    "DigitsBackbone",
    "FluxBackbone",
    "PipelineBackbone",
    "PixArtBackbone",
    "StableDiffusion3Backbone",
    "ShapesBackbone",
    "StableDiffusionBackbone",
    "StableDiffusionXLBackbone",
    "FlowSchedule",
    "Schedule",
    "VPSchedule",
    "cond_cat",
    "cond_index",
    "cond_batch_size",
    "cond_repeat",
    "cond_where",
]
