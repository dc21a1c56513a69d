"""Loading diffusers pipelines and models from a hub id or a local folder, with errors a user can act on.

``from_pretrained`` fails deep inside huggingface_hub when there is no network, the id is misspelt or the model
is gated; here every such failure is a :class:`CheckpointError` naming the id and the one-line way out
(download once with ``huggingface-cli download ... --local-dir``, then pass the folder).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, TypedDict

import torch

from lightning_search.errors import CheckpointError, lookup

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


class PipelineLoading(TypedDict, total=False):
    """How ``from_pretrained`` loads a family's pipeline: the keyword arguments every pipeline backbone takes
    (``**loading``), the same in every family's config (``init_args: {torch_dtype: bfloat16, variant: fp16}``).

    torch_dtype: the weights' dtype (``float32``, ``float16``, ``bfloat16``; default: as stored);
    variant: the weights' file variant on the hub (``fp16``); revision: a branch, tag or commit of the hub repo;
    local_files_only: never reach the network (also ``HF_HUB_OFFLINE=1``).
    """

    torch_dtype: str | None
    variant: str | None
    revision: str | None
    local_files_only: bool


LOADING_DEFAULTS: dict[str, Any] = {"torch_dtype": None, "variant": None, "revision": None, "local_files_only": False}


def resolve_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """``"bfloat16"`` -> ``torch.bfloat16`` (None stays None: the weights' own dtype)."""
    if name is None or isinstance(name, torch.dtype):
        return name
    return lookup(DTYPES, "dtype", str(name).removeprefix("torch."))


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
