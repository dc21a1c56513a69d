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
    path.write_text(text.replace("size: shapes-s", "size: shapes-xs").replace("size: shapes-b", "size: shapes-xs"))
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
