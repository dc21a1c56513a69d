import json

from lightning_search.callbacks import SearchProgressBar
from lightning_search.cli import LightningSearchCLI
from tests.conftest import patched_recipe


def test_progress_bar_counts_samples_and_nfe_against_the_budget_and_leaves_out_what_a_resume_skips(
    tmp_path, digits_setup
):
    recipe = patched_recipe("digits/search.yaml", tmp_path, digits_setup)
    args = ["predict", "--config", str(recipe), "--data.init_args.samples_per_class=2",
            "--data.init_args.predict_batch_size=8", "--search.num_candidates=3"]  # fmt: skip
    bar = LightningSearchCLI(args=args).trainer.progress_bar_callback
    assert isinstance(bar, SearchProgressBar)
    # 20 samples in batches of 8; random search with 3 candidates of 10 NFE: 30 NFE each, 600 in all
    assert bar.history[0] == {"samples": "8/20", "NFE": "240/600"}
    assert bar.history[-1] == {"samples": "20/20", "NFE": "600/600"}

    records = next(tmp_path.rglob("predictions/records.jsonl"))
    lines = records.read_text().splitlines()
    records.write_text("".join(line + "\n" for line in lines[:16]))  # as if stopped after two of three batches
    bar = LightningSearchCLI(args=args).trainer.progress_bar_callback
    # resumed: two batches skipped (16 samples, no NFE), the last 4 samples searched: 120 NFE of a budget of 120
    assert bar.history == [
        {"samples": "8/20", "NFE": "0/360"},
        {"samples": "16/20", "NFE": "0/120"},
        {"samples": "20/20", "NFE": "120/120"},
    ]
    assert [json.loads(line)["sample_id"] for line in records.read_text().splitlines()] == [
        json.loads(line)["sample_id"] for line in lines
    ]
