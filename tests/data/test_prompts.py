"""Prompt sets: built-in DrawBench and T2I-CompBench, any file with a prompt column, filters and stable ids."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lightning_search.data import BUILTIN_PROMPT_SETS, ClassConditionDataModule, PromptDataModule
from lightning_search.errors import ConfigurationError, UnknownNameError


def _csv_rows(name: str) -> list[dict]:
    path = Path(__file__).resolve().parents[2] / "lightning_search" / "data" / "prompts" / BUILTIN_PROMPT_SETS[name]
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_builtin_sets_have_their_published_sizes_and_categories():
    drawbench = PromptDataModule("drawbench")
    assert len(drawbench.rows) == 200
    counts = {}
    for row in drawbench.rows:
        counts[row["category"]] = counts.get(row["category"], 0) + 1
    assert counts["Colors"] == 25 and counts["Reddit"] == 38 and counts["Rare Words"] == 7 and len(counts) == 11
    compbench = PromptDataModule("t2i_compbench", categories=["numeracy", "3d_spatial"])
    assert len(compbench.rows) == 600
    assert [r["prompt"] for r in PromptDataModule("drawbench").rows] == [r["prompt"] for r in _csv_rows("drawbench")]


def test_category_filter_limit_and_samples_per_prompt_keep_ids_stable():
    full = PromptDataModule("drawbench", samples_per_prompt=2).predict_dataset()
    by_id = dict(zip(full.sample_ids, full.conditions))
    subset = PromptDataModule("drawbench", categories=["Counting"], limit=5, samples_per_prompt=2).predict_dataset()
    assert len(subset) == 10
    assert all(by_id[i] == c for i, c in zip(subset.sample_ids, subset.conditions))  # same id, same prompt
    rows = _csv_rows("drawbench")
    first_counting = next(r for r, row in enumerate(rows) if row["category"] == "Counting")
    assert subset.sample_ids[:2] == [2 * first_counting, 2 * first_counting + 1]
    assert subset[0]["category"] == "Counting" and subset[0]["condition"] == rows[first_counting]["prompt"]
    resumed = subset.exclude(set(subset.sample_ids[:4]))
    assert resumed.sample_ids == subset.sample_ids[4:]


def test_negative_prompts_make_dict_conditions():
    module = PromptDataModule("drawbench", limit=2, negative_prompt="blurry, low quality")
    assert module.conditions()[0] == {
        "prompt": _csv_rows("drawbench")[0]["prompt"],
        "negative_prompt": "blurry, low quality",
    }
    json.dumps(module.conditions())  # records stay JSON


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_any_file_with_a_prompt_column(tmp_path, fmt):
    rows = [{"text": "a cat", "neg": "dog", "kind": "animal"}, {"text": "a house", "neg": "", "kind": "building"}]
    path = tmp_path / f"prompts.{fmt}"
    if fmt == "csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    module = PromptDataModule(str(path), prompt_column="text", category_column="kind", negative_prompt_column="neg")
    assert module.conditions() == [{"prompt": "a cat", "negative_prompt": "dog"}, "a house"]
    batch = next(iter(module.predict_dataloader()))
    assert batch["sample_id"].tolist() == [0, 1] and batch["category"] == ["animal", "building"]


def test_unknown_set_name_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="drawbench, t2i_compbench"):
        PromptDataModule("partiprompts").conditions()


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("caption,category\na dog,animals\n")
    with pytest.raises(ConfigurationError, match="no column 'prompt'; its columns: caption, category"):
        PromptDataModule(str(path)).conditions()
    with pytest.raises(ConfigurationError, match="its categories: Colors"):
        PromptDataModule("drawbench", categories=["colours"]).conditions()
    with pytest.raises(ConfigurationError, match="does not exist"):
        PromptDataModule(str(tmp_path / "missing.jsonl")).conditions()


def test_class_conditions_have_stable_ids():
    data = ClassConditionDataModule(classes=[3, 207], samples_per_class=2).predict_dataset()
    assert data.conditions == [3, 3, 207, 207] and data.sample_ids == [6, 7, 414, 415]
    with pytest.raises(ConfigurationError, match="0..999"):
        ClassConditionDataModule(classes=[1000])
