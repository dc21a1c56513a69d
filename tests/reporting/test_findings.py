"""The paper's findings checked on a sweep's rows (``reporting/findings.py``): each verdict against numbers
worked out by hand from a small set of rows, and the checks only where a sweep config asks for them."""

from __future__ import annotations

import pytest

from lightning_search.commands import write_report
from lightning_search.errors import UnknownNameError
from lightning_search.reporting.findings import findings_markdown, paper_findings


def _row(group, nfe, inception_score, fid, recall, name=None):
    return {"group": group, "name": name or f"{group}-{nfe}", "algorithm": "random", "nfe": nfe,
            "inception_score": inception_score, "fid": fid, "recall": recall, "search_score": 10.0}  # fmt: skip


STEPS, RANDOM = "steps (no search)", "random / classifier"
ROWS = [
    _row(STEPS, 20, 7.90, 3.6, 0.73),
    _row(STEPS, 64, 7.95, 3.5, 0.73),  # +0.05: a plateau
    _row(RANDOM, 10, 7.80, 4.0, 0.73),
    _row(RANDOM, 20, 8.40, 3.0, 0.66),  # the lowest FID, at N = 2
    _row(RANDOM, 40, 8.70, 5.0, 0.57),
    _row(RANDOM, 160, 8.60, 9.0, 0.42),  # IS falls here: search does not keep improving
    _row(RANDOM, 320, 9.10, 12.0, 0.39),
]


def test_each_verdict_follows_from_the_numbers():
    verdicts = paper_findings(ROWS)
    by_claim = {text.split(":")[0].split(" (")[0]: ok for text, ok in verdicts}
    assert by_claim["More denoising steps plateau"] is True  # 7.95 - 7.90 = 0.05 < 0.15
    assert by_claim["Search keeps improving IS with NFE"] is False  # 8.70 -> 8.60
    assert by_claim["IS gain from N = 1 to N = 16"] is False  # 8.60 - 7.80 = 0.80 < 1.0
    assert by_claim["Verifier hacking"] is True  # lowest FID at 20 NFE; 12.0 - 3.0 = 9.0 >= 1.5
    assert by_claim["Recall falls with search"] is True  # 0.73 - 0.39 = 0.34 >= 0.15
    text = dict(verdicts)
    assert any("+0.050" in t for t in text) and any("+9.00 above" in t for t in text)


def test_a_sweep_without_the_digits_groups_gets_no_verdicts():
    rows = [_row("my curve", n, 5.0 + n / 100, 4.0, 0.7) for n in (10, 20, 40)]
    assert paper_findings(rows) == []


def test_findings_run_only_when_the_sweep_config_names_them(tmp_path):
    write_report(tmp_path / "plain", ROWS, "a user's sweep")
    assert "paper's findings" not in (tmp_path / "plain/report.md").read_text()
    write_report(tmp_path / "digits", ROWS, "digits", findings="digits")
    text = (tmp_path / "digits/report.md").read_text()
    assert "## The paper's findings on this run" in text and "- NOT reproduced: Search keeps improving" in text
    with pytest.raises(UnknownNameError, match="valid findingss: digits"):
        findings_markdown(ROWS, "imagenet")
