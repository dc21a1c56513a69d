"""Scale-out: sharded predict and search over 2 CPU processes equals 1 process; candidate sharding; DDP fit;
resume after SIGKILL. Two-process runs use ddp_fork in-process (ENVIRONMENT.md: plain ddp would re-run
pytest in the child), the CLI ones a subprocess."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lightning_search.cli import main
from tests.conftest import REPO, patched_recipe

pytestmark = pytest.mark.slow


def read(run):
    lines = (run / "predictions/records.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


def predict(recipe, run, *extra):
    main(["predict", "--config", str(recipe), f"--trainer.default_root_dir={run}",
          "--data.init_args.samples_per_class=3",
          "--data.init_args.predict_batch_size=4", *extra])  # fmt: skip
    return read(run)


def same_choices(a, b):
    assert [r["sample_id"] for r in a] == [r["sample_id"] for r in b]
    assert [r["seed"] for r in a] == [r["seed"] for r in b]
    assert [r["score"] for r in a] == pytest.approx([r["score"] for r in b], abs=1e-4)
    assert [r["nfe"] for r in a] == [r["nfe"] for r in b]


def images_close(run_a, run_b, records):
    from lightning_search.reporting.io import load_image

    for r in records:
        a, b = load_image(run_a / "predictions" / r["image"]), load_image(run_b / "predictions" / r["image"])
        assert (a - b).abs().max().item() <= 1 / 255 + 1e-6  # PNG quantisation of float-close images


SEARCH = ["--search.algorithm=random", "--search.verifier=classifier", "--search.num_candidates=5"]
TWO = ["--trainer.strategy=ddp_fork", "--trainer.devices=2", "--trainer.accelerator=cpu"]


def test_two_processes_choose_what_one_process_chooses(tmp_path, digits_setup):
    recipe = patched_recipe("digits/search.yaml", tmp_path, digits_setup)
    one = predict(recipe, tmp_path / "one", *SEARCH)
    two = predict(recipe, tmp_path / "two", *SEARCH, *TWO)
    assert len(one) == 30
    same_choices(one, two)
    images_close(tmp_path / "one", tmp_path / "two", one)
    assert not list((tmp_path / "two/predictions").glob("records.rank*.jsonl"))  # shards merged


def test_candidate_sharding_chooses_the_same_candidate(tmp_path, digits_setup):
    recipe = patched_recipe("digits/search.yaml", tmp_path, digits_setup)
    one = predict(recipe, tmp_path / "one", *SEARCH)
    sharded = predict(recipe, tmp_path / "sharded", *SEARCH, *TWO, "--search.candidate_sharding=true")
    same_choices(one, sharded)
    assert [r["chosen"]["candidate"] for r in one] == [r["chosen"]["candidate"] for r in sharded]
    images_close(tmp_path / "one", tmp_path / "sharded", one)


def test_candidate_sharding_ranks_an_ensemble_over_all_candidates(tmp_path, digits_setup):
    """The ensemble's mean rank needs the whole candidate set: sharded over two processes it must choose what
    one process chooses (each rank ranking only its own candidates would not)."""
    import yaml

    recipe = patched_recipe("digits/search.yaml", tmp_path, digits_setup)
    raw = yaml.safe_load(recipe.read_text())
    raw["verifiers"]["ensemble"] = {
        "class_path": "lightning_search.verifiers.EnsembleVerifier",
        "init_args": {"verifiers": ["classifier", "oracle"]},
    }
    recipe.write_text(yaml.safe_dump(raw))
    search = ["--search.algorithm=random", "--search.verifier=ensemble", "--search.num_candidates=5"]
    one = predict(recipe, tmp_path / "one", *search)
    sharded = predict(recipe, tmp_path / "sharded", *search, *TWO, "--search.candidate_sharding=true")
    same_choices(one, sharded)
    assert len({r["chosen"]["candidate"] for r in one}) > 1  # the ensemble's choice is not trivial


def test_two_process_grpo_fit_through_the_cli(tmp_path, digits_setup):
    """GRPO under DDP on 2 CPU processes: groups per rank, reward std all-gathered (std: global), the
    adapter written once."""
    recipe = patched_recipe("digits/grpo.yaml", tmp_path, digits_setup)
    main(["fit", "--config", str(recipe), *TWO, "--trainer.max_steps=4", "--data.init_args.batch_size=4",
          "--model.init_args.objective.init_args.std=global", "--trainer.enable_progress_bar=false",
          "--trainer.log_every_n_steps=1"])  # fmt: skip
    adapter = tmp_path / "runs/digits/grpo/adapter/pytorch_lora_weights.safetensors"
    assert adapter.is_file()
    logged = (tmp_path / "runs/digits/grpo/logs").rglob("metrics.csv")
    assert any("train/reward" in path.read_text() for path in logged)


def _cli(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return [sys.executable, "-m", "lightning_search.cli", *args], env


def test_ddp_fit_through_the_cli_with_the_ddp_config(tmp_path):
    recipe = patched_recipe("digits/fit.yaml", tmp_path)
    cmd, env = _cli("fit", "--config", str(recipe), "--config", str(REPO / "configs/trainer/ddp.yaml"),
                    "--trainer.devices=2", "--trainer.accelerator=cpu", "--trainer.max_steps=4",
                    "--model.init_args.backbone.init_args.size=digits-xs", "--trainer.enable_progress_bar=false",
                    cwd=tmp_path)  # fmt: skip
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "distributed_backend=gloo" in out.stderr + out.stdout
    assert "All distributed processes registered" in out.stderr + out.stdout
    assert (tmp_path / "runs/digits/generator/generator.ckpt").is_file()


def test_a_killed_predict_resumes_without_loss_or_duplicates(tmp_path, digits_setup):
    recipe = patched_recipe("digits/search.yaml", tmp_path, digits_setup)
    common = ["--data.init_args.samples_per_class=8", "--data.init_args.predict_batch_size=2", *SEARCH]
    reference = tmp_path / "reference"
    main(["predict", "--config", str(recipe), f"--trainer.default_root_dir={reference}", *common])
    run = tmp_path / "killed"
    cmd, env = _cli("predict", "--config", str(recipe), f"--trainer.default_root_dir={run}", *common, cwd=tmp_path)
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard = run / "predictions/records.rank0.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if shard.is_file() and len(shard.read_text().splitlines()) >= 20:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(shard.read_text().splitlines())
    assert 20 <= done_before < 80
    assert not (run / "metrics.json").exists()
    main(["predict", "--config", str(recipe), f"--trainer.default_root_dir={run}", *common])
    resumed, expected = read(run), read(reference)
    assert len(resumed) == len(expected) == 80
    assert len({r["sample_id"] for r in resumed}) == 80  # none duplicated, none lost
    same_choices(expected, resumed)
