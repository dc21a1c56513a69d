"""Reading TensorBoard event files back with TensorBoard's own reader, every event kept."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def events(log_dir: str | Path):
    """The EventAccumulator of ``log_dir`` (every scalar, image and tensor event, not a sample of them)."""
    from tensorboard.backend.event_processing.event_accumulator import (
        IMAGES,
        SCALARS,
        TENSORS,
        EventAccumulator,
    )

    accumulator = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0, IMAGES: 0, TENSORS: 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator, tag: str) -> dict[int, float]:
    """{step: value} of a scalar tag."""
    return {e.step: e.value for e in accumulator.Scalars(tag)}


def pixels(image_event) -> np.ndarray:
    """An image event's encoded PNG -> (H, W, 3) uint8."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(image_event.encoded_image_string)).convert("RGB"))


def text(accumulator, tag: str) -> str:
    """The last text summary logged under ``tag`` (``SummaryWriter.add_text``)."""
    return accumulator.Tensors(f"{tag}/text_summary")[-1].tensor_proto.string_val[0].decode()
