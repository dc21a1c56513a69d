"""Prompt sets for text-to-image prediction, read with Hugging Face ``datasets``.

Built in (shipped in ``lightning_search/data/prompts/``, sources and licences in ``SOURCES.md`` there):

| name | prompts | categories | per-prompt metadata (in the condition) |
|---|---|---|---|
| ``drawbench`` | 200 | 11 (Saharia et al. 2022) | none |
| ``t2i_compbench`` | 2,400 (validation) | 8 (Huang et al. 2023) | none |
| ``geneval`` | 553 | 6 ``tag`` values (Ghosh et al. 2023) | ``tag``, ``include``, ``exclude`` |
| ``dpg_bench`` | 1,065 | 12 ``item_id`` prefixes (Hu et al. 2024) | ``item_id`` (the image name DPG's scorer expects) |
| ``parti`` | 1,632 | 12 ``Category`` values (Yu et al. 2022) | ``Category``, ``Challenge``, ``Note`` |

Any CSV / TSV / JSONL / JSON / parquet file or hub data set with a prompt column works the same way.

Conditions are the prompt strings, or dicts when there is more to say: ``{"prompt": ..., <metadata column>:
value, ..., "negative_prompt": ...}`` (JSON values, so records stay JSON). Backbones read ``prompt`` and
``negative_prompt``; verifiers read the prompt with ``condition_text`` and judges that need more (GenEval's
object/count/colour/position checks) read the metadata keys. A metadata cell that is null in the source (the
``exclude`` of GenEval's non-counting rows) is left out of the dict, so a GenEval condition is exactly the
source's JSON object.

Sample ids are stable: prompt row r of the source (its position before any filtering) with sample j of
``samples_per_prompt`` has id ``r * samples_per_prompt + j``. Filtering by category or limiting the number
of prompts therefore never renumbers the samples that remain, so runs can be sharded, resumed and compared.
"""

from __future__ import annotations

import copy
import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from lightning_search.data.conditions import ConditionDataModule, ConditionDataset
from lightning_search.errors import ConfigurationError, UnknownNameError

PROMPT_DIR = Path(__file__).parent / "prompts"
FILE_FORMATS: dict[str, str] = {".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def dpg_category(item_id: str) -> str:
    """DPG-Bench's only grouping: the prompt file's name without its number (``partiprompts12`` ->
    ``partiprompts``); the purely numeric ids (0 to 299) are called ``numeric`` here."""
    prefix = re.match(r"[^\d]*", item_id).group(0)
    return prefix or "numeric"


@dataclass(frozen=True)
class PromptSet:
    """How a built-in prompt set is read: its file in ``PROMPT_DIR``, the ``datasets`` builder and its
    options, which columns hold the prompt and the category, and which go into the condition as metadata.
    ``derived`` adds columns computed from another one: {new column: (source column, function)}."""

    file: str
    builder: str = "csv"
    options: dict[str, Any] = field(default_factory=dict)
    prompt_column: str = "prompt"
    category_column: str = "category"
    metadata_columns: tuple[str, ...] = ()
    derived: dict[str, tuple[str, Any]] = field(default_factory=dict)


# keep_default_na=False: pandas (under datasets' csv builder) would otherwise read a prompt "NA" / "None" as null.
# Parti: quoting off (csv.QUOTE_NONE), or the leading quotes of '"G I G G L E" painted ...' would be eaten.
BUILTIN_PROMPT_SETS: dict[str, PromptSet] = {
    "drawbench": PromptSet("drawbench.csv", options={"keep_default_na": False}),
    "t2i_compbench": PromptSet("t2i_compbench_val.csv", options={"keep_default_na": False}),
    "geneval": PromptSet(
        "geneval.jsonl", "json", category_column="tag", metadata_columns=("tag", "include", "exclude")
    ),
    "dpg_bench": PromptSet(
        "dpg_bench.csv",
        options={"keep_default_na": False},
        metadata_columns=("item_id",),
        derived={"category": ("item_id", dpg_category)},
    ),
    "parti": PromptSet(
        "parti_prompts.tsv",
        options={"delimiter": "\t", "quoting": csv.QUOTE_NONE, "keep_default_na": False},
        prompt_column="Prompt",
        category_column="Category",
        metadata_columns=("Category", "Challenge", "Note"),
    ),
}


def check_text_file(path: Path) -> None:
    """A prompt file that ``datasets`` would fail on with a traceback (or read wrongly) is one clear error:
    empty, not UTF-8 (with the line of the first bad byte), or a JSON Lines file with a line that is not JSON."""
    data = path.read_bytes()
    if not data.strip():
        raise ConfigurationError(f"prompt file {str(path)!r} is empty; give it a header and one prompt per row")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigurationError(
            f"prompt file {str(path)!r}, line {line}: not UTF-8 text (byte {data[err.start]:#04x} at offset "
            f"{err.start}); save it as UTF-8"
        ) from None
    if path.suffix.lower() == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigurationError(
                    f"prompt file {str(path)!r}, line {number}: not a JSON object ({err.msg} at column {err.colno})"
                ) from None
            if not isinstance(row, dict):
                raise ConfigurationError(
                    f"prompt file {str(path)!r}, line {number}: a JSON {type(row).__name__}, not an object"
                )


def load_prompt_table(source: str, split: str = "train", revision: str | None = None):
    """A ``datasets.Dataset`` for a built-in name, a local file, or a hub data set id."""
    import datasets

    if source in BUILTIN_PROMPT_SETS:
        spec = BUILTIN_PROMPT_SETS[source]
        path = PROMPT_DIR / spec.file
        table = datasets.load_dataset(spec.builder, data_files=str(path), split="train", **spec.options)
        for column, (origin, function) in spec.derived.items():
            table = table.add_column(column, [function(value) for value in table[origin]])
        return table
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix in FILE_FORMATS:
        if not path.is_file():
            raise ConfigurationError(f"prompt file {str(path)!r} does not exist")
        options: dict[str, Any] = {}
        if FILE_FORMATS[suffix] == "csv":
            check_text_file(path)
            # pandas would read a prompt "NA" or "None" as null, and an empty cell as NaN ("nan")
            options = {"keep_default_na": False, **({"delimiter": "\t"} if suffix == ".tsv" else {})}
        elif suffix == ".jsonl":
            check_text_file(path)
        try:
            return datasets.load_dataset(FILE_FORMATS[suffix], data_files=str(path), split="train", **options)
        except ValueError as err:  # datasets: a table with a header and no rows
            if "corresponds to no data" in str(err):
                raise ConfigurationError(f"prompt file {str(path)!r} has no prompts (a header and no rows)") from None
            raise
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
        source: a built-in set (``drawbench``, ``t2i_compbench``, ``geneval``, ``dpg_bench``, ``parti``), a
            .csv / .tsv / .jsonl / .json / .parquet file, or a hub data set id.
        prompt_column: the column holding the prompts (None: the built-in set's, else ``prompt``).
        category_column: the column holding categories (None: the built-in set's, else ``category`` if the
            source has one; no categories otherwise).
        categories: keep only prompts of these categories.
        metadata_columns: columns copied into each condition dict (None: the built-in set's, none for other
            sources; ``[]``: plain prompt strings even for a built-in set).
        limit: keep only the first ``limit`` prompts (after the category filter).
        negative_prompt: one negative prompt for every sample (conditions become dicts).
        negative_prompt_column: or a column of per-prompt negative prompts (empty cells: none).
        samples_per_prompt: samples (sample ids, noises) per prompt.
        split, revision: for hub data sets.
        predict_batch_size: conditions per predict step (search multiplies them by its candidates).
        train_batch_size: conditions per training step of an online objective (GRPO; default: predict's).

    Conditions are the prompt strings, or dicts ``{"prompt": ..., <metadata>..., "negative_prompt": ...}``
    with metadata or a negative prompt; each batch also carries ``category`` when there is a category column.
    """

    def __init__(
        self,
        source: str = "drawbench",
        prompt_column: str | None = None,
        category_column: str | None = None,
        categories: list[str] | None = None,
        metadata_columns: list[str] | None = None,
        limit: int | None = None,
        negative_prompt: str | None = None,
        negative_prompt_column: str | None = None,
        samples_per_prompt: int = 1,
        split: str = "train",
        revision: str | None = None,
        predict_batch_size: int = 8,
        train_batch_size: int | None = None,
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
        self.predict_batch_size, self.train_batch_size = predict_batch_size, train_batch_size

    def _columns(self) -> tuple[str, str | None, list[str]]:
        """The prompt column, category column and metadata columns, defaults resolved for the source."""
        hp = self.hparams
        spec = BUILTIN_PROMPT_SETS.get(hp.source)
        prompt = hp.prompt_column or (spec.prompt_column if spec else "prompt")
        category = hp.category_column or (spec.category_column if spec else "category")
        metadata = (
            hp.metadata_columns if hp.metadata_columns is not None else list(spec.metadata_columns if spec else [])
        )
        return prompt, category, list(metadata)

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        """The kept prompt rows: {row, prompt, category, metadata, negative_prompt}, in source order."""
        hp = self.hparams
        prompt_column, category_column, metadata_columns = self._columns()
        table = load_prompt_table(hp.source, hp.split, hp.revision)
        columns = list(table.column_names)
        wanted = [prompt_column, *metadata_columns]
        if hp.negative_prompt_column is not None:
            wanted.append(hp.negative_prompt_column)
        if hp.categories is not None:
            wanted.append(category_column)
        for column in wanted:
            if column not in columns:
                raise ConfigurationError(
                    f"prompt set {hp.source!r} has no column {column!r}; its columns: {', '.join(columns)}"
                )
        if "prompt" in metadata_columns or "negative_prompt" in metadata_columns:
            raise ConfigurationError("metadata_columns cannot hold 'prompt' or 'negative_prompt' (condition keys)")
        has_category = category_column in columns
        data = table.to_dict()
        rows = []
        for r, prompt in enumerate(data[prompt_column]):
            if prompt is None or not isinstance(prompt, str) or not prompt.strip():
                raise ConfigurationError(
                    f"prompt set {hp.source!r}, row {r}: the prompt ({prompt_column!r}) is "
                    f"{'null' if prompt is None else repr(prompt)}; give every row a text prompt or remove the row"
                )
            category = data[category_column][r] if has_category else None
            if hp.categories is not None and category not in hp.categories:
                continue
            negative = hp.negative_prompt
            if hp.negative_prompt_column is not None:
                negative = data[hp.negative_prompt_column][r] or None
            # a null cell (a key absent from that JSON line) stays absent from the condition
            metadata = {c: data[c][r] for c in metadata_columns if data[c][r] is not None}
            rows.append(
                {
                    "row": r,
                    "prompt": str(prompt),
                    "category": category,
                    "metadata": metadata,
                    "negative_prompt": negative,
                }
            )
        if hp.categories is not None and not rows:
            found = sorted({str(c) for c in data[category_column]})
            raise ConfigurationError(
                f"no prompt of {hp.source!r} is in categories {hp.categories}; its categories: {', '.join(found)}"
            )
        return rows[: hp.limit] if hp.limit is not None else rows

    def conditions(self) -> list[str | dict[str, Any]]:
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


def _condition(row: dict[str, Any]) -> str | dict[str, Any]:
    if row["negative_prompt"] is None and not row["metadata"]:
        return row["prompt"]
    condition = {"prompt": row["prompt"], **copy.deepcopy(row["metadata"])}  # no lists shared between samples
    if row["negative_prompt"] is not None:
        condition["negative_prompt"] = row["negative_prompt"]
    return condition


def builtin_prompts(name: str, categories: Sequence[str] | None = None) -> list[str]:
    """The prompts of a built-in set (optionally of some categories), e.g. for a quick look or a script."""
    module = PromptDataModule(name, categories=list(categories) if categories is not None else None)
    return [row["prompt"] for row in module.rows]
