"""The README's results, generated from the runs that produced them.

``make demo`` runs the digits job (``make demo-shapes`` the shapes world); ``lightning-search readme`` then
reads their run folders (the sweeps' ``scaling.csv`` and ``report.md``, the fine-tuning comparisons'
``metrics.json`` files, the classifiers' training logs), records every number the README quotes in
``docs/results/<world>.json`` and rewrites the README's generated blocks (between ``<!-- generated: NAME -->``
and ``<!-- end generated -->``) from those records. ``--check`` changes nothing and fails when the README, the
records and (when present) the run folders disagree, so a README edited by hand or left behind by a fresh run
cannot pass the tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_search.errors import ConfigurationError
from lightning_search.reporting.loggers import read_scalar_events, read_scalars
from lightning_search.reporting.scaling import read_scaling_csv

RECORD = Path("docs/results/digits.json")
ASSETS = Path("docs/assets")
MAX_PICTURE_BYTES = 1_000_000  # the repository keeps no file over 1 MB
MARK = re.compile(r"<!-- generated: (?P<name>[\w-]+) -->\n.*?<!-- end generated -->", re.S)

# sweep points the README's table shows, with the labels it gives them
SWEEP_POINTS = [
    ("steps-nfe2", "no search, Heun 1 step"), ("steps-nfe10", "no search, Heun 5 steps"),
    ("steps-nfe20", "no search, Heun 10 steps"), ("steps-nfe64", "no search, Heun 32 steps"),
    ("random-classifier-n2", "random search N = 2"), ("random-classifier-n4", "random search N = 4"),
    ("random-classifier-n8", "random search N = 8"), ("random-classifier-n16", "random search N = 16"),
    ("random-classifier-n32", "random search N = 32"),
    ("random-self_supervised-n32", "self-supervised verifier N = 32"),
    ("random-oracle-n32", "oracle verifier N = 32"), ("zero_order-classifier-k3", "zero-order, lambda 0.1, K = 3"),
    ("paths-classifier-n5", "search over paths, N = 5"), ("smc-classifier-k10", "SMC, 10 particles (re-noising)"),
    ("smc_sde-classifier-k10", "SMC, 10 particles (SDE proposals)"), ("beam-classifier-m4", "beam search, 2 x 4"),
    ("budget_forcing-classifier-b160", "budget forcing, 160 NFE"),
    ("evolution-classifier-p8", "evolutionary search, 8 x 3"),
    ("pruning-classifier-n24", "early pruning, 24 -> 8 -> 3"),
    ("gradient-classifier-k1", "gradient search, 1 step"),
]  # fmt: skip
COMPARE_RUNS = ["base", "dpo", "grpo", "base+search", "dpo+search", "grpo+search"]


def _sweep_rows(sweep: Path, command: str) -> dict[str, dict[str, Any]]:
    """{point name: its scaling.csv row} of a sweep folder; a missing sweep says which command makes it."""
    if not (sweep / "scaling.csv").is_file():
        raise ConfigurationError(f"no {sweep}/scaling.csv: run `{command}` first")
    return {row["name"]: row for row in read_scaling_csv(sweep / "scaling.csv")}


def _compare_metrics(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """{run: {nfe, gflops, score/<verifier>..., metrics...}} from a compare folder's ``<run>/metrics.json``."""
    compare = {}
    for name in names:
        path = folder / name / "metrics.json"
        if path.is_file():
            m = json.loads(path.read_text())
            compare[name] = {"nfe": m.get("nfe"), "gflops": m.get("gflops"),
                             **{f"score/{k}": v for k, v in (m.get("verifier_scores") or {}).items()},
                             **{k: m.get(k) for k in ("inception_score", "fid", "recall", "accuracy")}}  # fmt: skip
    return compare


def fit_cost(run: Path) -> dict[str, Any] | None:
    """A fine-tune's cost from its own logger folder (``<run>/lightning_logs/version_N``): optimizer steps and
    training examples (pairs, or GRPO rollouts) from the config LightningCLI saved there, and seconds from the
    logger's start (its event file is named by its creation time) to the last event it wrote."""
    import yaml

    logs = run / "lightning_logs"
    configs = sorted(logs.glob("version_*/config.yaml"), key=lambda p: p.stat().st_mtime)
    if not configs:
        return None
    config = yaml.safe_load(configs[-1].read_text())
    steps = config["trainer"]["max_steps"]
    batch = config["data"]["init_args"]["batch_size"]
    objective = config["model"]["init_args"].get("objective") or {}
    settings = objective.get("init_args") or {}
    online = str(objective.get("class_path", "")).endswith("GRPO")
    examples = steps // settings["updates"] * batch * settings["group_size"] if online else steps * batch
    started = [int(p.name.split(".")[3]) for p in configs[-1].parent.glob("events.out.tfevents.*")]
    times = [wall for _, wall, _ in read_scalar_events(configs[-1].parent)]
    seconds = max(times) - min(started) if started and times else None
    return {"steps": steps, "examples": examples, "kind": "rollouts" if online else "pairs", "seconds": seconds}


def collect(runs: Path = Path("runs/digits")) -> dict[str, Any]:
    """Every number the README quotes, from the digits run folders (``make demo``'s)."""
    sweep = runs / "sweep"
    rows = _sweep_rows(sweep, "make demo")
    keys = ("nfe", "inception_score", "fid", "recall", "accuracy", "score/classifier", "score/oracle", "search_score")
    points = {name: {k: rows[name].get(k) for k in keys} for name, _ in SWEEP_POINTS if name in rows}
    report = (sweep / "report.md").read_text()
    section = report.split("## The paper's findings on this run", 1)[-1].split("\n## ", 1)[0]
    findings = [line for line in section.splitlines() if line.startswith("- ")]
    efficiency = report.split("## Reward per NFE", 1)[-1].split("\n## ", 1)[0] if "## Reward per NFE" in report else ""
    compare = _compare_metrics(runs / "dpo" / "compare", COMPARE_RUNS)
    accuracy = {}
    for name in ("verifier", "evaluator"):
        values = read_scalars(runs / name / "lightning_logs", "val/accuracy")  # Lightning's default logger
        if values:
            accuracy[name] = values[-1]
    rows16 = [line for line in efficiency.splitlines() if line.startswith("| 16 |")]
    costs = {name: fit_cost(runs / name) for name in ("dpo", "grpo") if (runs / name).is_dir()}
    compare_report = runs / "dpo" / "compare" / "report.md"
    warnings = [line for line in compare_report.read_text().splitlines() if line.startswith("- WARNING")] if (
        compare_report.is_file()) else []  # fmt: skip
    return {"points": points, "findings": findings, "compare": compare, "classifier_accuracy": accuracy,
            "efficiency_n16": rows16, "costs": {k: v for k, v in costs.items() if v},
            "finetune_diagnostics": warnings}  # fmt: skip


def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def render(record: dict[str, Any]) -> dict[str, str]:
    """{block name: markdown} of the README's generated blocks, from a record of :func:`collect`."""
    points, compare = record["points"], record["compare"]
    table = ["| point | NFE | IS | FID | recall | class accuracy | classifier verifier | oracle (held out) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, label in SWEEP_POINTS:
        p = points.get(name)
        if p:
            table.append(
                f"| {label} | {p['nfe']:.0f} | {_f(p['inception_score'])} | {_f(p['fid'])} | {_f(p['recall'])} | "
                f"{_f(p['accuracy'], 3)} | {_f(p['score/classifier'])} | {_f(p['score/oracle'])} |"
            )
    runs = ["| run | NFE | verifier (DPO's feedback, GRPO's reward, search) | oracle (held out) | IS | FID | recall |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in COMPARE_RUNS:
        c = compare.get(name)
        if c:
            runs.append(
                f"| {name} | {c['nfe']:.0f} | {_f(c.get('score/classifier'))} | {_f(c.get('score/oracle'))} | "
                f"{_f(c.get('inception_score'))} | {_f(c.get('fid'))} | {_f(c.get('recall'))} |"
            )
    acc = record["classifier_accuracy"]
    classifiers = (f"Held-out accuracy of the classifiers: verifier {_f(acc.get('verifier'), 3)}, evaluator "
                   f"{_f(acc.get('evaluator'), 3)}.")  # fmt: skip
    efficiency = ["| N | target score | algorithm | NFE to reach it | x fewer NFEs | IS | FID | recall |",
                  "|---|---|---|---|---|---|---|---|", *record["efficiency_n16"]]  # fmt: skip
    costs = ["| fine-tune | optimizer steps | training examples | seconds (logger start to last step, one CPU thread) |",
             "|---|---|---|---|"]  # fmt: skip
    for name, c in record.get("costs", {}).items():
        costs.append(f"| {name.upper()} | {c['steps']} | {c['examples']:,} {c['kind']} | {_f(c['seconds'], 0)} |")
    diagnostics = record.get("finetune_diagnostics") or ["- no run flagged"]
    return {
        "digits-costs": "\n".join(costs),
        "digits-finetune-diagnostics": "\n".join(diagnostics),
        "digits-table": "\n".join(table),
        "digits-findings": "\n".join(record["findings"]),
        "digits-classifiers": classifiers,
        "digits-efficiency": "\n".join(efficiency),
        "digits-finetune": "\n".join(runs),
    }


SHAPES_TASKS = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]  # GenEval's six
SHAPES_POINTS = [
    ("steps-nfe10", "small, no search, 10 NFE"), ("steps-nfe20", "small, no search, 20 NFE"),
    ("steps-nfe40", "small, no search, 40 NFE"), ("big-nfe20", "big (3.0x GFLOPs / NFE), no search, 20 NFE"),
    ("random-clip-n2", "small + CLIP-analogue search, N = 2"), ("random-clip-n3", "small + CLIP-analogue search, N = 3"),
    ("random-clip-n6-nfe10", "small + CLIP-analogue search, N = 6 x 10 NFE"),
    ("random-clip-n4", "small + CLIP-analogue search, N = 4"),
    ("random-clip-n16", "small + CLIP-analogue search, N = 16"),
    ("random-clip-n64", "small + CLIP-analogue search, N = 64"),
    ("random-judge-n4", "small + judge search, N = 4 (ceiling)"),
    ("random-judge-n16", "small + judge search, N = 16 (ceiling)"),
]  # fmt: skip
SHAPES_RUNS = ["base", "dpo", "grpo", "base+search", "dpo+search", "grpo+search", "base-ddim", "grpo-ddim",
               "base-ddim+search", "grpo-ddim+search"]  # fmt: skip


def collect_shapes(runs: Path = Path("runs/shapes")) -> dict[str, Any]:
    """Every shapes number the README quotes, from ``make demo-shapes``'s run folders."""
    sweep = runs / "sweep"
    rows = _sweep_rows(sweep, "make demo-shapes")
    keys = ["nfe", "gflops", "score/clip", "score/judge", *(f"score/judge_{t}" for t in SHAPES_TASKS)]
    points = {name: {k: rows[name].get(k) for k in keys} for name, _ in SHAPES_POINTS if name in rows}
    return {"points": points, "compare": _compare_metrics(runs / "compare", SHAPES_RUNS)}


def _shapes_row(label: str, p: dict[str, Any]) -> str:
    tasks = " | ".join(_f(p.get(f"score/judge_{t}")) for t in SHAPES_TASKS)
    return (f"| {label} | {p['nfe']:.0f} | {_f(p.get('gflops'), 1)} | **{_f(p.get('score/judge'))}** | {tasks} | "
            f"{_f(p.get('score/clip'))} |")  # fmt: skip


def render_shapes(record: dict[str, Any]) -> dict[str, str]:
    """{block name: markdown} of the README's shapes blocks, from a record of :func:`collect_shapes`."""
    head = ["| {} | NFE | GFLOPs | judge overall | " + " | ".join(t.replace("_", " ") for t in SHAPES_TASKS)
            + " | CLIP analogue |", "|---|---|---|---|" + "---|" * len(SHAPES_TASKS) + "---|"]  # fmt: skip
    sweep = [head[0].format("point"), head[1]]
    sweep += [_shapes_row(label, record["points"][name]) for name, label in SHAPES_POINTS if name in record["points"]]
    runs = [head[0].format("run"), head[1]]
    runs += [_shapes_row(name, record["compare"][name]) for name in SHAPES_RUNS if name in record["compare"]]
    return {"shapes-sweep": "\n".join(sweep), "shapes-finetune": "\n".join(runs)}


@dataclass(frozen=True)
class World:
    """A world whose results the README quotes: its run folders, its record, how to read and show them, and
    the run's pictures the README shows ({path under runs: path under docs/assets})."""

    runs: Path
    record: Path
    collect: Callable[[Path], dict[str, Any]]
    render: Callable[[dict[str, Any]], dict[str, str]]
    pictures: dict[str, str]
    blocks: tuple[str, ...]


WORLDS = {
    "digits": World(
        Path("runs/digits"), RECORD, collect, render,
        {"sweep/scaling.png": "digits_scaling.png", "sweep/grid.png": "digits_grid_n1_vs_n32.png"},
        ("digits-table", "digits-classifiers", "digits-findings", "digits-efficiency", "digits-finetune",
         "digits-costs", "digits-finetune-diagnostics"),
    ),
    "shapes": World(
        Path("runs/shapes"), Path("docs/results/shapes.json"), collect_shapes, render_shapes,
        {"sweep/grid.png": "shapes_grid.png"},
        ("shapes-sweep", "shapes-finetune"),
    ),
}  # fmt: skip


def render_all(root: Path = Path(".")) -> dict[str, str]:
    """Every generated block, from the records present under ``root``."""
    blocks: dict[str, str] = {}
    for world in WORLDS.values():
        if (root / world.record).is_file():
            blocks.update(world.render(json.loads((root / world.record).read_text())))
    return blocks


def apply(text: str, blocks: dict[str, str]) -> str:
    """The README text with its generated blocks replaced by ``blocks``; a block of a world with no record yet
    stays as it is, and a marker no world generates is an error."""
    known = {name for world in WORLDS.values() for name in world.blocks}

    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in known:
            raise ConfigurationError(f"README block {name!r} has no generator; known: {', '.join(sorted(known))}")
        if name not in blocks:
            return match.group(0)
        return f"<!-- generated: {name} -->\n{blocks[name]}\n<!-- end generated -->"

    return MARK.sub(replace, text)


def _without_timings(value: Any) -> Any:
    """``value`` with every ``seconds`` entry set to None (what a rerun cannot reproduce)."""
    if isinstance(value, dict):
        return {k: None if k == "seconds" else _without_timings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def readme_problems(readme: Path, root: Path = Path("."), fresh: bool = True) -> list[str]:
    """What disagrees: the README with the records under ``root``, and (``fresh``) each record with its
    world's run folders where those exist (after ``make demo`` / ``make demo-shapes``)."""
    problems = []
    text = readme.read_text()
    if apply(text, render_all(root)) != text:
        problems.append(f"{readme} differs from what the records in {root / RECORD.parent} render: run "
                        "`lightning-search readme`")  # fmt: skip
    for name, world in WORLDS.items():
        runs, record_path = root / world.runs, root / world.record
        if not (fresh and (runs / "sweep" / "scaling.csv").is_file()):
            continue
        if not record_path.is_file():
            problems.append(f"{record_path} is missing though {runs} exists: run `lightning-search readme`")
            continue
        # wall-clock seconds differ from run to run and machine to machine: every other number must be equal
        now = world.render(_without_timings(world.collect(runs)))
        then = world.render(_without_timings(json.loads(record_path.read_text())))
        changed = [k for k, v in now.items() if then.get(k) != v]
        if changed:
            problems.append(f"the {name} runs in {runs} differ from {record_path} in {changed}: run "
                            "`lightning-search readme`")  # fmt: skip
    return problems
