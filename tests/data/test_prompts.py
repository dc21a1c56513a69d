"""Prompt sets: the built-in sets (DrawBench, T2I-CompBench, GenEval, DPG-Bench, PartiPrompts), any file with a
prompt column, filters and stable ids. The built-in sets are checked against their files read with the standard
library (csv / json), not with ``datasets`` as the module reads them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lightning_search.data import BUILTIN_PROMPT_SETS, ClassConditionDataModule, PromptDataModule
from lightning_search.errors import ConfigurationError, UnknownNameError

PROMPT_FILES = Path(__file__).resolve().parents[2] / "lightning_search" / "data" / "prompts"


def _csv_rows(name: str, **options) -> list[dict]:
    with open(PROMPT_FILES / BUILTIN_PROMPT_SETS[name].file, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, **options))


def _counts(values) -> dict:
    counts: dict = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


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


def test_geneval_has_its_six_tags_and_its_metadata_reaches_the_condition():
    module = PromptDataModule("geneval")
    assert len(module.rows) == 553
    assert _counts(r["category"] for r in module.rows) == {
        "single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100, "color_attr": 100,
    }  # fmt: skip
    source = [json.loads(line) for line in (PROMPT_FILES / "geneval.jsonl").read_text().splitlines()]
    assert module.conditions() == source  # each condition is its JSON line: prompt, tag, include, exclude if any
    counting = PromptDataModule("geneval", categories=["counting"]).predict_dataset()
    first = next(r for r, row in enumerate(source) if row["tag"] == "counting")
    condition = counting[0]["condition"]
    assert counting.sample_ids[0] == first and condition == source[first] and condition["exclude"]
    position = next(c for c in module.conditions() if c["tag"] == "position")
    assert position["include"][1]["position"][0] in {"left of", "right of", "above", "below"}
    json.dumps(module.conditions())  # records stay JSON
    from lightning_search.verifiers.clip_models import condition_text

    assert condition_text(condition) == source[first]["prompt"]  # verifiers still read the prompt
    assert PromptDataModule("geneval", metadata_columns=[], limit=2).conditions() == [s["prompt"] for s in source[:2]]


def test_dpg_bench_categories_are_the_item_id_prefixes_and_edge_whitespace_stays():
    module = PromptDataModule("dpg_bench")
    rows = _csv_rows("dpg_bench")
    assert len(module.rows) == 1065 == len(rows)
    assert _counts(r["category"] for r in module.rows) == {
        "numeric": 299, "partiprompts": 324, "COCOval": 100, "countbench": 40, "diffusiondb": 40, "drawtext": 40,
        "midjourney": 40, "posescript": 40, "stanford": 40, "vrd": 40, "whoops": 40, "localized": 22,
    }  # fmt: skip
    assert module.conditions() == [{"prompt": r["prompt"], "item_id": r["item_id"]} for r in rows]
    by_id = {c["item_id"]: c["prompt"] for c in module.conditions()}
    assert by_id["countbench4"].endswith("\n") and by_id["diffusiondb25"].startswith(" ")
    assert by_id["countbench4"] == next(r["prompt"] for r in rows if r["item_id"] == "countbench4")
    assert "159" not in by_id and "299" in by_id


def test_parti_prompts_keep_their_quotes_and_empty_notes():
    module = PromptDataModule("parti")
    rows = _csv_rows("parti", delimiter="\t", quoting=csv.QUOTE_NONE)
    assert len(module.rows) == 1632 == len(rows)
    counts = _counts(r["category"] for r in module.rows)
    assert len(counts) == 12 and counts["Animals"] == 314 and counts["Indoor Scenes"] == 40
    assert _counts(c["Challenge"] for c in module.conditions())["Writing & Symbols"] == 91
    giggle = [c for c in module.conditions() if "G I G G L E" in c["prompt"]]
    assert len(giggle) == 1 and giggle[0]["prompt"].startswith('"G I G G L E" painted')
    assert giggle[0]["Note"] == "" and sum(c["Note"] == "" for c in module.conditions()) == 1442
    assert [c["prompt"] for c in module.conditions()] == [r["Prompt"] for r in rows]
    food = PromptDataModule("parti", categories=["Food & Beverage"]).predict_dataset()
    assert len(food) == 74 and food[0]["category"] == "Food & Beverage"


@pytest.mark.parametrize("name", ["geneval", "dpg_bench", "parti"])
def test_new_sets_keep_sample_ids_stable_under_filtering(name):
    full = PromptDataModule(name, samples_per_prompt=2)
    by_id = dict(zip(full.predict_dataset().sample_ids, full.predict_dataset().conditions))
    category = full.rows[-1]["category"]  # the last category: its rows lie far from the start
    subset = PromptDataModule(name, categories=[category], limit=3, samples_per_prompt=2).predict_dataset()
    assert len(subset) == 6 and all(by_id[i] == c for i, c in zip(subset.sample_ids, subset.conditions))
    first = next(r for r, row in enumerate(full.rows) if row["category"] == category)
    assert subset.sample_ids[:2] == [2 * first, 2 * first + 1] and first > 0


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
    resumed = subset.mark_done(set(subset.sample_ids[:4]))
    assert resumed.sample_ids == subset.sample_ids and resumed.conditions == subset.conditions
    assert [resumed[i]["done"] for i in range(len(resumed))] == [True] * 4 + [False] * 6


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
    with pytest.raises(UnknownNameError, match="dpg_bench, drawbench, geneval, parti, t2i_compbench"):
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


def test_prompt_files_are_the_source_bytes_and_ship_in_the_wheel():
    import fnmatch
    import hashlib
    import tomllib

    def git_blob(path: Path) -> str:  # what `git hash-object` prints: the source repositories' blob ids
        data = path.read_bytes()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    assert git_blob(PROMPT_FILES / "geneval.jsonl") == "efc21c7e639cd45554a1e44fac87157211f16d51"
    assert git_blob(PROMPT_FILES / "parti_prompts.tsv") == "f96e7125a02e48976736179a667b080ba81539fb"
    assert git_blob(PROMPT_FILES / "LICENSE-APACHE-2.0.txt") == "261eeb9e9f8b2b4b0d119366dda99c6fd7d35c64"
    pyproject = tomllib.loads((PROMPT_FILES.parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["lightning_search"]
    shipped = [p for p in PROMPT_FILES.iterdir() if not p.name.startswith(".")]
    assert {spec.file for spec in BUILTIN_PROMPT_SETS.values()} <= {p.name for p in shipped}
    for path in shipped:
        assert any(fnmatch.fnmatch(f"data/prompts/{path.name}", pattern) for pattern in patterns), path.name
    sources = (PROMPT_FILES / "SOURCES.md").read_text()
    assert all(f"`{spec.file}`" in sources for spec in BUILTIN_PROMPT_SETS.values())
    assert "Copyright (c) 2023 Dhruba Ghosh" in (PROMPT_FILES / "LICENSE-GENEVAL.txt").read_text()
