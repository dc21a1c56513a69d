"""Tiny diffusers pipelines (random weights, fixed seed), one per family and session, and parity helpers.

Each backbone fixture owns its pipeline object (``backbone.pipe``): parity tests call that very object, so
any difference is in the sampling, never in the weights.
"""

from __future__ import annotations

import pytest

from lightning_search.backbones.dit import DiTBackbone
from lightning_search.backbones.flux import FluxBackbone
from lightning_search.backbones.pixart import PixArtBackbone
from lightning_search.backbones.sd3 import StableDiffusion3Backbone
from lightning_search.backbones.stable_diffusion import StableDiffusionBackbone, StableDiffusionXLBackbone


@pytest.fixture(scope="session")
def sd() -> StableDiffusionBackbone:
    return StableDiffusionBackbone("tiny")


@pytest.fixture(scope="session")
def sdxl() -> StableDiffusionXLBackbone:
    return StableDiffusionXLBackbone("tiny")


@pytest.fixture(scope="session")
def pixart() -> PixArtBackbone:
    return PixArtBackbone("tiny", clean_caption=False)


@pytest.fixture(scope="session")
def pixart_alpha() -> PixArtBackbone:
    return PixArtBackbone("tiny-alpha", clean_caption=False)


@pytest.fixture(scope="session")
def flux() -> FluxBackbone:
    return FluxBackbone("tiny", height=32, width=32, max_sequence_length=32)


@pytest.fixture(scope="session")
def flux_schnell() -> FluxBackbone:
    return FluxBackbone("tiny-schnell", height=32, width=32, max_sequence_length=32)


@pytest.fixture(scope="session")
def dit() -> DiTBackbone:
    return DiTBackbone("tiny")


@pytest.fixture(scope="session")
def sd3() -> StableDiffusion3Backbone:
    return StableDiffusion3Backbone("tiny", max_sequence_length=32)
