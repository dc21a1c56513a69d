"""Reading and writing run folders: atomic files, records.jsonl, images."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file.

    ``fsync`` also survives a power loss; a killed process cannot lose a renamed file either way, so bulk
    outputs whose record is fsynced afterwards (sample PNGs) skip it: it is most of their cost.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def json_safe(value: Any) -> Any:
    """NaN / inf -> None, tensors -> lists, so that records are strict JSON."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def image_to_png_bytes(image: torch.Tensor) -> bytes:
    """(C, H, W) in [0, 1] -> PNG bytes (8-bit, grey for one channel)."""
    import io

    array = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    pil = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def load_image(path: str | Path) -> torch.Tensor:
    """PNG -> (C, H, W) float in [0, 1]."""
    array = np.asarray(Image.open(path))
    if array.ndim == 2:
        array = array[..., None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL file; a truncated last line (a killed writer) is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_records(run_dir: str | Path) -> list[dict]:
    """The records of a run (merged file and any per-rank shards), one per sample id, sorted by id."""
    predictions = Path(run_dir) / "predictions"
    by_id: dict[int, dict] = {}
    for path in [predictions / "records.jsonl", *sorted(predictions.glob("records.rank*.jsonl"))]:
        for record in read_jsonl(path):
            by_id.setdefault(int(record["sample_id"]), record)
    return [by_id[k] for k in sorted(by_id)]


def load_run_images(run_dir: str | Path, records: list[dict]) -> torch.Tensor:
    """(N, C, H, W) images of the records, in record order."""
    predictions = Path(run_dir) / "predictions"
    return torch.stack([load_image(predictions / r["image"]) for r in records])
