"""The CLI end to end on digits: fit, predict from the checkpoint, and bad input."""

import json

import pytest
import torch

from lightning_search.cli import main
from tests.conftest import patched_recipe


def test_short_digits_fit_then_predict_from_its_checkpoint(tmp_path, digits_setup):
    recipe = patched_recipe("digits/fit.yaml", tmp_path)
    main(["fit", "--config", str(recipe), "--trainer.max_steps=6", "--trainer.enable_progress_bar=false",
          "--model.init_args.backbone.init_args.size=digits-xs"])  # fmt: skip
    ckpt = tmp_path / "runs/digits/generator/generator.ckpt"
    state = torch.load(ckpt, weights_only=True)
    # EMAWeightAveraging stores the averaged weights as the state dict, the raw ones beside them
    assert "current_model_state" in state
    assert any(k.startswith("backbone.net.") for k in state["state_dict"])
    sample = patched_recipe("digits/sample.yaml", tmp_path, digits_setup)
    main(["predict", "--config", str(sample), f"--ckpt_path={ckpt}", "--data.init_args.samples_per_class=1"])
    records = (tmp_path / "runs/digits/sample/predictions/records.jsonl").read_text().splitlines()
    assert len(records) == 10


def test_predict_from_a_checkpoint_writes_records_metrics_and_grid(tmp_path, digits_setup):
    recipe = patched_recipe("digits/sample.yaml", tmp_path, digits_setup)
    args = [
        "predict",
        "--config",
        str(recipe),
        "--data.init_args.samples_per_class=3",
    ]
    main(args)
    run = tmp_path / "runs/digits/sample"
    records = [json.loads(line) for line in (run / "predictions/records.jsonl").read_text().splitlines()]
    assert [r["sample_id"] for r in records] == [c * 3 + i for c in range(10) for i in range(3)]
    assert all(r["nfe"] == 10 and (run / "predictions" / r["image"]).is_file() for r in records)
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("fid", "kid", "inception_score", "precision", "recall", "accuracy", "nfe", "gflops"):
        assert key in metrics
    assert metrics["num_samples"] == 30
    assert (run / "grid.png").is_file()
    # a rerun into the same folder finds everything done: no duplicates, identical records
    main(args)
    again = [json.loads(line) for line in (run / "predictions/records.jsonl").read_text().splitlines()]
    assert [r["sample_id"] for r in again] == [r["sample_id"] for r in records]
    assert [r["seed"] for r in again] == [r["seed"] for r in records]


def test_random_search_flags(tmp_path, digits_setup):
    recipe = patched_recipe("digits/sample.yaml", tmp_path, digits_setup)
    main(["predict", "--config", str(recipe), "--data.init_args.samples_per_class=2",
          "--search.algorithm=random", "--search.num_candidates=4", "--search.verifier=classifier"])  # fmt: skip
    records = [
        json.loads(x) for x in (tmp_path / "runs/digits/sample/predictions/records.jsonl").read_text().splitlines()
    ]
    assert all(r["nfe"] == 40 and len(r["candidate_seeds"]) == 4 and r["verifier"] == "classifier" for r in records)
    assert all(r["score"] == pytest.approx(r["scores"]["classifier"], abs=1e-4) for r in records)


def test_unknown_size_lists_the_valid_ones(tmp_path, capsys):
    recipe = patched_recipe("digits/fit.yaml", tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(recipe), "--model.init_args.backbone.init_args.size=digits-huge"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "digits-huge" in err and "digits-s" in err and "digits-m" in err


def test_unknown_verifier_name_lists_the_valid_ones(tmp_path, digits_setup, capsys):
    recipe = patched_recipe("digits/sample.yaml", tmp_path, digits_setup)
    with pytest.raises(SystemExit):
        main(["predict", "--config", str(recipe), "--search.algorithm=random", "--search.verifier=clip"])
    err = capsys.readouterr().err
    assert "'clip'" in err and "classifier" in err and "oracle" in err


def test_wrong_config_key_gives_lightningclis_error(tmp_path, capsys):
    recipe = patched_recipe("digits/fit.yaml", tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(recipe), "--model.init_args.learning_rat=0.1"])
    assert info.value.code != 0
    assert "learning_rat" in capsys.readouterr().err


def test_missing_checkpoint_gives_a_clear_error(tmp_path, digits_setup, capsys):
    recipe = patched_recipe("digits/sample.yaml", tmp_path, digits_setup)
    with pytest.raises(SystemExit) as info:
        main(["predict", "--config", str(recipe), f"--ckpt_path={tmp_path}/nope.ckpt"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "nope.ckpt" in err and "not found" in err and "lightning-search fit" in err
