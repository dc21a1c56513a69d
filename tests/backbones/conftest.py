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

CREATED: list = []  # (session backbone, its scheduler as built)


def _created(backbone):
    CREATED.append((backbone, backbone.pipe.scheduler))
    return backbone


@pytest.fixture(scope="session")
def sd() -> StableDiffusionBackbone:
    return _created(StableDiffusionBackbone("tiny"))


@pytest.fixture(scope="session")
def sdxl() -> StableDiffusionXLBackbone:
    return _created(StableDiffusionXLBackbone("tiny"))


@pytest.fixture(scope="session")
def pixart() -> PixArtBackbone:
    return _created(PixArtBackbone("tiny", clean_caption=False))


@pytest.fixture(scope="session")
def pixart_alpha() -> PixArtBackbone:
    return _created(PixArtBackbone("tiny-alpha", clean_caption=False))


@pytest.fixture(scope="session")
def flux() -> FluxBackbone:
    return _created(FluxBackbone("tiny", height=32, width=32, max_sequence_length=32))


@pytest.fixture(scope="session")
def flux_schnell() -> FluxBackbone:
    return _created(FluxBackbone("tiny-schnell", height=32, width=32, max_sequence_length=32))


@pytest.fixture(scope="session")
def dit() -> DiTBackbone:
    return _created(DiTBackbone("tiny"))


@pytest.fixture(scope="session")
def sd3() -> StableDiffusion3Backbone:
    return _created(StableDiffusion3Backbone("tiny", max_sequence_length=32))


@pytest.fixture(autouse=True)
def _restore_schedulers():
    """Tests swap the session backbones' schedulers (``set_scheduler``): put each one back afterwards, so no
    test depends on the order the suite runs in."""
    yield
    for backbone, scheduler in CREATED:
        backbone.pipe.scheduler = scheduler
