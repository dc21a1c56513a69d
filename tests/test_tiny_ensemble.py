"""Issue 5's end-to-end run: tiny SD on DrawBench prompts, random search with the ensemble of five verifiers."""

import json

import pytest

from lightning_search.cli import main
from tests.conftest import REPO


@pytest.mark.slow
def test_drawbench_ensemble_recipe_writes_the_per_verifier_table(tmp_path):
    run = tmp_path / "run"
    main(["predict", "--config", str(REPO / "recipes/tiny/drawbench_ensemble.yaml"), f"--trainer.default_root_dir={run}",
          "--data.init_args.limit=3", "--search.num_candidates=2"])  # fmt: skip
    records = [json.loads(x) for x in (run / "predictions/records.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["verifier"] == "ensemble" for r in records)
    members = {"clip_score", "aesthetic", "pickscore", "hps", "image_reward"}
    assert all(set(r["scores"]) == members for r in records)  # the rank-based ensemble is not averaged
    # the ensemble's score of the chosen candidate is its mean rank among 2 candidates: within [1, 2]
    assert all(1.0 <= r["score"] <= 2.0 for r in records)
    table = (run / "verifiers.md").read_text()
    assert all(f"| {m} |" in table for m in members)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["verifier_scores"]) == members
