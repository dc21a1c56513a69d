"""Checkpoint files, checked before they are loaded and loaded safely (``weights_only=True``): an empty,
truncated or foreign file is one clear error naming it, not a traceback from deep inside torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lightning_search.errors import CheckpointError


def check_checkpoint_file(path: str | Path, what: str = "checkpoint") -> Path:
    """A checkpoint path that exists, is not empty and is a whole file of its format (torch's zip archive or
    safetensors), checked without loading it: a truncated download or a stray file is one clear error."""
    import zipfile

    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} not found")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{what} {str(path)!r} is empty (0 bytes): a failed save or copy; make it again")
    with open(path, "rb") as f:
        head = f.read(8)
    if path.suffix == ".safetensors":
        header = int.from_bytes(head, "little") if len(head) == 8 else size
        if header + 8 > size:
            raise CheckpointError(f"{what} {str(path)!r} is truncated or not a safetensors file; make it again")
        return path
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; its index sits at the end of the file
        kind = "truncated: its end is missing" if head.startswith(b"PK") else "not a PyTorch checkpoint"
        raise CheckpointError(f"{what} {str(path)!r} ({size} bytes) is {kind}; make it again or point to another")
    return path


def load_checkpoint(
    path: str | Path, what: str = "checkpoint", map_location: Any = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a checked file; anything torch cannot read is a CheckpointError.
    ``mmap``: map the tensors instead of reading them (to look at a big checkpoint's metadata)."""
    path = check_checkpoint_file(path, what)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # pickle, zip and unpickler errors of many types
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{what} {str(path)!r} cannot be read ({first}); make it again or point to another"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{what} {str(path)!r} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint
