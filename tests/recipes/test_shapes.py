"""The shapes recipes run end to end through the CLI with tiny sizes: the three fits write their checkpoints,
sample.yaml and search.yaml predict from them, and metrics.json carries the judge's per-task accuracies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lightning_search.cli import main
from lightning_search.runs import read_records
from lightning_search.verifiers.shapes_judge import judge_accuracy

REPO = Path(__file__).resolve().parents[2]
TINY_FIT = ["--trainer.max_steps=2", "--trainer.enable_progress_bar=false", "--data.init_args.num_images=64",
            "--data.init_args.batch_size=16"]  # fmt: skip


def _recipe(name: str, root: Path) -> Path:
    """recipes/shapes/<name> writing under ``root`` and, for generators, with the tiny shapes-xs size."""
    text = (REPO / "recipes" / "shapes" / name).read_text().replace("runs/", f"{root}/runs/")
    path = root / name
    text = text.replace("size: shapes-s", "size: shapes-xs").replace("size: shapes-b", "size: shapes-xs")
    # EMA from the first step: EMA weights of 2 steps from step 1000 are the initial ones, whose zero output
    # layer leaves every LoRA layer without gradient (the fine-tunes below would not move)
    path.write_text(text.replace("update_starting_at_step: 1000", "update_starting_at_step: 0"))
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    main(["fit", "--config", str(_recipe("fit_small.yaml", root)), *TINY_FIT])
    main(["fit", "--config", str(_recipe("clip.yaml", root)), *TINY_FIT, "--model.init_args.width=8"])
    return root


@pytest.mark.slow
def test_fits_sample_and_search(fitted):
    assert (fitted / "runs/shapes/small/generator.ckpt").is_file() and (fitted / "runs/shapes/clip/clip.ckpt").is_file()
    small = ["--data.init_args.prompts_per_category=1", "--data.init_args.samples_per_prompt=2"]
    main(["predict", "--config", str(_recipe("sample.yaml", fitted)), *small])
    run = fitted / "runs/shapes/sample"
    metrics = json.loads((run / "metrics.json").read_text())
    records = read_records(run)
    assert len(records) == 12 and {r["condition"]["tag"] for r in records} == {
        "single_object", "two_object", "counting", "colors", "position", "color_attr"
    }  # fmt: skip
    accuracy = judge_accuracy(records)
    for tag, value in accuracy.items():
        if tag != "overall":  # the per-task judges' means are the per-task accuracies
            assert metrics["verifier_scores"][f"judge_{tag}"] == pytest.approx(value)
    assert metrics["verifier_scores"]["judge"] == pytest.approx(accuracy["overall"])  # balanced tasks
    assert (run / "grid.png").is_file()
    main(["predict", "--config", str(_recipe("search.yaml", fitted)), *small, "--search.num_candidates=2"])
    searched = read_records(fitted / "runs/shapes/search")
    steps = yaml.safe_load((REPO / "recipes/shapes/search.yaml").read_text())["model"]["init_args"]["sampler"]["steps"]
    assert all(r["verifier"] == "clip" and len(r["candidate_seeds"]) == 2 for r in searched)
    assert all(r["nfe"] == 2 * 2 * steps for r in searched)  # 2 candidates of Heun steps (2 NFE each)


@pytest.mark.slow
def test_pairs_dpo_grpo_and_compare(fitted):
    """pairs.yaml -> dpo.yaml and grpo.yaml run a couple of steps on shapes-xs, then compare.yaml predicts base,
    DPO and GRPO with and without CLIP search and tabulates the judge per task."""
    from datasets import load_from_disk

    from lightning_search.worlds.shapes import all_prompts, prompt_split

    tiny = ["--data.init_args.prompts_per_category=1", "--data.init_args.samples_per_prompt=2"]
    main(["pairs", "--config", str(_recipe("pairs.yaml", fitted)), *tiny])
    pairs = load_from_disk(str(fitted / "runs/shapes/pairs/pairs"))
    train = {all_prompts()[i]["prompt"] for i in prompt_split("train")}
    # the caption is the prompt's text (Arrow cannot hold the metadata dicts), of a training prompt
    assert len(pairs) > 0 and set(pairs["caption"]) <= train
    assert all(w > lo for w, lo in zip(pairs["score_0"], pairs["score_1"]))  # the CLIP analogue's winner first
    steps = ["--trainer.max_steps=2", "--trainer.enable_progress_bar=false"]
    main(["fit", "--config", str(_recipe("dpo.yaml", fitted)), *steps, "--data.init_args.batch_size=4"])
    main(["fit", "--config", str(_recipe("grpo.yaml", fitted)), *steps, "--data.init_args.batch_size=2",
          "--model.init_args.objective.init_args.group_size=2", "--model.init_args.sampler.steps=3"])  # fmt: skip
    for run in ("dpo", "grpo"):
        assert (fitted / f"runs/shapes/{run}/adapter/pytorch_lora_weights.safetensors").is_file()
    spec = yaml.safe_load((REPO / "recipes/shapes/compare.yaml").read_text().replace("runs/", f"{fitted}/runs/"))
    spec["predict_config"] = str(_recipe("compare_predict.yaml", fitted))
    # three of the six runs keep the test short: no search, an adapter, an adapter with search
    spec["runs"] = [r for r in spec["runs"] if r["name"] in ("base", "dpo", "grpo+search")]
    for run in spec["runs"]:
        run["args"] += ["--data.init_args.prompts_per_category=1", "--data.init_args.samples_per_prompt=1"]
    (fitted / "compare.yaml").write_text(yaml.safe_dump(spec))
    main(["compare", "--config", str(fitted / "compare.yaml")])
    out = fitted / "runs/shapes/compare"
    names = [r["name"] for r in spec["runs"]]
    metrics = {n: json.loads((out / n / "metrics.json").read_text()) for n in names}
    assert {n: metrics[n]["nfe"] for n in names} == {n: 20 * (4 if "search" in n else 1) for n in names}
    base, dpo = read_records(out / "base"), read_records(out / "dpo")
    assert [r["seed"] for r in base] == [r["seed"] for r in dpo]  # same noises, another model: the adapter loaded
    assert [r["scores"]["clip"] for r in base] != [r["scores"]["clip"] for r in dpo]
    report = (out / "report.md").read_text()
    for name in names:
        assert f"| {name} |" in report
    assert all(f"score/judge_{task}" in report for task in ("counting", "position", "color_attr"))
