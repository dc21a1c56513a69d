"""The prediction writer: what one batch becomes on disk (an image per sample, a record per sample with the
search result's fields, appended to the rank's shard, merged at the end), a stop at the batch boundary on
SIGTERM, and a folder with records that was not resumed refused; predict sharded over 2 CPU processes writes
what 1 process writes (records merged, same choices, same images), with samples or candidates sharded; a
killed run resumes without loss or duplicates. Two-process runs use ddp_fork in-process (ENVIRONMENT.md:
plain ddp would re-run pytest in the child), the killed one a subprocess."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lightning_search.callbacks import PredictionWriter
from lightning_search.cli import main
from lightning_search.errors import Interrupted, RunFolderError
from lightning_search.runs import RunFolder, load_image
from lightning_search.search import SearchConfig
from lightning_search.search.base import SearchResult
from tests.conftest import patched_recipe


class FakeStrategy:
    def barrier(self, *args):
        pass


class FakeTrainer:
    """What the writer reads of a Trainer, on one rank."""

    def __init__(self, root, sigterm: bool = False) -> None:
        self.default_root_dir, self.received_sigterm = str(root), sigterm
        self.is_global_zero, self.global_rank, self.strategy = True, 0, FakeStrategy()


class FakeModule:
    search_config = SearchConfig("random", "v", num_candidates=2)


def _prediction(ids: list[int]) -> dict:
    n = len(ids)
    images = torch.stack([torch.full((1, 8, 8), i / 10) for i in range(n)])
    result = SearchResult(
        x0=torch.zeros(n, 1, 8, 8),
        images=images,
        score=torch.tensor([1.5 + i for i in range(n)]),
        nfe=torch.full((n,), 20),
        verifier_calls=torch.full((n,), 2),
        chosen=[{"round": 0, "candidate": 1, "seed": 100 + i} for i in range(n)],
        candidate_seeds=[[99 + i, 100 + i] for i in range(n)],
        trace=[[1.0, 1.5 + i] for i in range(n)],
    )
    return {"sample_id": ids, "condition": [i % 10 for i in ids], "images": images, "result": result,
            "evaluations": {"v": result.score, "w": torch.tensor([float("nan")] * n)},
            "gflops": [2.0] * n, "verifier_gflops": [0.5] * n, "wall_time": 0.25}  # fmt: skip


def _write(writer, trainer, ids):
    writer.write_on_batch_end(trainer, FakeModule(), _prediction(ids), None, None, 0, 0)


def test_a_batch_becomes_one_png_and_one_record_per_sample(tmp_path):
    writer, trainer = PredictionWriter(), FakeTrainer(tmp_path)
    writer.resume_from(set())
    writer.setup(trainer, FakeModule(), "predict")
    _write(writer, trainer, [7, 3])
    shard = RunFolder(tmp_path).shard(0)
    lines = [json.loads(line) for line in shard.read_text().splitlines()]
    assert [r["sample_id"] for r in lines] == [7, 3]  # appended in batch order, sorted at the merge
    first = lines[0]
    assert first["image"] == "images/000007.png" and first["condition"] == 7
    assert (first["algorithm"], first["verifier"], first["seed"], first["score"]) == ("random", "v", 100, 1.5)
    assert first["scores"] == {"v": 1.5, "w": None}  # NaN is stored as null: records stay strict JSON
    assert (first["nfe"], first["gflops"], first["verifier_calls"], first["trace"]) == (20, 2.0, 2, [1.0, 1.5])
    assert first["candidate_seeds"] == [99, 100] and first["chosen"]["candidate"] == 1
    assert load_image(tmp_path / "predictions/images/000003.png").mean().item() == pytest.approx(0.1, abs=1 / 255)
    writer.merge(trainer)
    merged = [json.loads(line) for line in (tmp_path / "predictions/records.jsonl").read_text().splitlines()]
    assert [r["sample_id"] for r in merged] == [3, 7] and not shard.exists()


def test_sigterm_stops_after_the_batch_in_flight_is_written(tmp_path):
    writer, trainer = PredictionWriter(), FakeTrainer(tmp_path, sigterm=True)
    writer.resume_from(set())
    writer.setup(trainer, FakeModule(), "predict")
    with pytest.raises(Interrupted, match="SIGTERM") as info:
        _write(writer, trainer, [1, 2])
    assert info.value.exit_code == 143
    assert RunFolder(tmp_path).done_ids() == {1, 2}  # the batch was written before stopping


def test_a_folder_with_records_is_refused_unless_resumed(tmp_path):
    writer, trainer = PredictionWriter(), FakeTrainer(tmp_path)
    writer.resume_from(set())
    writer.setup(trainer, FakeModule(), "predict")
    _write(writer, trainer, [1])
    with pytest.raises(RunFolderError, match="already holds 1 records"):
        PredictionWriter().setup(trainer, FakeModule(), "predict")  # nobody ran the resume step
    fresh = PredictionWriter(resume=False)
    fresh.setup(trainer, FakeModule(), "predict")  # resume=False starts the records afresh
    assert RunFolder(tmp_path).done_ids() == set()


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
    for r in records:
        a, b = load_image(run_a / "predictions" / r["image"]), load_image(run_b / "predictions" / r["image"])
        assert (a - b).abs().max().item() <= 1 / 255 + 1e-6  # PNG quantisation of float-close images


SEARCH = ["--search.algorithm=random", "--search.verifier=classifier", "--search.num_candidates=5"]
TWO = ["--trainer.strategy=ddp_fork", "--trainer.devices=2", "--trainer.accelerator=cpu"]


@pytest.mark.slow
def test_two_processes_choose_what_one_process_chooses(tmp_path, digits_setup):
    recipe = patched_recipe("digits/search.yaml", tmp_path, digits_setup)
    one = predict(recipe, tmp_path / "one", *SEARCH)
    two = predict(recipe, tmp_path / "two", *SEARCH, *TWO)
    assert len(one) == 30
    same_choices(one, two)
    images_close(tmp_path / "one", tmp_path / "two", one)
    assert not list((tmp_path / "two/predictions").glob("records.rank*.jsonl"))  # shards merged


@pytest.mark.slow
def test_candidate_sharding_chooses_the_same_candidate(tmp_path, digits_setup):
    recipe = patched_recipe("digits/search.yaml", tmp_path, digits_setup)
    one = predict(recipe, tmp_path / "one", *SEARCH)
    sharded = predict(recipe, tmp_path / "sharded", *SEARCH, *TWO, "--search.candidate_sharding=true")
    same_choices(one, sharded)
    assert [r["chosen"]["candidate"] for r in one] == [r["chosen"]["candidate"] for r in sharded]
    images_close(tmp_path / "one", tmp_path / "sharded", one)


@pytest.mark.slow
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


def _cli(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return [sys.executable, "-m", "lightning_search.cli", *args], env


@pytest.mark.slow
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
