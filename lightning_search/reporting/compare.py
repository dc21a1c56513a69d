"""Compare finished runs (e.g. base, DPO, base + search, DPO + search): the paper's Table 3 as report.md and
report.html, a bar plot of every verifier and metric, and the same sample ids (same seeds) side by side.

Every run folder holds ``metrics.json`` and ``predictions/`` (``records.jsonl`` + images), as written by
``lightning-search predict`` with the PredictionWriter and RunReport callbacks.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_search.errors import ConfigurationError
from lightning_search.reporting.diagnostics import HackingThresholds
from lightning_search.reporting.scaling import _fmt, markdown_table, save_figure
from lightning_search.runs import RunFolder, atomic_write_text, read_records

# metrics of metrics.json shown after the verifier scores, with their direction (for the bar titles)
METRICS = [("inception_score", "IS (evaluator)", "higher"), ("fid", "FID (evaluator features)", "lower"),
           ("kid", "KID", "lower"), ("precision", "precision", "higher"), ("recall", "recall", "higher"),
           ("accuracy", "class accuracy (evaluator)", "higher")]  # fmt: skip
LEAD = ["name", "algorithm", "verifier", "nfe", "gflops", "num_samples"]


def read_run(run_dir: str | Path, name: str | None = None) -> dict[str, Any]:
    """One table row: the run's metrics.json flattened (verifier means as ``score/<verifier>``)."""
    run_dir = Path(run_dir)
    metrics = RunFolder(run_dir).read_metrics()
    row = {"name": name or run_dir.name, "run_dir": str(run_dir)}
    row.update({k: metrics.get(k) for k in LEAD[1:]})
    for verifier, value in sorted((metrics.get("verifier_scores") or {}).items()):
        row[f"score/{verifier}"] = value
    row["search_score"] = metrics.get("search_score")
    row.update({key: metrics.get(key) for key, _, _ in METRICS})
    row["pairwise_distance"] = metrics.get("pairwise_distance")  # diversity, for the hacking diagnostics
    return row


def table_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Lead columns, every verifier's mean score, then the metrics any run has."""
    scores = sorted({k for r in rows for k in r if k.startswith("score/")})
    metrics = [k for k, _, _ in METRICS if any(r.get(k) is not None for r in rows)]
    return LEAD + scores + metrics


def plot_bars(
    path: str | Path, rows: Sequence[dict[str, Any]], loggers: Sequence = (), key: str = "compare/bars"
) -> None:
    """bars.png: :func:`bars_figure`, also logged as figure ``key`` to ``loggers``."""
    save_figure(path, bars_figure(rows), loggers, key)


def bars_figure(rows: Sequence[dict[str, Any]]):
    """One panel per verifier score and metric, one bar per run (matplotlib, Agg) -> the figure (the caller
    closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, f"{k.removeprefix('score/')} (mean score)", "higher") for k in table_columns(rows)
              if k.startswith("score/")]  # fmt: skip
    panels += [(k, label, better) for k, label, better in METRICS if any(r.get(k) is not None for r in rows)]
    if not panels:
        raise ConfigurationError("the runs have no verifier scores or metrics to plot")
    cols = min(4, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.2 * nrows), squeeze=False)
    names = [str(r["name"]) for r in rows]
    colours = [f"C{i}" for i in range(len(rows))]
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (key, label, better) in zip(axes.flat, panels):
        values = [r.get(key) if r.get(key) is not None else float("nan") for r in rows]
        bars = ax.bar(range(len(rows)), values, color=colours)
        ax.bar_label(bars, labels=[_fmt(v) if v == v else "-" for v in values], fontsize=7)
        ax.margins(y=0.12)  # room above the tallest bar for its label (the bars' sticky edge keeps 0 at the base)
        ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{label}, {better} is better", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def common_records(run_dirs: Sequence[Path]) -> list[list[dict]]:
    """Each run's records restricted to the sample ids every run has (same ids = same seeds), in id order."""
    records = [read_records(run) for run in run_dirs]
    common = set.intersection(*({r["sample_id"] for r in recs} for recs in records)) if records else set()
    if not common:
        raise ConfigurationError("the runs share no sample ids; compare runs of the same conditions and seeds")
    return [[r for r in recs if r["sample_id"] in common] for recs in records]


def sample_ids_shown(records: list[dict], per_condition: int, max_conditions: int) -> list[int]:
    """The first ``per_condition`` sample ids of each of the first ``max_conditions`` conditions."""
    from lightning_search.reporting.grid import rows_by_condition

    rows = rows_by_condition([r["condition"] for r in records], per_condition, max_conditions)
    return [records[i]["sample_id"] for row in rows for i in row if i >= 0]


def write_grid(path: Path, names: Sequence[str], run_dirs: Sequence[Path], per_condition: int, max_conditions: int):
    from lightning_search.reporting.grid import save_comparison_grid
    from lightning_search.runs import load_run_images

    panels = []
    for name, run, recs in zip(names, run_dirs, common_records(run_dirs)):
        panels.append((name, load_run_images(run, recs), [r["condition"] for r in recs]))
    save_comparison_grid(path, panels, per_condition, max_conditions)


def _scroll(table: str) -> str:
    """A wide table scrolls sideways inside its own box instead of widening the page."""
    return f'<div class="scroll">{table}</div>'


def _html_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows)
    return _scroll(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _html_condition(condition: Any) -> str:
    """A prompt as text; a dict condition (negative prompt, GenEval metadata) shows its prompt, the whole JSON
    on hover."""
    if isinstance(condition, dict) and isinstance(condition.get("prompt"), str):
        full = json.dumps(condition, ensure_ascii=False)
        return f'<span title="{html.escape(full)}">{html.escape(condition["prompt"])}</span>'
    return html.escape(str(condition))


def _html_samples(out: Path, names: Sequence[str], run_dirs: Sequence[Path], shown: int, max_conditions: int) -> str:
    """One row per sample id, one column per run: the images side by side (paths relative to ``out``)."""
    records = common_records(run_dirs)
    ids = sample_ids_shown(records[0], shown, max_conditions)
    by_id = [{r["sample_id"]: r for r in recs} for recs in records]
    head = "<th>sample id</th><th>condition</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names)
    lines = []
    for sid in ids:
        cells = []
        for name, run, recs in zip(names, run_dirs, by_id):
            record = recs[sid]
            src = Path(os.path.relpath(Path(run) / "predictions" / record["image"], out)).as_posix()
            scores = [f"{k} {_fmt(v)}" for k, v in sorted((record.get("scores") or {}).items())]
            alt = f"{name}, sample {sid}"
            cells.append(
                f'<td><img src="{html.escape(src)}" alt="{html.escape(alt)}" title="{html.escape(", ".join(scores))}">'
                f"<br>{'<br>'.join(html.escape(line) for line in scores)}</td>"
            )
        condition = _html_condition(by_id[0][sid]["condition"])
        lines.append(f'<tr><td>{sid}</td><td class="condition">{condition}</td>{"".join(cells)}</tr>')
    return _scroll(f'<table class="samples"><thead><tr>{head}</tr></thead><tbody>{"".join(lines)}</tbody></table>')


# The page fits any window from phone width up: images and plots scale down to the text column (max-width:
# 100%, height from the aspect ratio; a click opens the full size), wide tables scroll sideways inside their
# own .scroll box, long words and prompts wrap, so the page itself never scrolls horizontally.
STYLE = """*,*::before,*::after{box-sizing:border-box}
body{font-family:sans-serif;margin:0;padding:1em 2em;overflow-wrap:anywhere}
@media (max-width:800px){body{padding:.5em .75em}}
img{max-width:100%;height:auto}
figure{margin:1em 0}figure img{display:block}
.scroll{max-width:100%;overflow-x:auto;margin:1em 0}
table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:right;white-space:nowrap}
.samples img{width:64px;max-width:none;image-rendering:pixelated}
.samples td{text-align:center;font-size:10px}
.samples td.condition{text-align:left;white-space:normal;min-width:14em;max-width:24em}"""


def _figure(src: str, alt: str) -> str:
    return f'<figure><a href="{src}"><img src="{src}" alt="{html.escape(alt)}"></a></figure>'


def write_comparison(
    out: str | Path,
    run_dirs: Sequence[str | Path],
    names: Sequence[str] | None = None,
    title: str = "Comparison",
    per_condition: int = 8,
    max_conditions: int = 10,
    html_samples_per_condition: int = 2,
    diagnostics: HackingThresholds | dict | None = None,
    loggers: Sequence = (),
) -> list[dict[str, Any]]:
    """Write ``report.md``, ``report.html``, ``bars.png`` and ``grid.png`` into ``out`` -> the table rows.

    ``diagnostics``: ``reporting.diagnostics.HackingThresholds`` fields (e.g. ``{baseline: base, verifier:
    classifier}``): a verifier-hacking section for every run against the baseline, fine-tunes included.
    ``loggers`` (``reporting.loggers.build_logger``): the table (``compare/runs``), the bars (``compare/bars``)
    and the grid (``compare/grid``) are logged to them too."""
    out = Path(out)
    run_dirs = [Path(r) for r in run_dirs]
    names = list(names) if names else [r.name for r in run_dirs]
    if len(names) != len(run_dirs):
        raise ConfigurationError(f"{len(names)} names for {len(run_dirs)} runs")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"run names must be unique, got {names}; pass --names")
    rows = [read_run(run, name) for run, name in zip(run_dirs, names)]
    columns = table_columns(rows)
    out.mkdir(parents=True, exist_ok=True)
    plot_bars(out / "bars.png", rows, loggers)
    write_grid(out / "grid.png", names, run_dirs, per_condition, max_conditions)
    if loggers:
        from lightning_search.reporting.loggers import flush, log_image, log_table

        log_table(loggers, "compare/runs", [{c: r.get(c) for c in columns} for r in rows])
        log_image(loggers, "compare/grid", out / "grid.png")
        flush(loggers)
    panels = ", ".join(f"`{n}`" for n in names)
    text = [
        f"# {title}",
        "",
        "Mean score of every verifier and the evaluation metrics per run (the paper's Table 3); same sample ids "
        "and seeds in every run.",
        "",
        markdown_table(rows, columns),
        "",
        "![bars](bars.png)",
        "",
        f"Same conditions and seeds, left to right: {panels}",
        "",
        "![grid](grid.png)",
        "",
        "Images side by side, sample by sample: [report.html](report.html)",
    ]
    if diagnostics:
        from lightning_search.reporting.diagnostics import diagnostics_markdown

        thresholds = diagnostics if isinstance(diagnostics, HackingThresholds) else HackingThresholds(**diagnostics)
        section = diagnostics_markdown(rows, thresholds)
        if section:
            text += ["", "## Verifier-hacking diagnostics", "", section]
    atomic_write_text(out / "report.md", "\n".join(text) + "\n")
    page = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        _html_table(rows, columns),
        "<h2>Scores and metrics</h2>",
        _figure("bars.png", "bar plot of every verifier score and metric per run"),
        f"<h2>Same conditions and seeds</h2><p>left to right: {html.escape(', '.join(names))}</p>",
        _figure("grid.png", "comparison grid"),
        "<h2>Sample by sample</h2>",
        _html_samples(out, names, run_dirs, html_samples_per_condition, max_conditions),
        "</body></html>",
    ]
    atomic_write_text(out / "report.html", "\n".join(page) + "\n")
    return rows
