"""Commands beyond LightningCLI's: ``sweep`` (many predicts in one process), ``report``, ``compare``,
``serve-verifier`` (a verifier behind HTTP for ``RemoteVerifier``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.utilities import rank_zero_info

from lightning_search.errors import ConfigurationError
from lightning_search.reporting.io import atomic_write_text
from lightning_search.reporting.scaling import (
    markdown_table,
    plot_scaling,
    read_scaling_csv,
    scaling_rows,
    write_scaling_csv,
)

REPORT_COLUMNS = ["group", "name", "nfe", "gflops", "inception_score", "fid", "kid", "precision", "recall",
                  "accuracy", "search_score"]  # fmt: skip


def _load_sweep(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"sweep config {str(path)!r} not found")
    spec = yaml.safe_load(path.read_text())
    missing = {"predict_config", "output_dir", "points"} - set(spec)
    if missing:
        raise ConfigurationError(f"sweep config {str(path)!r} lacks {', '.join(sorted(missing))}")
    names = [p["name"] for p in spec["points"]]
    if len(set(names)) != len(names):
        raise ConfigurationError("sweep point names must be unique")
    return spec


def run_point(predict_config: str, output_dir: Path, args: list[str]) -> dict[str, Any]:
    """One ``lightning-search predict`` in this process; returns the run's metrics.json."""
    from lightning_search.cli import LightningSearchCLI

    LightningSearchCLI(args=["predict", "--config", predict_config, *args, f"--trainer.default_root_dir={output_dir}"])
    return json.loads((output_dir / "metrics.json").read_text())


def sweep(argv: list[str]) -> None:
    """Run every point of a sweep config (a predict recipe plus per-point overrides), then the report.

    A point whose folder already holds ``metrics.json`` is reused unless ``--force``.
    """
    parser = ArgumentParser(prog="lightning-search sweep", description=sweep.__doc__)
    parser.add_argument("--config", required=True, help="sweep YAML: predict_config, output_dir, points")
    parser.add_argument("--force", type=bool, default=False, help="recompute points that are already done")
    parser.add_argument("--only", type=list[str] | None, default=None, help="run only these point names")
    cfg = parser.parse_args(argv)
    spec = _load_sweep(cfg.config)
    out = Path(spec["output_dir"])
    points = []
    for point in spec["points"]:
        if cfg.only and point["name"] not in cfg.only:
            continue
        folder = out / point["name"]
        if cfg.force and (folder / "predictions").exists():
            import shutil

            shutil.rmtree(folder)
        if (folder / "metrics.json").is_file() and not cfg.force:
            metrics = json.loads((folder / "metrics.json").read_text())
        else:
            rank_zero_info(f"sweep point {point['name']}")
            metrics = run_point(spec["predict_config"], folder, [str(a) for a in point.get("args", [])])
        metrics.update(name=point["name"], group=point.get("group", point["name"]))
        points.append(metrics)
    grid = spec.get("grid")
    if grid:
        write_side_by_side(out / "grid.png", [out / grid["left"], out / grid["right"]])
    title, hacking = spec.get("title", "Scaling sweep"), spec.get("diagnostics")
    write_report(
        out, scaling_rows(points), title=title, grid=grid, diagnostics=hacking, efficiency=spec.get("efficiency")
    )


def write_side_by_side(path: Path, run_dirs: list[Path]) -> None:
    """grid.png: the same sample ids (same seeds) of several runs, side by side."""
    from lightning_search.reporting.grid import save_comparison_grid
    from lightning_search.reporting.io import load_run_images, read_records

    records = [read_records(run) for run in run_dirs]
    common = set.intersection(*({r["sample_id"] for r in recs} for recs in records))
    panels = []
    for run, recs in zip(run_dirs, records):
        recs = [r for r in recs if r["sample_id"] in common]
        panels.append((run.name, load_run_images(run, recs), [r["condition"] for r in recs]))
    save_comparison_grid(path, panels)


def write_report(
    out: Path,
    rows: list[dict[str, Any]],
    title: str,
    grid: dict | None = None,
    diagnostics: dict | None = None,
    efficiency: dict | None = None,
) -> None:
    """scaling.csv, scaling.png and report.md of a sweep folder; ``diagnostics``: the verifier-hacking
    thresholds and baseline (``reporting.diagnostics.HackingThresholds`` fields); ``efficiency``: the
    reward-per-NFE table's reference group and candidate counts (``reporting.efficiency``)."""
    from lightning_search.reporting.diagnostics import HackingThresholds, diagnostics_markdown
    from lightning_search.reporting.findings import findings_markdown

    out.mkdir(parents=True, exist_ok=True)
    write_scaling_csv(out / "scaling.csv", rows)
    plot_scaling(out / "scaling.png", rows)
    score_columns = sorted({k for r in rows for k in r if k.startswith("score/")})
    text = [f"# {title}", "", "![scaling](scaling.png)", ""]
    findings = findings_markdown(rows)
    if findings:
        text += ["## The paper's findings on this run", "", findings, ""]
    hacking = diagnostics_markdown(rows, HackingThresholds(**(diagnostics or {})))
    if hacking:
        text += ["## Verifier-hacking diagnostics", "", hacking, ""]
    if efficiency:
        from lightning_search.reporting.efficiency import efficiency_markdown

        table = efficiency_markdown(rows, efficiency["reference"], efficiency.get("candidates", (8, 16, 32)))
        if table:
            text += ["## Reward per NFE", "", table, ""]
    if grid:
        text += [f"Same seeds, left: `{grid['left']}`, right: `{grid['right']}`", "", "![grid](grid.png)", ""]
    text += ["## All points", "", markdown_table(rows, REPORT_COLUMNS + score_columns)]
    atomic_write_text(out / "report.md", "\n".join(text) + "\n")
    rank_zero_info(f"wrote {out}/scaling.csv, scaling.png, report.md")


def report(argv: list[str]) -> None:
    """Redraw scaling.png and report.md of a sweep folder from its scaling.csv."""
    parser = ArgumentParser(prog="lightning-search report", description=report.__doc__)
    parser.add_argument("sweep_dir", help="a folder written by `lightning-search sweep`")
    parser.add_argument("--title", default="Scaling sweep")
    parser.add_argument("--baseline", default=None, help="the no-search point of the hacking diagnostics")
    cfg = parser.parse_args(argv)
    out = Path(cfg.sweep_dir)
    if not (out / "scaling.csv").is_file():
        raise ConfigurationError(f"{str(out)!r} holds no scaling.csv; run `lightning-search sweep` first")
    write_report(out, read_scaling_csv(out / "scaling.csv"), cfg.title, diagnostics={"baseline": cfg.baseline})


def _load_compare_spec(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"compare config {str(path)!r} not found")
    spec = yaml.safe_load(path.read_text()) or {}
    missing = {"predict_config", "output_dir", "runs"} - set(spec)
    if missing:
        raise ConfigurationError(f"compare config {str(path)!r} lacks {', '.join(sorted(missing))}")
    names = [r["name"] for r in spec["runs"]]
    if len(set(names)) != len(names):
        raise ConfigurationError("compare run names must be unique")
    return spec


def compare(argv: list[str]) -> None:
    """Compare runs: report.md and report.html (every verifier's mean score and every metric per run, the
    paper's Table 3), bars.png, and grid.png with the same sample ids (same seeds) side by side.

        lightning-search compare runs/base runs/dpo --output_dir runs/compare
        lightning-search compare --config recipes/digits/dpo_compare.yaml

    A compare config (predict_config, output_dir, runs: [{name, args}], title) first runs
    `lightning-search predict --config <predict_config> <args>` into output_dir/<name> for every run whose
    folder holds no metrics.json yet (all in this process), then compares them.
    """
    from lightning_search.reporting.compare import write_comparison

    parser = ArgumentParser(prog="lightning-search compare", description=compare.__doc__)
    parser.add_argument("runs", type=str, nargs="*", default=[], help="run folders holding metrics.json")
    parser.add_argument("--config", default=None, help="compare YAML: predict_config, output_dir, runs")
    parser.add_argument("--output_dir", default=None, help="where the report goes (default: runs/compare)")
    parser.add_argument("--names", type=list[str] | None, default=None, help="labels of the runs (default: folders)")
    parser.add_argument("--title", default=None)
    parser.add_argument("--force", type=bool, default=False, help="re-run the predicts of a compare config")
    cfg = parser.parse_args(argv)
    if cfg.config is None and not cfg.runs:
        raise ConfigurationError("name run folders to compare, or --config a compare YAML")
    run_dirs, names, title = [Path(r) for r in cfg.runs], cfg.names, cfg.title
    out = Path(cfg.output_dir) if cfg.output_dir else None
    if cfg.config is not None:
        spec = _load_compare_spec(cfg.config)
        out = out or Path(spec["output_dir"])
        names = list(names or [r.name for r in run_dirs]) + [r["name"] for r in spec["runs"]]
        for run in spec["runs"]:
            folder = out / run["name"]
            if cfg.force and folder.exists():
                import shutil

                shutil.rmtree(folder)
            if not (folder / "metrics.json").is_file():
                rank_zero_info(f"compare: predicting {run['name']}")
                run_point(spec["predict_config"], folder, [str(a) for a in run.get("args", [])])
            run_dirs.append(folder)
        title = title or spec.get("title")
    diagnostics = spec.get("diagnostics") if cfg.config is not None else None
    rows = write_comparison(
        out or Path("runs/compare"), run_dirs, names, title or "Comparison", diagnostics=diagnostics
    )
    shown = {
        r["name"]: {k: round(v, 3) for k, v in r.items() if k.startswith("score/") and v is not None} for r in rows
    }
    rank_zero_info(f"wrote {out or 'runs/compare'}/report.md, report.html: {shown}")


def serve_verifier(argv: list[str]) -> None:
    """Serve a verifier behind the remote-verifier protocol (POST /score, GET /health) until interrupted.

        lightning-search serve-verifier --config verifier.yaml --host 127.0.0.1 --port 8000 --device cuda

    verifier.yaml gives the verifier as class_path / init_args; a run reaches it with
    `lightning_search.verifiers.RemoteVerifier(url=http://host:port)`.
    """
    import logging

    from lightning_search.verifiers.server import load_verifier_config, serve

    parser = ArgumentParser(prog="lightning-search serve-verifier", description=serve_verifier.__doc__)
    parser.add_argument("--config", required=True, help="YAML with the verifier's class_path / init_args")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (0: any free port)")
    parser.add_argument("--device", default="cpu", help="the verifier's device (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--token_env", type=str | None, default="LS_VERIFIER_TOKEN",
                        help="environment variable holding the token clients must send (unset: none)")  # fmt: skip
    cfg = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    serve(load_verifier_config(cfg.config), cfg.host, cfg.port, cfg.token_env, cfg.device)
