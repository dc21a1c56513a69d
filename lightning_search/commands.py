"""Commands beyond LightningCLI's: ``pairs`` (AI-feedback pairs), ``sweep`` (many predicts in one process),
``report``, ``compare``, ``serve-verifier`` (a verifier behind HTTP for ``RemoteVerifier``), ``readme`` (the
README's results from the demo's run folders).

Sweep and compare configs are read by jsonargparse into the dataclasses below, so that a wrong or missing key
gets the same one-line error as any other config; the predict arguments of every point or run are parsed by
the predict parser before the first one runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from argparse import ArgumentError
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser
from lightning.pytorch.utilities import rank_zero_info

from lightning_search.cli_errors import exit_with_error, find_our_error, parse_error_line
from lightning_search.errors import ConfigurationError, Interrupted
from lightning_search.fingerprint import fingerprint_differences
from lightning_search.lightning_cli import PARSER_KWARGS, LightningSearchCLI, parse_runs
from lightning_search.reporting.diagnostics import HackingThresholds
from lightning_search.reporting.loggers import build_logger
from lightning_search.reporting.scaling import (
    markdown_table,
    plot_scaling,
    read_scaling_csv,
    scaling_curves,
    scaling_rows,
    write_scaling_csv,
)
from lightning_search.runs import RunFolder, atomic_write_bytes, atomic_write_text, read_json, write_json

REPORT_COLUMNS = ["group", "name", "nfe", "gflops", "verifier_gflops", "inception_score", "fid", "kid", "precision",
                  "recall", "accuracy", "search_score"]  # fmt: skip


# -- the configs ------------------------------------------------------------------------------------------


@dataclass
class RunSpec:
    """One predict of a sweep or compare config: ``lightning-search predict --config <predict_config> <args>``
    into ``<output_dir>/<name>``.

    Args:
        name: the folder and the label of the run (unique in its config).
        group: the curve it belongs to in a sweep's scaling plot (default: its name).
        args: predict command-line arguments, e.g. ``[--search.algorithm=random, --search.num_candidates=4]``.
    """

    name: str
    group: str | None = None
    args: list[str] = field(default_factory=list)


@dataclass
class GridSpec:
    """Two runs of a sweep shown side by side in ``grid.png`` (same sample ids, same seeds)."""

    left: str
    right: str


@dataclass
class EfficiencySpec:
    """The reward-per-NFE table of a sweep's report (``reporting.efficiency``): NFEs each group needs to reach
    the ``reference`` group's verifier score at each of ``candidates`` N."""

    reference: str
    candidates: list[int] = field(default_factory=lambda: [8, 16, 32])


@dataclass
class SweepSpec:
    """A sweep config (``lightning-search sweep --config``).

    Args:
        predict_config: the predict recipe every point starts from.
        output_dir: where each point's run folder and the report go.
        points: the points; their args override the recipe.
        title: the report's title.
        grid: two points shown side by side.
        diagnostics: verifier-hacking thresholds and baseline (``reporting.diagnostics.HackingThresholds``).
        findings: a named set of checks of the paper's findings to add to the report (``digits``, for
            ``recipes/digits/sweep.yaml``'s points; none by default: they know that sweep's groups).
        efficiency: the reward-per-NFE table (none by default).
        logger: where the scaling curves and table are logged besides the files: a Lightning logger as
            ``{class_path, init_args}`` (e.g. ``lightning.pytorch.loggers.WandbLogger``), false for none;
            default TensorBoard in ``<output_dir>/tensorboard`` (``reporting.loggers.build_logger``).
    """

    predict_config: str
    output_dir: str
    points: list[RunSpec]
    title: str = "Scaling sweep"
    grid: GridSpec | None = None
    diagnostics: HackingThresholds | None = None
    findings: str | None = None
    efficiency: EfficiencySpec | None = None
    logger: dict[str, Any] | bool | None = None


@dataclass
class CompareSpec:
    """A compare config (``lightning-search compare --config``): runs predicted (if not done yet), then compared."""

    predict_config: str
    output_dir: str
    runs: list[RunSpec]
    title: str = "Comparison"
    diagnostics: HackingThresholds | None = None  # hacking diagnostics of every run, fine-tunes too
    logger: dict[str, Any] | bool | None = None  # as SweepSpec.logger: default TensorBoard in output_dir/tensorboard


def load_spec(path: str | Path, kind: type, what: str):
    """A sweep / compare config file as its dataclass; wrong keys, missing keys and repeated run names are
    one-line errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"{what} config {str(path)!r} not found")
    parser = ArgumentParser(**PARSER_KWARGS)
    parser.add_argument("--spec", type=kind)
    try:
        spec = parser.instantiate(parser.parse_object({"spec": read_yaml(path)})).spec
    except ArgumentError as err:
        line = parse_error_line(str(err), what).replace("spec.", "")
        raise ConfigurationError(f"{what} config {str(path)!r}: {line}") from None
    runs = spec.points if isinstance(spec, SweepSpec) else spec.runs
    names = [r.name for r in runs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigurationError(f"{what} config {str(path)!r}: run names must be unique, repeated: {repeated}")
    return spec


def read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigurationError(f"{str(path)!r} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        raise ConfigurationError(f"{str(path)!r} is not valid YAML: {str(err).splitlines()[0]}") from None


def _parser(prog: str, description: str | None) -> ArgumentParser:
    return ArgumentParser(prog=prog, description=description, **PARSER_KWARGS)


# -- pairs ------------------------------------------------------------------------------------------------


def pairs(argv: list[str]) -> None:
    """AI-feedback preference pairs: a predict run that samples K images per condition, scores them with a
    verifier of the run and writes best against worst as a preference data set (Pick-a-Pic schema) into
    ``<run>/pairs``, which ``PreferenceDataModule(source=<run>/pairs)`` reads.

        lightning-search pairs --config recipes/digits/pairs.yaml

    The arguments are predict's, with ``--pairs.*`` (verifier, samples_per_condition, seed) instead of
    ``--search.*``.
    """
    LightningSearchCLI(args=["predict", *argv], mode="pairs")


# -- sweep ------------------------------------------------------------------------------------------------


@contextmanager
def resumable(what: str, force: bool):
    """A run stopped by a signal inside a sweep or compare says how to resume the command: with ``--force``,
    the same command would start over, so it says to rerun without it."""
    try:
        yield
    except Interrupted as err:
        resume = "rerun the command without --force to resume" if force else "rerun the same command to resume"
        raise Interrupted(err.signal_name, what, resume) from None


def run_point(predict_config: str, output_dir: Path, args: list[str], progress_position: int = 0) -> dict[str, Any]:
    """One ``lightning-search predict`` in this process; returns the run's metrics.json."""
    argv = ["predict", "--config", predict_config, *args, f"--trainer.default_root_dir={output_dir}"]
    LightningSearchCLI(args=argv, progress_position=progress_position)
    return RunFolder(output_dir).read_metrics()


def finished(folder: RunFolder, run: dict) -> bool:
    """The folder holds the metrics of a run with this fingerprint (then it need not be loaded at all)."""
    if not (folder.metrics_path.is_file() and folder.fingerprint_path.is_file()):
        return False
    return not fingerprint_differences(read_json(folder.fingerprint_path), run)


def sweep(argv: list[str]) -> None:
    """Run every point of a sweep config (a predict recipe plus per-point overrides), then the report.

    A point whose folder already holds ``metrics.json`` (made with the same settings) is reused unless
    ``--force``. ``--jobs N`` runs the points in N processes side by side (one thread each); ``--only`` with
    ``--report false`` runs a share of them (on another machine, say), and a plain rerun then reports them all.
    """
    parser = _parser("lightning-search sweep", sweep.__doc__)
    parser.add_argument("--config", required=True, help="sweep YAML: predict_config, output_dir, points")
    parser.add_argument("--force", type=bool, default=False, help="recompute points that are already done")
    parser.add_argument("--only", type=list[str] | None, default=None,
                        help="run only these points (the report keeps the others already done with their settings)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1, help="processes running points side by side, one thread each")
    parser.add_argument("--report", type=bool, default=True, help="write the report once the points are done")
    parser.add_argument("--progress_position", type=int, default=0,
                        help="terminal line offset of the progress bars (--jobs gives each process its own)")  # fmt: skip
    cfg = parser.parse_args(argv)
    if cfg.jobs < 1:
        raise ConfigurationError(f"--jobs must be >= 1, got {cfg.jobs}")
    spec: SweepSpec = load_spec(cfg.config, SweepSpec, "sweep")
    out = Path(spec.output_dir)
    runs = parse_runs(spec.predict_config, {p.name: p.args for p in spec.points})
    unknown = sorted(set(cfg.only or ()) - set(runs))
    if unknown:
        raise ConfigurationError(f"--only names no point of {cfg.config!r}: {unknown}; the points: {', '.join(runs)}")
    chosen = [p for p in spec.points if not cfg.only or p.name in cfg.only]
    if cfg.force:
        for folder in [out / p.name for p in chosen if (out / p.name).exists()]:
            shutil.rmtree(folder)
    # a folder of other settings is not finished: its run stops with the differences (RunFolder.claim)
    todo = [p for p in chosen if not finished(RunFolder(out / p.name), runs[p.name])]
    with resumable("sweep", cfg.force):
        if cfg.jobs > 1 and len(todo) > 1:
            run_points_in_processes(cfg.config, [p.name for p in todo], cfg.jobs)
        else:
            for point in todo:
                rank_zero_info(f"sweep point {point.name}")
                run_point(spec.predict_config, out / point.name, list(point.args), cfg.progress_position)
    if cfg.report:
        write_sweep_report(spec, runs)


def write_sweep_report(spec: SweepSpec, runs: dict[str, dict]) -> None:
    """The report of every point done with its settings (with ``--only``, the others done before too)."""
    out = Path(spec.output_dir)
    points = [
        {**RunFolder(out / p.name).read_metrics(), "name": p.name, "group": p.group or p.name}
        for p in spec.points
        if finished(RunFolder(out / p.name), runs[p.name])
    ]
    if spec.grid:
        write_side_by_side(out / "grid.png", [out / spec.grid.left, out / spec.grid.right])
    loggers = build_logger(spec.logger, out)
    rows = scaling_rows(points)
    write_report(out, rows, spec.title, spec.grid, spec.diagnostics, spec.findings, spec.efficiency, loggers)


def run_points_in_processes(config: str, names: list[str], jobs: int) -> None:
    """The points in ``jobs`` child sweeps (``--only`` a share, no report), one thread each. Shares are dealt
    round-robin: a sweep's points grow along each scaling curve, so every share gets small and large ones.

    The children are forked where the platform allows it: they start with this process's imports (~9 s of
    lightning, torch and diffusers per process otherwise). A SIGTERM or Ctrl-C reaches them (they stop at a
    batch boundary with their points saved); a child that fails prints its own error line first.
    """
    import multiprocessing

    shares = [names[i::jobs] for i in range(min(jobs, len(names)))]
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    rank_zero_info(f"sweep: {len(names)} points in {len(shares)} processes: {shares}")
    argv = ["--config", str(config), "--report", "false"]
    children = [
        context.Process(
            target=_sweep_share, args=([*argv, "--progress_position", str(k), "--only", json.dumps(share)],)
        )
        for k, share in enumerate(shares)
    ]
    for child in children:
        child.start()

    def forward(signum, frame) -> None:  # SIGTERM: the children save and stop; a Ctrl-C reaches them by itself
        for child in children:
            if child.pid is not None:
                os.kill(child.pid, signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        for child in children:
            child.join()
    except KeyboardInterrupt:
        for child in children:
            child.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    codes = [child.exitcode for child in children]
    stopped = [name for name, code in Interrupted.EXIT_CODES.items() if code in codes]
    if stopped:
        raise Interrupted(stopped[0], "sweep")
    failed = [(share, code) for share, code in zip(shares, codes) if code]
    if failed:
        raise ConfigurationError(
            f"sweep: the process running {failed[0][0]} failed (exit code {failed[0][1]}, its error is above); "
            "the points done are kept: rerun the same command to go on"
        )


def _sweep_share(argv: list[str]) -> None:
    """A child of :func:`run_points_in_processes`: one thread, our errors as one line and an exit code."""
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    try:
        sweep(argv)
    except Exception as err:
        ours = find_our_error(err)
        if ours is None:
            raise
        exit_with_error(str(ours), getattr(ours, "exit_code", 2))


def write_side_by_side(path: Path, run_dirs: list[Path]) -> None:
    """grid.png: the same sample ids (same seeds) of several runs, side by side."""
    from lightning_search.reporting.grid import save_comparison_grid

    folders = [RunFolder(run) for run in run_dirs]
    records = [folder.records() for folder in folders]
    common = set.intersection(*({r["sample_id"] for r in recs} for recs in records))
    panels = []
    for folder, recs in zip(folders, records):
        recs = [r for r in recs if r["sample_id"] in common]
        panels.append((folder.root.name, folder.load_images(recs), [r["condition"] for r in recs]))
    save_comparison_grid(path, panels)


def write_report(
    out: Path,
    rows: list[dict[str, Any]],
    title: str,
    grid: GridSpec | None = None,
    diagnostics: HackingThresholds | None = None,
    findings: str | None = None,
    efficiency: EfficiencySpec | None = None,
    loggers: list | tuple = (),
) -> None:
    """scaling.csv, scaling.png and report.md of a sweep folder; ``diagnostics``: the verifier-hacking
    thresholds and baseline; ``findings``: the named checks of the paper's findings (none: no such section);
    ``efficiency``: the reward-per-NFE table's reference group and candidate counts (``reporting.efficiency``).
    ``loggers``: the scaling figure (``sweep/scaling``), the points' table (``sweep/points``), the grid
    (``sweep/grid``) and every curve as scalars at step = NFE (``sweep/<metric>/<group>``) are logged there."""
    from lightning_search.reporting.diagnostics import diagnostics_markdown
    from lightning_search.reporting.findings import findings_markdown

    out.mkdir(parents=True, exist_ok=True)
    write_scaling_csv(out / "scaling.csv", rows)
    plot_scaling(out / "scaling.png", rows, loggers=loggers)
    score_columns = sorted({k for r in rows for k in r if k.startswith("score/")})
    if loggers:
        log_sweep(loggers, out, rows, REPORT_COLUMNS + score_columns)
    text = [f"# {title}", "", "![scaling](scaling.png)", ""]
    if findings:
        text += ["## The paper's findings on this run", "", findings_markdown(rows, findings), ""]
    hacking = diagnostics_markdown(rows, diagnostics or HackingThresholds())
    if hacking:
        text += ["## Verifier-hacking diagnostics", "", hacking, ""]
    if efficiency:
        from lightning_search.reporting.efficiency import efficiency_markdown

        table = efficiency_markdown(rows, efficiency.reference, efficiency.candidates)
        if table:
            text += ["## Reward per NFE", "", table, ""]
    if grid:
        text += [f"Same seeds, left: `{grid.left}`, right: `{grid.right}`", "", "![grid](grid.png)", ""]
    text += [
        "## All points",
        "",
        "nfe, gflops (the generator's) and verifier_gflops (search's scoring) are per sample.",
        "",
        markdown_table(rows, REPORT_COLUMNS + score_columns),
    ]
    atomic_write_text(out / "report.md", "\n".join(text) + "\n")
    rank_zero_info(f"wrote {out}/scaling.csv, scaling.png, report.md")


def log_sweep(loggers: list | tuple, out: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A sweep's curves as scalars (step: the NFE, one tag per metric and group, so that the logger draws the
    scaling curves itself), its table, and its side-by-side grid where there is one."""
    from lightning_search.reporting.loggers import flush, log_image, log_scalars, log_table

    for key, _ in scaling_curves(rows):
        for row in rows:
            if row.get(key) is not None and row.get("nfe"):
                log_scalars(loggers, {f"sweep/{key}/{row['group']}": row[key]}, step=int(row["nfe"]))
    log_table(loggers, "sweep/points", [{c: r.get(c) for c in columns} for r in rows])
    if (out / "grid.png").is_file():
        log_image(loggers, "sweep/grid", out / "grid.png")
    flush(loggers)


def report(argv: list[str]) -> None:
    """Redraw scaling.png and report.md of a sweep folder from its scaling.csv, or, with ``--config``, the
    report a sweep config asks for (its title, grid, diagnostics, findings) from its finished points, running
    nothing.
    """
    parser = _parser("lightning-search report", report.__doc__)
    parser.add_argument("sweep_dir", nargs="?", default=None, help="a folder written by `lightning-search sweep`")
    parser.add_argument("--config", default=None, help="a sweep YAML: its report, from the points already done")
    parser.add_argument("--title", default="Scaling sweep")
    parser.add_argument("--baseline", default=None, help="the no-search point of the hacking diagnostics")
    parser.add_argument("--findings", type=str | None, default=None, help="named checks of the paper's findings")
    cfg = parser.parse_args(argv)
    if cfg.config is not None:
        spec: SweepSpec = load_spec(cfg.config, SweepSpec, "sweep")
        write_sweep_report(spec, parse_runs(spec.predict_config, {p.name: p.args for p in spec.points}))
        return
    if cfg.sweep_dir is None:
        raise ConfigurationError("name a sweep folder, or --config a sweep YAML")
    out = Path(cfg.sweep_dir)
    if not (out / "scaling.csv").is_file():
        raise ConfigurationError(f"{str(out)!r} holds no scaling.csv; run `lightning-search sweep` first")
    rows = read_scaling_csv(out / "scaling.csv")
    thresholds = HackingThresholds(baseline=cfg.baseline)
    write_report(out, rows, cfg.title, diagnostics=thresholds, findings=cfg.findings, loggers=build_logger(None, out))


# -- compare ----------------------------------------------------------------------------------------------


def compare(argv: list[str]) -> None:
    """Compare runs: report.md and report.html (every verifier's mean score and every metric per run, the
    paper's Table 3), bars.png, and grid.png with the same sample ids (same seeds) side by side.

        lightning-search compare runs/base runs/dpo --output_dir runs/compare
        lightning-search compare --config recipes/digits/dpo_compare.yaml

    A compare config (predict_config, output_dir, runs: [{name, args}], title) first runs
    `lightning-search predict --config <predict_config> <args>` into output_dir/<name> for every run (a run
    already done with the same settings is reused; all in this process), then compares them.
    """
    from lightning_search.reporting.compare import write_comparison

    parser = _parser("lightning-search compare", compare.__doc__)
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
        spec: CompareSpec = load_spec(cfg.config, CompareSpec, "compare")
        out = out or Path(spec.output_dir)
        names = list(names or [r.name for r in run_dirs]) + [r.name for r in spec.runs]
        runs = parse_runs(spec.predict_config, {r.name: r.args for r in spec.runs})
        for run in spec.runs:
            folder = out / run.name
            if cfg.force and folder.exists():
                shutil.rmtree(folder)
            if not finished(RunFolder(folder), runs[run.name]):
                rank_zero_info(f"compare: predicting {run.name}")
                with resumable("compare", cfg.force):
                    run_point(spec.predict_config, folder, list(run.args))
            run_dirs.append(folder)
        title = title or spec.title
    diagnostics = spec.diagnostics if cfg.config is not None else None
    target = out or Path("runs/compare")
    loggers = build_logger(spec.logger if cfg.config is not None else None, target)
    rows = write_comparison(target, run_dirs, names, title or "Comparison", diagnostics=diagnostics, loggers=loggers)
    shown = {
        r["name"]: {k: round(v, 3) for k, v in r.items() if k.startswith("score/") and v is not None} for r in rows
    }
    rank_zero_info(f"wrote {out or 'runs/compare'}/report.md, report.html: {shown}")


# -- serve-verifier ---------------------------------------------------------------------------------------


def serve_verifier(argv: list[str]) -> None:
    """Serve a verifier behind the remote-verifier protocol (POST /score, GET /health) until interrupted.

        lightning-search serve-verifier --config verifier.yaml --host 127.0.0.1 --port 8000 --device cuda

    verifier.yaml gives the verifier as class_path / init_args; a run reaches it with
    `lightning_search.verifiers.RemoteVerifier(url=http://host:port)`.
    """
    import logging

    from lightning_search.verifiers.server import load_verifier_config, serve

    parser = _parser("lightning-search serve-verifier", serve_verifier.__doc__)
    parser.add_argument("--config", required=True, help="YAML with the verifier's class_path / init_args")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (0: any free port)")
    parser.add_argument("--device", default="cpu", help="the verifier's device (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--token_env", type=str | None, default="LS_VERIFIER_TOKEN",
                        help="environment variable holding the token clients must send (unset: none)")  # fmt: skip
    cfg = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    serve(load_verifier_config(cfg.config), cfg.host, cfg.port, cfg.token_env, cfg.device)


# -- readme -----------------------------------------------------------------------------------------------


def readme(argv: list[str]) -> None:
    """Rewrite the README's generated result blocks from the run folders of ``make demo`` (runs/digits) and
    ``make demo-shapes`` (runs/shapes), recording every number in docs/results/<world>.json; ``--check``
    changes nothing and fails (one line per difference) when the README, the records and the runs disagree.

        lightning-search readme                  # after `make demo`: the worlds whose runs exist
        lightning-search readme --check          # exit 2 if the README is stale
    """
    from lightning_search.reporting import readme as generator

    parser = _parser("lightning-search readme", readme.__doc__)
    parser.add_argument("--root", default=".", help="the checkout: README.md, docs/results/, runs/")
    parser.add_argument("--check", action="store_true", help="change nothing; fail if anything is stale")
    cfg = parser.parse_args(argv)
    root = Path(cfg.root)
    page = root / "README.md"
    if cfg.check:
        problems = generator.readme_problems(page, root)
        if problems:
            raise ConfigurationError("; ".join(problems))
        rank_zero_info(f"{page} agrees with its records and runs")
        return
    done = []
    for name, world in generator.WORLDS.items():
        if (root / world.runs / "sweep" / "scaling.csv").is_file():
            write_json(root / world.record, world.collect(root / world.runs))
            for source, target in world.pictures.items():
                picture = root / world.runs / source
                if picture.is_file() and picture.stat().st_size <= generator.MAX_PICTURE_BYTES:
                    atomic_write_bytes(root / generator.ASSETS / target, picture.read_bytes())
                elif picture.is_file():
                    rank_zero_info(f"readme: {picture} is over 1 MB; left out of {generator.ASSETS}")
            done.append(name)
    if not done:
        raise ConfigurationError(f"no run folders under {root / 'runs'}: run `make demo` (or `make demo-shapes`) first")
    atomic_write_text(page, generator.apply(page.read_text(), generator.render_all(root)))
    rank_zero_info(f"wrote the records of {', '.join(done)} and the generated blocks of {page}")


__all__ = ["CompareSpec", "RunSpec", "SweepSpec", "compare", "pairs", "readme", "report", "serve_verifier", "sweep"]
