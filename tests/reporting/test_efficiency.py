"""The reward-per-NFE table on hand-made sweep rows: the interpolated NFEs and metrics are computed by hand."""

import math

import pytest

from lightning_search.reporting.efficiency import efficiency_markdown, efficiency_rows


def row(group, nfe, score, is_=8.0, fid=5.0, recall=0.5, algorithm="x"):
    return {"group": group, "algorithm": algorithm, "verifier": "v", "nfe": nfe, "search_score": score,
            "inception_score": is_, "fid": fid, "recall": recall}  # fmt: skip


ROWS = [
    row("random", 10, 10.0, algorithm="random"),
    row("random", 80, 14.0, algorithm="random"),
    row("random", 160, 15.0, algorithm="random"),
    row("fast", 40, 13.0, is_=8.0, fid=4.0, recall=0.6),
    row("fast", 160, 16.0, is_=9.0, fid=8.0, recall=0.4),
    row("cheap", 50, 15.5),
    row("weak", 100, 12.0),
    row("plain", 20, 11.0, algorithm="none"),
]


def test_nfe_to_reach_random_search_is_interpolated_in_log_nfe():
    table = {(r["group"], r["n"]): r for r in efficiency_rows(ROWS, "random", candidates=(8, 16))}
    fast = table[("fast", 8)]  # 14.0 is a third of the way from 13 to 16: log NFE a third of the way 40 -> 160
    assert fast["nfe"] == pytest.approx(math.exp(math.log(40) + (math.log(160) - math.log(40)) / 3))
    assert fast["inception_score"] == pytest.approx(8 + 1 / 3) and fast["fid"] == pytest.approx(4 + 4 / 3)
    assert fast["saving"] == pytest.approx(80 / fast["nfe"])
    assert table[("cheap", 16)]["nfe"] == 50 and table[("cheap", 16)]["bound"]  # there already at its first point
    assert not table[("weak", 8)]["reached"] and table[("weak", 8)]["best"] == 12.0
    assert ("plain", 8) not in table  # no-search points are no algorithm


def test_markdown_table_rows():
    text = efficiency_markdown(ROWS, "random", candidates=(16,))
    assert "| 16 | 15.00 | cheap | <= 50 | 3.20 |" in text
    assert "| 16 | 15.00 | weak | not reached (best 12.00 at 100)" in text
    assert efficiency_markdown(ROWS, "no such group") == ""
