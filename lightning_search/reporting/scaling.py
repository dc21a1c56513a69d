"""Scaling curves (metric vs NFE, one line per algorithm and verifier), the CSV behind them, and report.md."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_search.runs import atomic_write_bytes, atomic_write_text

SCALING_COLUMNS = [
    "group", "name", "algorithm", "verifier", "nfe", "gflops", "verifier_gflops", "inception_score", "fid", "kid",
    "precision", "recall", "pairwise_distance", "accuracy", "search_score", "wall_time_per_sample", "num_samples",
]  # fmt: skip

CURVES = [("inception_score", "Inception score (evaluator)"), ("fid", "FID (evaluator features)"),
          ("recall", "recall (k-NN, evaluator features)")]  # fmt: skip


def scaling_rows(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten each point's metrics (with ``name`` and ``group``) into one CSV row; verifier means as columns."""
    rows = []
    for p in points:
        row = {k: p.get(k) for k in SCALING_COLUMNS}
        for name, value in (p.get("verifier_scores") or {}).items():
            row[f"score/{name}"] = value
        rows.append(row)
    return rows


def write_scaling_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    columns = list(SCALING_COLUMNS) + sorted({k for r in rows for k in r if k not in SCALING_COLUMNS})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write_text(path, buffer.getvalue())


def read_scaling_csv(path: str | Path) -> list[dict[str, Any]]:
    def parse(v: str):
        if v == "":
            return None
        try:
            return float(v)
        except ValueError:
            return v

    with open(path) as f:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def plot_scaling(
    path: str | Path, rows: list[dict[str, Any]], curves=CURVES, loggers: Sequence = (), key: str = "sweep/scaling"
) -> None:
    """scaling.png: :func:`scaling_figure`, also logged as figure ``key`` to ``loggers`` (nothing written when
    there is nothing numeric to draw)."""
    fig = scaling_figure(rows, curves)
    if fig is not None:
        save_figure(path, fig, loggers, key)


def save_figure(path: str | Path, fig, loggers: Sequence = (), key: str | None = None) -> None:
    """A figure to a PNG file (atomically) and, as figure ``key``, to ``loggers``; then closed."""
    import matplotlib.pyplot as plt

    from lightning_search.reporting.loggers import log_figure

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())
    if loggers and key:
        log_figure(loggers, key, fig)
    plt.close(fig)


def scaling_curves(rows: list[dict[str, Any]], curves=CURVES) -> list[tuple[str, str]]:
    """The (key, label) of every panel: the curves any row has, else the verifiers' mean scores (``score/*``)."""
    found = [(k, label) for k, label in curves if any(r.get(k) is not None for r in rows)]
    if not found:
        scores = sorted({k for r in rows for k in r if k.startswith("score/") and r.get(k) is not None})
        found = [(k, f"mean {k[len('score/') :]} score") for k in scores[:6]]
    return found


def scaling_figure(rows: list[dict[str, Any]], curves=CURVES):
    """One panel per metric, NFE on a log axis, one line per group -> a matplotlib figure (None: nothing
    numeric to draw). Without evaluator metrics (a text-to-image sweep) the panels are the verifiers' mean
    scores (``score/*``); the caller closes the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row["group"]), []).append(row)
    curves = scaling_curves(rows, curves)
    if not curves:
        return None
    styles = group_styles(list(groups))
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves) + 2.5, 4), squeeze=False, layout="constrained")
    lines = {}
    for ax, (key, label) in zip(axes[0], curves):
        for group, members in groups.items():
            pts = sorted((r["nfe"], r[key]) for r in members if r.get(key) is not None and r.get("nfe"))
            if pts:
                lines[group] = ax.plot(*zip(*pts), label=group, **styles[group])[0]
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE per sample")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    # beside the panels, not over a panel's curves; one entry per group, in the sweep's order
    fig.legend([lines[g] for g in groups if g in lines], [g for g in groups if g in lines], loc="outside right upper",
               fontsize=8)  # fmt: skip
    return fig


def group_styles(groups: Sequence[str]) -> dict[str, dict[str, str]]:
    """A line style no other group of the figure has: matplotlib's ten colours with solid lines and circles,
    then the same colours dashed with squares, dotted with diamonds (the digits sweep has 13 groups: with the
    colours alone, three pairs of curves looked the same)."""
    return {
        group: {"color": f"C{i % 10}", "linestyle": ("-", "--", ":")[i // 10 % 3], "marker": "osD"[i // 10 % 3]}
        for i, group in enumerate(groups)
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def markdown_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
