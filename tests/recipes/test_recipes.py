"""Recipes cannot rot: every ``recipes/paper/*.yaml`` parses and instantiates through LightningSearchCLI with
its models swapped for their tiny offline twins, every ``recipes/tiny/*.yaml`` runs ``predict`` with
random search end to end (predictions and records written), and the tiny DrawBench ensemble recipe (five
verifiers, random search) writes the per-verifier table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lightning_search import DiffusionModule
from lightning_search.backbones import PipelineBackbone
from lightning_search.cli import LightningSearchCLI, main
from lightning_search.search import RandomSearch

REPO = Path(__file__).resolve().parents[2]
PAPER = sorted((REPO / "recipes" / "paper").glob("*.yaml"))
# one tiny recipe per family (other tiny recipes, e.g. the ensemble or DPO ones, have tests of their own)
TINY = [REPO / "recipes" / "tiny" / f"{family}.yaml" for family in ("dit", "flux", "pixart", "sd", "sd3", "sdxl")]

# backbone arguments that name real weights or real-model sizes; the tiny twin keeps the rest
REAL_ONLY = {"torch_dtype", "variant", "revision", "unet", "vae", "height", "width", "local_files_only"}
# how each verifier class is switched to its tiny twin
TINY_VERIFIER_ARGS = {
    "ClipScoreVerifier": {"model": "tiny"},
    "ImageRewardVerifier": {"model": "tiny"},
    "PickScoreVerifier": {"model": "tiny"},
    "HPSVerifier": {"checkpoint": "tiny"},
    "AestheticVerifier": {"clip_model": "tiny"},
    "SelfSupervisedVerifier": {"clip_model": "tiny"},
}


def tiny_peft_adapter(backbone_config: dict, folder: Path) -> Path:
    """A peft-format LoRA (``PeftModel.save_pretrained``, as Flow-GRPO publishes its adapters) for the tiny twin
    of the recipe's backbone class, with non-zero weights."""
    import importlib

    from peft import LoraConfig, get_peft_model

    module, _, name = backbone_config["class_path"].rpartition(".")
    backbone = getattr(importlib.import_module(module), name)("tiny")
    network = getattr(backbone, backbone.components[0])
    peft_model = get_peft_model(
        network, LoraConfig(r=4, lora_alpha=4, target_modules=list(backbone.lora_target_modules))
    )
    with torch.no_grad():
        for key, p in peft_model.named_parameters():
            if "lora_B" in key:
                p.normal_(0, 0.01)
    peft_model.save_pretrained(str(folder))
    return folder


def tiny_twin(config: dict, root: Path) -> dict:
    """The recipe with its hub models replaced by tiny twins, on the CPU, writing under ``root``."""
    config = json.loads(json.dumps(config))
    for key in ("return_predictions", "ckpt_path"):  # predict-only keys: not parsed without a subcommand
        config.pop(key, None)
    trainer = config["trainer"]
    trainer.update(accelerator="cpu", devices=1, precision="32-true", default_root_dir=str(root))
    if trainer.get("strategy") not in (None, "auto"):
        trainer["strategy"] = "auto"  # the recipe's DDP over 8 GPUs: one CPU process here
    if "lora_path" in config["model"]["init_args"]:  # an adapter trained elsewhere: a peft one for the twin
        config["model"]["init_args"]["lora_path"] = str(
            tiny_peft_adapter(config["model"]["init_args"]["backbone"], root / "lora")
        )
    backbone = config["model"]["init_args"]["backbone"]
    args = {k: v for k, v in backbone.get("init_args", {}).items() if k not in REAL_ONLY}
    args["pretrained"] = "tiny"
    if backbone["class_path"].endswith("FluxBackbone"):
        args.update(height=32, width=32)
    backbone["init_args"] = args
    for verifier in (config.get("verifiers") or {}).values():
        name = verifier["class_path"].rsplit(".", 1)[-1]
        verifier["init_args"] = {**(verifier.get("init_args") or {}), **TINY_VERIFIER_ARGS.get(name, {})}
    return config


@pytest.mark.parametrize("recipe", PAPER, ids=[p.stem for p in PAPER])
def test_paper_recipe_instantiates_with_tiny_twins(recipe, tmp_path):
    raw = yaml.safe_load(recipe.read_text())
    header = recipe.read_text().split("\nseed_everything")[0]
    assert "Loads:" in header and "Expects:" in header and "GB" in header  # what it loads, memory and time
    assert raw["trainer"]["accelerator"] == "gpu"
    assert not raw["model"]["init_args"]["backbone"]["init_args"]["pretrained"].startswith("tiny")
    path = tmp_path / recipe.name
    twin = tiny_twin(raw, tmp_path / "run")
    if "search" not in raw:  # a fit recipe: two optimizer steps of small groups
        twin["trainer"]["max_steps"] = 2
        twin["model"]["init_args"]["objective"]["init_args"]["group_size"] = 3
        twin["trainer"]["logger"] = False
    path.write_text(yaml.safe_dump(twin))
    cli = LightningSearchCLI(args=["--config", str(path)], run=False)
    assert isinstance(cli.model, DiffusionModule) and isinstance(cli.model.backbone, PipelineBackbone)
    if "search" not in raw:  # a fit recipe (GRPO): its rewards are verifiers of the run
        objective = cli.model.objective
        cli.configure_model_search()
        assert set(objective.rewards) <= set(cli.model.verifiers) and cli.model.sampler.stochastic(cli.model.backbone)
        cli.trainer.fit(cli.model, cli.datamodule)  # GRPO with CFG on the tiny twin, rollouts to updates
        # the adapter follows the root dir (the twin's tmp_path / "run"), as everything a fit writes
        assert (tmp_path / "run" / "adapter" / "pytorch_lora_weights.safetensors").is_file()
        return
    assert cli.model.sampler.solver == "scheduler"
    cli.configure_model_search()  # builds the verifiers and the search algorithm, as before predict
    search = raw["search"]
    assert cli.model.search_config.verifier in cli.model.verifiers
    algorithm = cli.model.search_algorithm()
    if search["algorithm"] == "random":
        assert isinstance(algorithm, RandomSearch) and algorithm.num_candidates == search["num_candidates"]
    if recipe.stem == "flux_dev_drawbench_random":  # the paper's budget: 96 x 30 = 2,880 search NFEs
        assert algorithm.nfe_per_sample(cli.model.sampler, cli.model.backbone) == 2880
    if recipe.stem == "sd35m_drawbench_random":  # 16 candidates x 40 steps x 2 (CFG 4.5) = 1,280 NFEs
        assert algorithm.nfe_per_sample(cli.model.sampler, cli.model.backbone) == 1280
    cli.datamodule.predict_dataset()  # the prompt set / class list loads offline


@pytest.mark.slow
@pytest.mark.parametrize("recipe", TINY, ids=[p.stem for p in TINY])
def test_tiny_recipe_predicts_with_random_search(recipe, tmp_path):
    verifier = next(iter(yaml.safe_load(recipe.read_text())["verifiers"]))
    main(
        [
            "predict",
            "--config",
            str(recipe),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--search.algorithm",
            "random",
            "--search.num_candidates",
            "2",
            "--search.verifier",
            verifier,
        ]
    )
    records = [json.loads(line) for line in (tmp_path / "predictions" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["algorithm"] == "random" and len(r["candidate_seeds"]) == 2 for r in records)
    assert all((tmp_path / "predictions" / r["image"]).is_file() for r in records)
    sampler = yaml.safe_load(recipe.read_text())["model"]["init_args"]["sampler"]
    assert records[0]["nfe"] == 2 * sampler["steps"] * (2 if sampler["guidance_scale"] > 1 else 1)


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
