"""The CLI end to end on digits: fit, predict from the checkpoint, and bad input."""

import json
import os

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


# -- bad input: one line each (issue 12) --------------------------------------------------------------------


def _one_line(capsys, args) -> tuple[int, str, str]:
    """(exit code, the first line printed to stderr, all of stderr) of `lightning-search ARGS`."""
    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as err:
        code = err.code
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("lightning-search: error:")]
    return code, (ours[0] if ours else (err.strip().splitlines() or [""])[-1]), err


def _recipe_with(tmp_path, setup, name: str, **sections) -> str:
    import yaml

    raw = yaml.safe_load(patched_recipe("digits/sample.yaml", tmp_path, setup).read_text())
    raw.update(sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _pairs_parquet(path, labels) -> str:
    import io

    import datasets
    from PIL import Image

    def png(v):
        buffer = io.BytesIO()
        Image.new("L", (8, 8), v).save(buffer, format="PNG")
        return buffer.getvalue()

    rows = {"caption": [i % 10 for i in range(len(labels))], "jpg_0": [png(200)] * len(labels),
            "jpg_1": [png(20)] * len(labels), "label_0": labels}  # fmt: skip
    datasets.Dataset.from_dict(rows).to_parquet(str(path))
    return str(path)


@pytest.mark.slow
def test_every_bad_input_is_one_line_that_says_what_to_do(tmp_path, digits_setup, capsys):
    """Each case of the issue: exit code 2 and one `lightning-search: error:` line naming the culprit first."""
    sample = str(patched_recipe("digits/sample.yaml", tmp_path, digits_setup))
    predict = ["predict", "--config", sample, "--data.init_args.samples_per_class=1"]
    data = digits_setup.generator.read_bytes()
    files = {"empty.ckpt": b"", "truncated.ckpt": data[: len(data) // 2], "random.ckpt": os.urandom(5000),
             "empty.csv": b"", "header.csv": b"prompt,category\n", "bad.jsonl": b'{"prompt": "a"}\n{"prompt": "b"\n',
             "latin1.csv": "prompt\nun caf\u00e9\n".encode("latin-1"), "blank.csv": b'prompt\na cat\n""\n',
             "file": b"x"}  # fmt: skip
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)

    def prompts(source):
        return ["predict", "--config", _recipe_with(tmp_path, digits_setup, source.replace(".", "_"),
                data={"class_path": "lightning_search.data.PromptDataModule", "init_args": {"source": str(tmp_path / source)}})]  # fmt: skip

    dpo = str(patched_recipe("digits/dpo.yaml", tmp_path, digits_setup))

    def pairs(labels, name):
        return ["fit", "--config", dpo, f"--data.init_args.source={_pairs_parquet(tmp_path / name, labels)}"]

    cases = [
        ("empty checkpoint", [*predict, f"--ckpt_path={tmp_path}/empty.ckpt"], "empty.ckpt' is empty"),
        ("truncated checkpoint", [*predict, f"--ckpt_path={tmp_path}/truncated.ckpt"], "is truncated"),
        ("random-bytes checkpoint", [*predict, f"--ckpt_path={tmp_path}/random.ckpt"], "not a PyTorch checkpoint"),
        ("init_weights of another model size",
         [*predict, f"--model.init_args.init_weights={digits_setup.generator}",
          "--model.init_args.backbone.init_args.size=digits-s"], "another model size?"),
        ("empty CSV", prompts("empty.csv"), "empty.csv' is empty"),
        ("header-only CSV", prompts("header.csv"), "has no prompts (a header and no rows)"),
        ("malformed JSONL line", prompts("bad.jsonl"), "bad.jsonl', line 2: not a JSON object"),
        ("non-UTF-8 file", prompts("latin1.csv"), "line 2: not UTF-8 text"),
        ("empty prompt", prompts("blank.csv"), "row 1: the prompt ('prompt') is ''"),
        ("candidate_steps <= 0", [*predict, "--search.algorithm=random", "--search.verifier=classifier",
                                  "--search.candidate_steps=0"], "--search.candidate_steps must be >= 1"),
        ("output path is a file", [*predict, f"--trainer.default_root_dir={tmp_path}/file/run"], "is a file"),
        ("output path not writable", [*predict, "--trainer.default_root_dir=/proc/lightning-search/run"],
         "cannot write into the run folder"),
        ("non-numeric preference label", pairs(["1", "yes"], "text.parquet"), "label_0 is 'yes', not a number"),
        ("preference label outside {0, 0.5, 1}", pairs([1.0, 2.0, 0.0, 0.7], "scale.parquet"),
         "row 1: label_0 is 2.0"),
        ("wrong config key", ["fit", "--config", dpo, "--model.init_args.learning_rat=0.1"],
         "error: model.init_args.learning_rat: not accepted by lightning_search.DiffusionModule"),
        ("option prefix", [*predict, "--search.num_candidate", "3"], "unknown option --search.num_candidate"),
        ("unknown command", ["fitt"], "unknown command 'fitt'"),
    ]  # fmt: skip
    inf = _recipe_with(tmp_path, digits_setup, "inf",
                       verifiers={"inf": {"class_path": "tests.helpers.verifiers.ConstantVerifier",
                                          "init_args": {"value": float("inf")}}})  # fmt: skip
    cases.append(("+inf score", ["predict", "--config", inf, "--data.init_args.samples_per_class=1",
                                 "--search.algorithm=random", "--search.verifier=inf",
                                 f"--trainer.default_root_dir={tmp_path}/inf"], "a score must be finite"))  # fmt: skip
    table = []
    for case, args, expected in cases:
        code, line, err = _one_line(capsys, args)
        table.append((case, line, code))
        assert code == 2 and line.startswith("lightning-search: error:") and expected in line, (case, line)
        assert "Traceback" not in err, case
    print("\n".join(f"| {case} | `{line}` | {code} |" for case, line, code in table))


def test_a_verifier_that_scores_only_nan_is_a_visible_warning(tmp_path, digits_setup, capsys, recwarn):
    nan = _recipe_with(tmp_path, digits_setup, "nan",
                       verifiers={"nan": {"class_path": "tests.helpers.verifiers.ConstantVerifier",
                                          "init_args": {"value": float("nan")}}})  # fmt: skip
    code, _, err = _one_line(capsys, ["predict", "--config", nan, "--data.init_args.samples_per_class=1",
                                      "--search.algorithm=random", "--search.verifier=nan",
                                      f"--trainer.default_root_dir={tmp_path}/nan"])  # fmt: skip
    warned = err + "".join(str(w.message) for w in recwarn)  # a Python warning: stderr, or pytest's record of it
    assert code == 0 and "verifier 'nan' gave no finite score (NaN) to any candidate of 10 of 10 samples" in warned
    records = [json.loads(x) for x in (tmp_path / "nan/predictions/records.jsonl").read_text().splitlines()]
    assert all(r["score"] is None and r["chosen"]["candidate"] == 0 for r in records)


def test_a_rerun_with_other_settings_stops_and_changes_nothing(tmp_path, digits_setup, capsys):
    from tests.test_runs import tree

    recipe = str(patched_recipe("digits/search.yaml", tmp_path, digits_setup))
    run = tmp_path / "mix"
    base = ["predict", "--config", recipe, f"--trainer.default_root_dir={run}", "--data.init_args.samples_per_class=2"]
    assert _one_line(capsys, [*base, "--search.num_candidates=8"])[0] == 0
    before = tree(run)
    code, line, _ = _one_line(capsys, [*base, "--search.algorithm=zero_order", "--search.num_candidates=4",
                                       "--search.iterations=2"])  # fmt: skip
    assert code == 2 and "search.algorithm: 'random' -> 'zero_order'" in line
    assert "search.iterations: 1 -> 2" in line and "search.num_candidates: 8 -> 4" in line
    code, line, _ = _one_line(capsys, [*base, "--search.num_candidates=32"])  # the finished folder, relabelled?
    assert code == 2 and "search.num_candidates: 8 -> 32" in line and "nothing in it was changed" in line
    assert tree(run) == before
    assert _one_line(capsys, [*base, "--search.num_candidates=8", "--search.decode_batch_size=3"])[0] == 0  # resumes


def test_help_lists_every_command(capsys):
    from lightning_search.cli import COMMANDS

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    for name in (
        "fit",
        "validate",
        "test",
        "predict",
        "pairs",
        "sweep",
        "report",
        "compare",
        "serve-verifier",
        "readme",
    ):
        assert name in COMMANDS and f"    {name}" in out


def test_the_parser_built_once_serves_each_cli_its_own_settings():
    """LightningSearchCLI builds its parser once per process; Lightning's instantiators (which store the parsed
    model and data settings as hyperparameters) must still read each CLI's own config, not the first one's."""
    from lightning_search.lightning_cli import LightningSearchCLI

    def cli(steps: int, batch_size: int) -> LightningSearchCLI:
        return LightningSearchCLI(
            args=["--config", "recipes/digits/fit.yaml", "--model.init_args.backbone.init_args.size=digits-xs",
                  f"--model.init_args.sampler.steps={steps}", f"--data.init_args.batch_size={batch_size}"],
            run=False,
        )  # fmt: skip

    first, second = cli(3, 16), cli(7, 32)
    assert second.parser is first.parser
    assert (first.model.hparams["sampler"]["steps"], first.datamodule.hparams["batch_size"]) == (3, 16)
    assert (second.model.hparams["sampler"]["steps"], second.datamodule.hparams["batch_size"]) == (7, 32)
    assert second.model.sampler.steps == 7


def test_a_progress_position_moves_the_recipes_bar_to_its_own_terminal_lines():
    """sweep --jobs N gives each process a position: its predict bar then opens two lines per position down
    (TQDMProgressBar's layout), not on the line another process draws on."""
    from lightning_search.lightning_cli import LightningSearchCLI

    args = [
        "--config",
        "recipes/digits/fit.yaml",
        "--model.init_args.backbone.init_args.size=digits-xs",
        "--trainer.callbacks+=lightning_search.callbacks.SearchProgressBar",
    ]  # as in the predict recipes
    positions = []
    for position in (0, 2):
        bar = LightningSearchCLI(args=args, run=False, progress_position=position).trainer.progress_bar_callback
        opened = bar.init_predict_tqdm()
        positions.append((bar.process_position, abs(opened.pos)))
        opened.close()
    assert positions == [(0, 0), (2, 4)]


@pytest.mark.parametrize(
    ("command", "recipe"),
    [("fit", "digits/fit.yaml"), ("predict", "digits/search.yaml"), ("fit", "tiny/sd_dpo.yaml")],
)  # fmt: skip
def test_the_stored_hyperparameters_are_lightnings_own_dump(command, recipe):
    """LightningSearchCLI dumps the parsed config for save_hyperparameters without validating it again: the
    result must be what LightningCLI's own (validating) dump gives (a generator, a search with verifiers,
    an SD LoRA DPO fine-tune)."""
    from lightning.pytorch.cli import LightningCLI

    from lightning_search.lightning_cli import LightningSearchCLI, _ParseOnlyCLI

    cli = _ParseOnlyCLI(args=[command, "--config", f"recipes/{recipe}"])
    LightningSearchCLI._dump_config(cli)
    ours = cli.config_dump
    del cli.config_dump
    LightningCLI._dump_config(cli)
    assert ours == cli.config_dump and "model" in ours
