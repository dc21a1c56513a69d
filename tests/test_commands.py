"""The commands of ``commands.py``. `lightning-search compare`: predicts the runs of a compare config, then
report.md / report.html with every verifier's mean score and metric per run, a bar plot and the same seeds side by
side."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lightning_search import DiffusionModule
from lightning_search.backbones import DigitsBackbone
from lightning_search.errors import ConfigurationError, RunFolderError
from lightning_search.lora import lora_parameters, save_lora_adapter
from lightning_search.runs import read_records
from tests.conftest import patched_recipe


@pytest.fixture(scope="module")
def compared(tmp_path_factory, digits_setup):
    tmp = tmp_path_factory.mktemp("compare")
    module = DiffusionModule(DigitsBackbone("digits-xs"), lora={"rank": 2}, init_weights=str(digits_setup.generator))
    with torch.no_grad():
        for _, p in lora_parameters(module.backbone):
            p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    save_lora_adapter(module.backbone, tmp / "adapter", module.lora_metadata)
    predict = patched_recipe("digits/dpo_predict.yaml", tmp, digits_setup)
    spec = yaml.safe_load((Path(__file__).parents[1] / "recipes/digits/dpo_compare.yaml").read_text())
    spec.update(predict_config=str(predict), output_dir=str(tmp / "out"))
    for run in spec["runs"]:
        # the DPO and GRPO runs both load the test's adapter
        run["args"] = [a.replace("runs/digits/dpo/adapter", str(tmp / "adapter")) for a in run["args"]]
        run["args"] = [a.replace("runs/digits/grpo/adapter", str(tmp / "adapter")) for a in run["args"]]
        run["args"] += ["--data.init_args.samples_per_class=2", "--data.init_args.classes=[3,7]"]
    (tmp / "compare.yaml").write_text(yaml.safe_dump(spec))
    from lightning_search.cli import main

    main(["compare", "--config", str(tmp / "compare.yaml")])
    return tmp / "out", [r["name"] for r in spec["runs"]]


def test_compare_config_predicts_every_run_then_reports(compared):
    out, names = compared
    metrics = {n: json.loads((out / n / "metrics.json").read_text()) for n in names}
    assert [metrics[n]["nfe"] for n in names] == [10, 10, 40, 40, 10, 40]  # the searched runs share one budget
    base, dpo = read_records(out / "base"), read_records(out / "dpo")
    assert [r["seed"] for r in base] == [r["seed"] for r in dpo]  # same ids, same noises ...
    assert base[0]["scores"]["classifier"] != dpo[0]["scores"]["classifier"]  # ... another model
    report = (out / "report.md").read_text()
    table, diagnostics = report.split("## Verifier-hacking diagnostics")
    lines = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    # every run, fine-tunes without search too, set against the base model on the classifier it was steered by
    assert all(f"| {name} | classifier |" in diagnostics for name in names[1:])
    header = [c.strip() for c in lines["name"].split("|")[1:-1]]
    for name in names:
        cells = dict(zip(header, [c.strip() for c in lines[name].split("|")[1:-1]]))
        for verifier, value in metrics[name]["verifier_scores"].items():
            assert float(cells[f"score/{verifier}"]) == pytest.approx(value, abs=0.006)
        assert float(cells["inception_score"]) == pytest.approx(metrics[name]["inception_score"], abs=0.006)
    for image in ("bars.png", "grid.png"):
        assert (out / image).stat().st_size > 1000 and f"]({image})" in report


def test_compare_logs_its_table_bars_and_grid_to_tensorboard_in_its_folder(compared):
    from PIL import Image

    from tests.helpers.tensorboard import events, pixels, text

    out, names = compared
    logged = events(out / "tensorboard")
    (grid,) = logged.Images("compare/grid")
    assert np.array_equal(pixels(grid), np.asarray(Image.open(out / "grid.png").convert("RGB")))
    (bars,) = logged.Images("compare/bars")
    assert bars.width > 200 and pixels(bars).std() > 0
    table = text(logged, "compare/runs")
    metrics = {n: json.loads((out / n / "metrics.json").read_text()) for n in names}
    for name in names:
        assert f"| {name} | {metrics[name]['algorithm']} |" in table


def test_html_page_shows_the_same_samples_side_by_side_with_relative_paths(compared):
    out, names = compared
    page = (out / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    samples = [s for s in sources if s.endswith(".png") and "/" in s]
    assert samples and all(not s.startswith("/") and (out / s).is_file() for s in sources)
    assert len(samples) % len(names) == 0 and {s.split("/")[0] for s in samples} == set(names)


def test_run_folders_as_arguments_and_bad_input(compared, tmp_path):
    from lightning_search.commands import compare

    out, names = compared
    compare([str(out / "base"), str(out / "dpo+search"), "--output_dir", str(tmp_path), "--names=[b,d]"])
    report = (tmp_path / "report.md").read_text()
    assert "| b |" in report and "| d |" in report
    with pytest.raises(ConfigurationError, match="metrics.json"):
        compare([str(out / "base"), str(tmp_path / "nothing"), "--output_dir", str(tmp_path)])
    with pytest.raises(ConfigurationError, match="run folders"):
        compare([])


# -- sweep --------------------------------------------------------------------------------------------------


def _sweep_spec(tmp_path, digits_setup, points) -> str:
    predict = patched_recipe("digits/sample.yaml", tmp_path, digits_setup)
    spec = {"title": "two points", "predict_config": str(predict), "output_dir": str(tmp_path / "sweep"),
            "points": points}  # fmt: skip
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


SMALL = ["--data.init_args.samples_per_class=1"]


@pytest.mark.slow
def test_a_sweep_reuses_finished_points_of_the_same_settings_only(tmp_path, digits_setup, monkeypatch):
    from lightning_search import commands

    points = [{"name": "steps1", "group": "steps", "args": [*SMALL, "--model.init_args.sampler.steps=1"]},
              {"name": "steps2", "group": "steps", "args": [*SMALL, "--model.init_args.sampler.steps=2"]}]  # fmt: skip
    spec = _sweep_spec(tmp_path, digits_setup, points)
    commands.sweep(["--config", spec])
    report = (tmp_path / "sweep/report.md").read_text()
    assert "| steps | steps1 | 2.00 |" in report and "| steps | steps2 | 4.00 |" in report
    assert "paper's findings" not in report  # the config asks for none
    from lightning_search.reporting.scaling import read_scaling_csv
    from tests.helpers.tensorboard import events, scalars, text

    logged = events(tmp_path / "sweep/tensorboard")  # the curves as scalars at step = NFE, the figure, the table
    rows = read_scaling_csv(tmp_path / "sweep/scaling.csv")
    for key in ("inception_score", "fid"):
        assert scalars(logged, f"sweep/{key}/steps") == pytest.approx({r["nfe"]: r[key] for r in rows}, abs=1e-5)
    assert len(logged.Images("sweep/scaling")) == 1
    assert "| steps | steps1 |" in text(logged, "sweep/points")
    ran = []
    monkeypatch.setattr(commands, "run_point", lambda *a: ran.append(a) or {})
    commands.sweep(["--config", spec])  # both finished with these settings: nothing is loaded or run
    assert ran == []
    commands.sweep(["--config", spec, "--only", "[steps2]"])  # one point rerun (reused): the report keeps both
    assert ran == [] and [r["name"] for r in read_scaling_csv(tmp_path / "sweep/scaling.csv")] == ["steps1", "steps2"]
    (tmp_path / "sweep/report.md").unlink()
    commands.report(["--config", spec])  # the config's own report, nothing run
    assert ran == [] and (tmp_path / "sweep/report.md").read_text() == report
    with pytest.raises(ConfigurationError, match="name a sweep folder, or --config a sweep YAML"):
        commands.report([])
    points[1]["args"][-1] = "--model.init_args.sampler.steps=3"
    monkeypatch.undo()
    with pytest.raises(RunFolderError, match=r"model.init_args.sampler.steps: 2 -> 3"):
        commands.sweep(["--config", _sweep_spec(tmp_path, digits_setup, points)])


def drop_wall_time(line: str) -> dict:
    return {k: v for k, v in json.loads(line).items() if k != "wall_time"}


@pytest.mark.slow
def test_a_sweep_in_two_processes_writes_what_one_process_writes(tmp_path, digits_setup):
    from lightning_search import commands
    from lightning_search.reporting.scaling import read_scaling_csv

    points = [{"name": f"steps{k}", "group": "steps", "args": [*SMALL, f"--model.init_args.sampler.steps={k}"]}
              for k in (1, 2, 3)]  # fmt: skip
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    one = _sweep_spec(tmp_path / "one", digits_setup, points)
    commands.sweep(["--config", one])
    two = _sweep_spec(tmp_path / "two", digits_setup, points)
    commands.sweep(["--config", two, "--jobs", "2"])  # shares [steps1, steps3] and [steps2]
    for point in ("steps1", "steps2", "steps3"):
        serial, parallel = tmp_path / "one/sweep" / point, tmp_path / "two/sweep" / point
        records = (serial / "predictions/records.jsonl").read_text().splitlines()
        assert len(records) == 10
        assert [drop_wall_time(r) for r in records] == [
            drop_wall_time(r) for r in (parallel / "predictions/records.jsonl").read_text().splitlines()
        ], point
        images = sorted((serial / "predictions/images").iterdir())
        assert len(images) == 10
        assert all(
            image.read_bytes() == (parallel / "predictions/images" / image.name).read_bytes() for image in images
        )
    rows = [read_scaling_csv(tmp_path / f"{run}/sweep/scaling.csv") for run in ("one", "two")]
    assert [r["name"] for r in rows[1]] == ["steps1", "steps2", "steps3"]
    assert [{k: v for k, v in r.items() if "wall_time" not in k} for r in rows[1]] == [
        {k: v for k, v in r.items() if "wall_time" not in k} for r in rows[0]
    ]
    for point in points[1:]:  # other settings for two finished points: both children stop, nothing changes
        point["args"][-1] += "0"
    before = (tmp_path / "two/sweep/steps2/predictions/records.jsonl").read_bytes()
    with pytest.raises(ConfigurationError, match=r"the process running \['steps2'\] failed \(exit code 2"):
        commands.sweep(["--config", _sweep_spec(tmp_path / "two", digits_setup, points), "--jobs", "2"])
    assert (tmp_path / "two/sweep/steps2/predictions/records.jsonl").read_bytes() == before
    with pytest.raises(ConfigurationError, match=r"--only names no point of .*\['steps9'\]; the points: steps1, "):
        commands.sweep(["--config", two, "--only", "[steps9]"])
    with pytest.raises(ConfigurationError, match="--jobs must be >= 1, got 0"):
        commands.sweep(["--config", two, "--jobs", "0"])


def test_a_stopped_sweep_says_how_to_resume_it(tmp_path, digits_setup, monkeypatch):
    from lightning_search import commands
    from lightning_search.errors import Interrupted

    def stopped(*args):
        raise Interrupted("SIGTERM", "predict into 'x'")

    monkeypatch.setattr(commands, "run_point", stopped)
    spec = _sweep_spec(tmp_path, digits_setup, [{"name": "steps1", "args": SMALL}])
    with pytest.raises(Interrupted, match="^sweep stopped by SIGTERM; .*: rerun the same command to resume$") as err:
        commands.sweep(["--config", spec])
    assert err.value.exit_code == 143
    with pytest.raises(Interrupted, match="rerun the command without --force to resume$"):  # --force would start over
        commands.sweep(["--config", spec, "--force", "true"])


def test_each_process_of_a_sweep_draws_its_progress_bars_on_its_own_lines(tmp_path, digits_setup, monkeypatch):
    """--jobs 2: each child runs its points with its own progress position (0 and 1); one process: 0."""
    from lightning_search import commands

    def record(predict_config, output_dir, args, progress_position=0):  # the forked children inherit it
        (tmp_path / f"{Path(output_dir).name}.position").write_text(str(progress_position))

    monkeypatch.setattr(commands, "run_point", record)
    points = [{"name": f"steps{k}", "args": [*SMALL, f"--model.init_args.sampler.steps={k}"]} for k in (1, 2, 3)]
    spec = _sweep_spec(tmp_path, digits_setup, points)
    commands.sweep(["--config", spec, "--jobs", "2", "--report", "false"])  # shares [steps1, steps3] and [steps2]
    positions = {p.stem: int(p.read_text()) for p in tmp_path.glob("*.position")}
    assert positions == {"steps1": 0, "steps2": 1, "steps3": 0}
    commands.sweep(["--config", spec, "--only", "[steps2]", "--report", "false"])
    assert (tmp_path / "steps2.position").read_text() == "0"


def test_a_wrong_key_in_any_point_fails_before_the_first_point_runs(tmp_path, digits_setup):
    from lightning_search import commands

    points = [{"name": "ok", "args": SMALL}, {"name": "typo", "args": ["--search.num_candidate=4"]}]
    with pytest.raises(ConfigurationError, match=r"run 'typo': unknown option --search.num_candidate=4"):
        commands.sweep(["--config", _sweep_spec(tmp_path, digits_setup, points)])
    assert not (tmp_path / "sweep").exists()
    with pytest.raises(ConfigurationError, match=r"points.init_args.argz: not accepted"):
        commands.sweep(["--config", _sweep_spec(tmp_path, digits_setup, [{"name": "x", "argz": []}])])
