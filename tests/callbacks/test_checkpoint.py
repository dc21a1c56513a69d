"""Checkpoints of fit (``callbacks/checkpoint.py``) and exact resume: a digits fit stopped by SIGTERM, or
SIGKILLed after a periodic save, resumes with ``--ckpt_path <name>-resume.ckpt`` to the very weights of an
uninterrupted fit (bitwise: the data order and every random draw are functions of the seed and the step);
the final name is written only by a fit that reached its end; everything a fit writes is under its
``--trainer.default_root_dir``; a resume with other settings is refused."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from lightning_search.cli import main
from tests.conftest import patched_recipe
from tests.helpers.faults import run_forked

STEPS = 40  # digits-xs, 64 per batch: 20 batches an epoch, so the stops below land inside an epoch


def _fit_args(recipe, root, *extra):
    return ["fit", "--config", str(recipe), f"--trainer.default_root_dir={root}", f"--trainer.max_steps={STEPS}",
            "--model.init_args.backbone.init_args.size=digits-xs", "--data.init_args.batch_size=64",
            f"--model.init_args.lr_scheduler.init_args.T_max={STEPS}", "--trainer.enable_progress_bar=false",
            "--trainer.callbacks.init_args.every_n_train_steps=10", *extra]  # fmt: skip


def _signal_at(name: str, step: int) -> str:
    spec = {"class_path": "tests.helpers.faults.SignalAt", "init_args": {"signal": name, "step": step}}
    return f"--trainer.callbacks+={json.dumps(spec)}"


def _weights(path) -> dict[str, dict[str, torch.Tensor]]:
    checkpoint = torch.load(path, weights_only=True)
    return {key: checkpoint[key] for key in ("state_dict", "current_model_state")}  # EMA and raw weights


def _assert_equal(a, b) -> None:
    for key in a:
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    recipe = patched_recipe("digits/fit.yaml", tmp)
    main(_fit_args(recipe, tmp / "run"))
    return recipe, tmp / "run"


def test_a_fit_writes_everything_under_its_root_dir_and_the_final_name_only_at_the_end(uninterrupted, tmp_path):
    recipe, run = uninterrupted
    assert sorted(p.name for p in run.iterdir()) == ["generator.ckpt", "lightning_logs"]  # no resume file left
    assert (run / "lightning_logs/version_0/config.yaml").is_file()  # the logger's folder and the saved config
    assert not (recipe.parent / "runs").exists()  # nothing where the recipe's default_root_dir points


def test_a_fit_stopped_by_sigterm_resumes_to_the_uninterrupted_weights(uninterrupted, tmp_path, capsys):
    recipe, reference = uninterrupted
    run = tmp_path / "stopped"
    with pytest.raises(SystemExit) as info:
        main(_fit_args(recipe, run, _signal_at("SIGTERM", 27)))
    assert info.value.code == 143
    resume = run / "generator-resume.ckpt"
    line = [x for x in capsys.readouterr().err.splitlines() if x.startswith("lightning-search: error:")][0]
    assert "stopped by SIGTERM" in line and f"--ckpt_path {resume}" in line
    assert not (run / "generator.ckpt").exists()  # never the final name
    assert torch.load(resume, weights_only=True)["global_step"] == 27  # the step boundary it stopped at
    main(_fit_args(recipe, run, f"--ckpt_path={resume}"))
    _assert_equal(_weights(run / "generator.ckpt"), _weights(reference / "generator.ckpt"))
    assert not resume.exists()


def test_a_fit_killed_after_a_periodic_save_resumes_to_the_uninterrupted_weights(uninterrupted, tmp_path):
    recipe, reference = uninterrupted
    run = tmp_path / "killed"
    assert run_forked(_fit_args(recipe, run, _signal_at("SIGKILL", 33)), tmp_path / "log") == -signal.SIGKILL
    resume = run / "generator-resume.ckpt"
    assert torch.load(resume, weights_only=True)["global_step"] == 30  # the last periodic save
    assert not (run / "generator.ckpt").exists() and not list(run.glob(".*partial"))
    main(_fit_args(recipe, run, f"--ckpt_path={resume}"))
    _assert_equal(_weights(run / "generator.ckpt"), _weights(reference / "generator.ckpt"))


def test_resuming_with_other_settings_is_refused(uninterrupted, tmp_path, capsys):
    recipe, _ = uninterrupted
    run = tmp_path / "other"
    with pytest.raises(SystemExit):
        main(_fit_args(recipe, run, _signal_at("SIGINT", 5)))
    resume = run / "generator-resume.ckpt"
    assert resume.is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(_fit_args(recipe, run, f"--ckpt_path={resume}", "--model.init_args.optimizer.init_args.lr=0.01"))
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2 and "model.init_args.optimizer.init_args.lr: 0.005 -> 0.01" in line
