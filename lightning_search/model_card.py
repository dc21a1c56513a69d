"""Model cards for adapter folders, and an opt-in push to the Hugging Face hub.

An adapter folder (``pytorch_lora_weights.safetensors``, diffusers' LoRA format) gets a ``README.md`` in the
hub's model-card format: YAML metadata (``base_model``, ``library_name: diffusers``, ``tags``, ``pipeline_tag``)
that the hub indexes, then what a reader needs to reproduce or use it: the base model, the objective and its
settings, the data, the training steps, the metrics, and the command that made it. Written with
``huggingface_hub.ModelCard`` (the library the hub itself uses), so it renders there as any diffusers LoRA.

Pushing is off unless asked for (``push_to_hub``), needs a token in the environment (``HF_TOKEN``, read by
``huggingface_hub``, never passed through configs or logs) and uploads the folder with ``upload_folder``.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_search.errors import CheckpointError

log = logging.getLogger(__name__)

CARD_FILE = "README.md"


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that is running, as a shell line (``lightning-search fit --config ...``)."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).name in ("cli.py", "__main__.py", "lightning-search"):
        argv[0] = "lightning-search"
    return " ".join(shlex.quote(a) for a in argv)


def _table(values: Mapping[str, Any]) -> str:
    if not values:
        return "_none recorded_"
    rows = ["| | |", "|---|---|"]
    for key, value in values.items():
        shown = (
            f"{value:.4g}"
            if isinstance(value, float)
            else json.dumps(value)
            if isinstance(value, (dict, list))
            else value
        )
        rows.append(f"| {key} | {shown} |")
    return "\n".join(rows)


def write_model_card(
    folder: str | Path,
    *,
    base_model: str,
    pipeline: str | None = None,
    objective: str,
    objective_settings: Mapping[str, Any] | None = None,
    lora: Mapping[str, Any] | None = None,
    data: str | None = None,
    steps: int | None = None,
    metrics: Mapping[str, Any] | None = None,
    command: str | None = None,
) -> Path:
    """Write ``<folder>/README.md`` -> its path. ``base_model``: the hub id or folder the adapter goes on."""
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    tags = ["lora", "diffusers", "lightning-search", objective.lower()]
    card_data = ModelCardData(
        base_model=base_model if "/" in base_model and not Path(base_model).exists() else None,
        library_name="diffusers",
        tags=tags,
        pipeline_tag="text-to-image" if pipeline and "Pipeline" in pipeline and "DiT" not in pipeline else None,
    )
    source = repr(base_model) if "/" in base_model else "<the base pipeline>"
    load = (
        f"```python\nfrom diffusers import DiffusionPipeline\n\npipe = DiffusionPipeline.from_pretrained({source})\n"
        f'pipe.load_lora_weights("<this folder or repo>")\n```'
        if pipeline
        else "```python\nfrom lightning_search import DiffusionModule\n\n"
        'DiffusionModule(backbone=..., lora_path="<this folder>")\n```'
    )
    body = f"""
# LoRA adapter: {objective} on {base_model}

Trained with lightning-search ({objective} through `lightning-search fit`).

- **Base model:** `{base_model}`{f" (`{pipeline}`)" if pipeline else ""}
- **Objective:** {objective}
- **Data:** {data or "_not recorded_"}
- **Training steps:** {steps if steps is not None else "_not recorded_"}

## Objective settings

{_table(dict(objective_settings or {}))}

## LoRA

{_table(dict(lora or {}))}

## Metrics at the end of training

{_table(dict(metrics or {}))}

## How it was made

```bash
{command or command_line()}
```

## How to use it

{load}
"""
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")
    path = folder / CARD_FILE
    folder.mkdir(parents=True, exist_ok=True)
    card.save(str(path))
    return path


def push_folder(folder: str | Path, repo_id: str, private: bool = True) -> str:
    """Upload the adapter folder to the hub repo ``repo_id`` (created if needed) -> the repo's URL.

    The token comes from the environment (``HF_TOKEN``) or ``huggingface-cli login``, as huggingface_hub reads it.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="Upload LoRA adapter")
    except Exception as err:  # offline, no token, no permission: say so in one line
        raise CheckpointError(
            f"could not push {str(folder)!r} to the hub repo {repo_id!r} ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}); set HF_TOKEN or run `huggingface-cli login`, or leave push_to_hub off"
        ) from err
    log.info("pushed %s to https://huggingface.co/%s", folder, repo_id)
    return f"https://huggingface.co/{repo_id}"
