"""The prediction writer: what one batch becomes on disk (an image per sample, a record per sample with the
search result's fields, appended to the rank's shard, merged at the end), a stop at the batch boundary on
SIGTERM, and a folder with records that was not resumed refused; predict sharded over 2 CPU processes writes
what 1 process writes (records merged, same choices, same images), with samples or candidates sharded; a
killed run resumes without loss or duplicates. Two-process runs use ddp_fork in-process (ENVIRONMENT.md:
plain ddp would re-run pytest in the child), the killed one a subprocess."""

import json
import re
import signal

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


def _comparable(run) -> tuple[list[dict], dict[str, bytes]]:
    """A run folder's records (without their wall time) and every file under predictions/images, as bytes."""
    records = [{k: v for k, v in r.items() if k != "wall_time"} for r in read(run)]
    images = {p.name: p.read_bytes() for p in sorted((run / "predictions/images").iterdir())}
    return records, images


@pytest.mark.slow
def test_killed_stopped_and_interrupted_predicts_resume_to_what_an_uninterrupted_run_writes(tmp_path, digits_setup):
    """One run folder, five interruptions in a row, each resumed by the next run: SIGKILL inside an image
    write, inside a record write and just after an image write (at seeded random points), then SIGTERM and
    SIGINT, which stop after the batch in flight with exit codes 143 and 130; the last run resumes to the end.
    Records and images equal an uninterrupted run's, byte for byte; nothing is lost or duplicated."""
    import random

    from tests.helpers.faults import run_forked

    recipe = patched_recipe("digits/search.yaml", tmp_path, digits_setup)
    common = ["predict", "--config", str(recipe), "--data.init_args.samples_per_class=3",
              "--data.init_args.predict_batch_size=3", *SEARCH]  # fmt: skip
    main([*common, f"--trainer.default_root_dir={tmp_path / 'reference'}"])
    run, log = tmp_path / "interrupted", tmp_path / "child.log"
    args = [*common, f"--trainer.default_root_dir={run}"]
    rng = random.Random(12)  # 30 samples in 10 batches of 3: each kill lands in the first two batches left
    kills = [("image", rng.randint(1, 6), "inside"), ("record", rng.randint(1, 2), "inside"),
             ("image", rng.randint(1, 3), "after")]  # fmt: skip
    done = []
    for kill in kills:
        assert run_forked(args, log, kill) == -signal.SIGKILL, kill
        done.append(len(RunFolder(run).done_ids()))
        assert not (run / "metrics.json").exists()
    for name, code in (("SIGTERM", 143), ("SIGINT", 130)):
        signal_at = json.dumps(
            {"class_path": "tests.helpers.faults.SignalAt", "init_args": {"signal": name, "batch": 0}}
        )
        assert run_forked([*args, f"--trainer.callbacks+={signal_at}"], log) == code, log.read_text()[-2000:]
        done.append(len(RunFolder(run).done_ids()))
    lines = re.findall(r"lightning-search: error: .*", log.read_text())  # after the progress bar's last \r
    assert [("SIGTERM" in line, "SIGINT" in line) for line in lines] == [(True, False), (False, True)]
    assert "rerun the same command to resume" in lines[0]
    assert done == sorted(done) and done[-1] < 30, done  # progress kept across the kills, never complete
    main(args)
    assert _comparable(run) == _comparable(tmp_path / "reference")
    leftovers = [p.name for p in run.rglob("*") if p.name.startswith(".") or "rank" in p.name]
    assert leftovers == []  # no temporary image, no shard
