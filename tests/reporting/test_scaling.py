"""Scaling curves and their CSV (``reporting/scaling.py``): a point's metrics flatten into one row with the
verifier means as columns, the CSV round-trips (missing values included), the markdown table formats numbers
as stated, and the plot draws one line per group."""

from __future__ import annotations

from lightning_search.reporting.scaling import (
    SCALING_COLUMNS,
    markdown_table,
    plot_scaling,
    read_scaling_csv,
    scaling_figure,
    scaling_rows,
    write_scaling_csv,
)

POINTS = [
    {"name": "n1", "group": "random", "algorithm": "random", "nfe": 10.0, "inception_score": 7.8, "fid": 4.05,
     "recall": 0.73, "verifier_scores": {"classifier": 11.85, "oracle": 7.6}, "unrelated": "dropped"},
    {"name": "n2", "group": "random", "algorithm": "random", "nfe": 20.0, "inception_score": 8.45, "fid": None,
     "recall": 0.66, "verifier_scores": {"classifier": 13.1}},
    {"name": "s1", "group": "steps", "algorithm": "none", "nfe": 2.0, "inception_score": 5.8, "fid": 23.85},
]  # fmt: skip


def test_points_flatten_into_rows_with_verifier_columns():
    rows = scaling_rows(POINTS)
    assert rows[0]["score/classifier"] == 11.85 and rows[0]["score/oracle"] == 7.6
    assert "unrelated" not in rows[0] and "verifier_scores" not in rows[0]
    assert "score/oracle" not in rows[1] and rows[2]["recall"] is None  # absent: None, never invented
    assert set(rows[2]) == set(SCALING_COLUMNS)


def test_csv_round_trips_numbers_text_and_missing_values(tmp_path):
    rows = scaling_rows(POINTS)
    write_scaling_csv(tmp_path / "scaling.csv", rows)
    header = (tmp_path / "scaling.csv").read_text().splitlines()[0].split(",")
    assert header[: len(SCALING_COLUMNS)] == SCALING_COLUMNS and header[-2:] == ["score/classifier", "score/oracle"]
    back = read_scaling_csv(tmp_path / "scaling.csv")
    assert back[0]["score/classifier"] == 11.85 and back[0]["group"] == "random"
    assert back[1]["fid"] is None and back[1]["score/oracle"] is None
    assert back[2]["nfe"] == 2.0 and back[2]["algorithm"] == "none"


def test_markdown_table_formats_as_stated():
    table = markdown_table([{"a": 1234.5, "b": 0.123456, "c": 7.891, "d": None, "e": "x"}], list("abcde"))
    assert table.splitlines() == ["| a | b | c | d | e |", "|---|---|---|---|---|", "| 1234 | 0.123 | 7.89 | - | x |"]


def test_plot_has_one_line_per_group(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):
        drawn.append((self, kwargs.get("label"), list(args[0])))  # the title is set after the lines
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    plot_scaling(tmp_path / "scaling.png", scaling_rows(POINTS))
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by_panel = {}
    for axes, label, xs in drawn:
        by_panel.setdefault(axes.get_title(), {})[label] = xs
    # IS: both random points (NFE sorted) and the steps point; FID: n2 has none; recall: steps has none
    assert by_panel["Inception score (evaluator)"] == {"random": [10.0, 20.0], "steps": [2.0]}
    assert by_panel["FID (evaluator features)"] == {"random": [10.0], "steps": [2.0]}
    assert by_panel["recall (k-NN, evaluator features)"] == {"random": [10.0, 20.0]}


def test_a_sweep_without_evaluator_metrics_plots_its_verifier_scores(tmp_path):
    rows = [{"group": "g", "nfe": n, "score/judge": s, "score/clip": 2 * s} for n, s in ((10, 0.3), (40, 0.5))]
    plot_scaling(tmp_path / "scaling.png", rows)
    assert (tmp_path / "scaling.png").stat().st_size > 1000


def test_thirteen_groups_get_thirteen_styles_and_a_legend_off_the_panels():
    """The digits sweep has 13 groups, more than matplotlib's 10 colours: no two curves may look alike, and the
    legend may not cover a curve (it sat on the first panel, over its lowest curve)."""
    from matplotlib.colors import to_hex

    rows = [{"group": f"g{k}", "nfe": n, "inception_score": k + n / 100} for k in range(13) for n in (10.0, 20.0)]
    fig = scaling_figure(rows)
    fig.canvas.draw()
    (ax,) = fig.axes
    looks = {(to_hex(line.get_color()), line.get_linestyle(), line.get_marker()) for line in ax.get_lines()}
    assert len(ax.get_lines()) == 13 and len(looks) == 13
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [f"g{k}" for k in range(13)]
    box = legend.get_window_extent()
    assert not any(box.overlaps(a.get_window_extent()) for a in fig.axes)
