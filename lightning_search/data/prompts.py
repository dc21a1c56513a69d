"""Prompt sets for text-to-image prediction, read with Hugging Face ``datasets``.

Built in (shipped in ``lightning_search/data/prompts/``, sources and licences in ``SOURCES.md`` there):
``drawbench`` (200 prompts, 11 categories; Saharia et al. 2022) and ``t2i_compbench`` (the 2,400 validation
prompts of T2I-CompBench, 8 categories; Huang et al. 2023, MIT). Any CSV / JSONL / JSON / parquet file or hub
data set with a prompt column works the same way.

Sample ids are stable: prompt row r of the source (its position before any filtering) with sample j of
``samples_per_prompt`` has id ``r * samples_per_prompt + j``. Filtering by category or limiting the number
of prompts therefore never renumbers the samples that remain, so runs can be sharded, resumed and compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from lightning_search.data.conditions import ConditionDataModule, ConditionDataset
from lightning_search.errors import ConfigurationError, UnknownNameError

PROMPT_DIR = Path(__file__).parent / "prompts"
BUILTIN_PROMPT_SETS: dict[str, str] = {"drawbench": "drawbench.csv", "t2i_compbench": "t2i_compbench_val.csv"}
FILE_FORMATS: dict[str, str] = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def load_prompt_table(source: str, split: str = "train", revision: str | None = None):
    """A ``datasets.Dataset`` for a built-in name, a local file, or a hub data set id."""
    import datasets

    if source in BUILTIN_PROMPT_SETS:
        path = PROMPT_DIR / BUILTIN_PROMPT_SETS[source]
        return datasets.load_dataset("csv", data_files=str(path), split="train")
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix in FILE_FORMATS:
        if not path.is_file():
            raise ConfigurationError(f"prompt file {str(path)!r} does not exist")
        return datasets.load_dataset(FILE_FORMATS[suffix], data_files=str(path), split="train")
    if "/" not in source:
        raise UnknownNameError("prompt set", source, BUILTIN_PROMPT_SETS)
    try:
        return datasets.load_dataset(source, split=split, revision=revision)
    except Exception as err:  # datasets raises many types (offline, missing split, gated)
        raise ConfigurationError(
            f"could not load the hub data set {source!r} (split {split!r}): {str(err).splitlines()[0][:300]}. "
            f"Offline, download it once (`huggingface-cli download {source} --repo-type dataset --local-dir <folder>`) "
            "and pass one of its CSV / JSONL / parquet files as the source"
        ) from err


class PromptDataModule(ConditionDataModule):
    """Prompts to sample for (``lightning-search predict``), each ``samples_per_prompt`` times.

    Args:
        source: ``drawbench``, ``t2i_compbench``, a .csv / .jsonl / .json / .parquet file, or a hub data set id.
        prompt_column: the column holding the prompts.
        category_column: the column holding categories (None: no categories).
        categories: keep only prompts of these categories.
        limit: keep only the first ``limit`` prompts (after the category filter).
        negative_prompt: one negative prompt for every sample (conditions become dicts).
        negative_prompt_column: or a column of per-prompt negative prompts (empty cells: none).
        samples_per_prompt: samples (sample ids, noises) per prompt.
        split, revision: for hub data sets.
        predict_batch_size: conditions per predict step (search multiplies them by its candidates).

    Conditions are the prompt strings, or ``{"prompt": ..., "negative_prompt": ...}`` with a negative prompt;
    each batch also carries ``category`` when there is a category column.
    """

    def __init__(
        self,
        source: str = "drawbench",
        prompt_column: str = "prompt",
        category_column: str | None = "category",
        categories: list[str] | None = None,
        limit: int | None = None,
        negative_prompt: str | None = None,
        negative_prompt_column: str | None = None,
        samples_per_prompt: int = 1,
        split: str = "train",
        revision: str | None = None,
        predict_batch_size: int = 8,
    ) -> None:
        super().__init__()
        if samples_per_prompt < 1 or predict_batch_size < 1:
            raise ConfigurationError(
                f"samples_per_prompt and predict_batch_size must be >= 1, got {samples_per_prompt}, "
                f"{predict_batch_size}"
            )
        if limit is not None and limit < 0:
            raise ConfigurationError(f"limit must be >= 0, got {limit}")
        if negative_prompt is not None and negative_prompt_column is not None:
            raise ConfigurationError("pass negative_prompt or negative_prompt_column, not both")
        self.save_hyperparameters()
        self.predict_batch_size = predict_batch_size

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        """The kept prompt rows: {row, prompt, category, negative_prompt}, in source order."""
        hp = self.hparams
        table = load_prompt_table(hp.source, hp.split, hp.revision)
        columns = list(table.column_names)
        wanted = [hp.prompt_column]
        if hp.negative_prompt_column is not None:
            wanted.append(hp.negative_prompt_column)
        if hp.categories is not None:
            if hp.category_column is None:
                raise ConfigurationError("categories= needs a category_column")
            wanted.append(hp.category_column)
        for column in wanted:
            if column not in columns:
                raise ConfigurationError(
                    f"prompt set {hp.source!r} has no column {column!r}; its columns: {', '.join(columns)}"
                )
        has_category = hp.category_column is not None and hp.category_column in columns
        data = table.to_dict()
        rows = []
        for r, prompt in enumerate(data[hp.prompt_column]):
            category = data[hp.category_column][r] if has_category else None
            if hp.categories is not None and category not in hp.categories:
                continue
            negative = hp.negative_prompt
            if hp.negative_prompt_column is not None:
                negative = data[hp.negative_prompt_column][r] or None
            rows.append({"row": r, "prompt": str(prompt), "category": category, "negative_prompt": negative})
        if hp.categories is not None and not rows:
            found = sorted({str(c) for c in data[hp.category_column]})
            raise ConfigurationError(
                f"no prompt of {hp.source!r} is in categories {hp.categories}; its categories: {', '.join(found)}"
            )
        return rows[: hp.limit] if hp.limit is not None else rows

    def conditions(self) -> list[str | dict[str, str]]:
        """One condition per kept prompt (before repetition by ``samples_per_prompt``)."""
        return [_condition(row) for row in self.rows]

    def predict_dataset(self) -> ConditionDataset:
        per = self.hparams.samples_per_prompt
        conditions, ids, categories = [], [], []
        for row in self.rows:
            for j in range(per):
                conditions.append(_condition(row))
                ids.append(row["row"] * per + j)
                categories.append(row["category"])
        extras = {"category": categories} if any(c is not None for c in categories) else None
        return ConditionDataset(conditions, ids, extras)


def _condition(row: dict[str, Any]) -> str | dict[str, str]:
    if row["negative_prompt"] is None:
        return row["prompt"]
    return {"prompt": row["prompt"], "negative_prompt": row["negative_prompt"]}


def builtin_prompts(name: str, categories: Sequence[str] | None = None) -> list[str]:
    """The prompts of a built-in set (optionally of some categories), e.g. for a quick look or a script."""
    module = PromptDataModule(name, categories=list(categories) if categories is not None else None)
    return [row["prompt"] for row in module.rows]
