"""The verifier-hacking warning on numbers recorded by the digits sweep (runs/digits/sweep/scaling.csv)."""

import pytest

from lightning_search.commands import write_report
from lightning_search.reporting.diagnostics import HackingThresholds, diagnose, diagnostics_markdown


def _row(group, name, algorithm, verifier, nfe, inception_score, fid, recall, search_score, classifier, oracle):
    return {
        "group": group, "name": name, "algorithm": algorithm, "verifier": verifier, "nfe": nfe,
        "inception_score": inception_score, "fid": fid, "recall": recall, "search_score": search_score,
        "score/classifier": classifier, "score/oracle": oracle,
    }  # fmt: skip


# recorded by `lightning-search sweep --config recipes/digits/sweep.yaml` (1,000 samples per point)
BASELINE = _row("steps (no search)", "steps-nfe10", "none", "classifier", 10.0, 9.192902565002441,
                8.617517471313477, 0.6579999923706055, 11.46370166411996, 11.46370166411996, 11.243135221287607)  # fmt: skip
ORACLE_N2 = _row("random / oracle", "random-oracle-n2", "random", "oracle", 20.0, 9.727924346923828,
                 7.505013465881348, 0.6320000290870667, 12.700003830432891, 12.710209901571274, 12.700003830432891)  # fmt: skip
ORACLE_N32 = _row("random / oracle", "random-oracle-n32", "random", "oracle", 320.0, 9.992314338684082,
                  31.427600860595703, 0.30799999833106995, 15.865995979309082, 14.848697612762452, 15.865995979309082)  # fmt: skip
OTHER_PLAIN = _row("steps (no search)", "steps-nfe2", "none", "classifier", 2.0, 7.34, 40.35, 0.478, 8.06, 8.06, 8.79)
ROWS = [OTHER_PLAIN, BASELINE, ORACLE_N2, ORACLE_N32]
THRESHOLDS = HackingThresholds(baseline="steps-nfe10")


def test_the_warning_fires_for_the_oracle_at_n32_and_not_at_n2():
    found = {d.name: d for d in diagnose(ROWS, THRESHOLDS)}
    assert set(found) == {"random-oracle-n2", "random-oracle-n32"}  # no-search points are not diagnosed
    n2, n32 = found["random-oracle-n2"], found["random-oracle-n32"]
    # the oracle's own gain, against the baseline's oracle score
    assert n32.search_gain == pytest.approx(15.865995979309082 - 11.243135221287607)
    assert n2.search_gain == pytest.approx(12.700003830432891 - 11.243135221287607)
    assert n32.heldout_gains == {"classifier": pytest.approx(14.848697612762452 - 11.46370166411996)}
    assert n32.hacking and not n2.hacking
    assert n2.falls == []
    # FID +265 % and recall -0.35 both fall beyond their thresholds; IS and the held-out classifier rose
    assert any(f.startswith("FID") for f in n32.falls) and any(f.startswith("recall") for f in n32.falls)
    assert not any(f.startswith(("IS", "classifier")) for f in n32.falls)
    assert n32.changes["fid"] == pytest.approx(31.427600860595703 / 8.617517471313477 - 1)


def test_report_md_carries_one_warning_line(tmp_path):
    write_report(tmp_path, ROWS, "recorded", diagnostics=HackingThresholds(baseline="steps-nfe10"))
    text = (tmp_path / "report.md").read_text()
    warnings = [line for line in text.splitlines() if line.startswith("- WARNING verifier hacking")]
    assert len(warnings) == 1 and "`random-oracle-n32`" in warnings[0]
    assert "| random-oracle-n2 | oracle | +1.46 |" in text


def test_thresholds_are_configurable():
    # tight enough, N = 2's small recall drop (0.658 -> 0.632) is flagged too; loose enough, nothing is
    tight = {d.name: d.hacking for d in diagnose(ROWS, HackingThresholds(baseline="steps-nfe10", recall=0.02))}
    assert tight == {"random-oracle-n2": True, "random-oracle-n32": True}
    loose = HackingThresholds(baseline="steps-nfe10", fid=10.0, recall=1.0)
    assert not any(d.hacking for d in diagnose(ROWS, loose))


def test_no_warning_when_the_search_verifier_does_not_rise():
    worse = dict(ORACLE_N32, name="broken", search_score=10.0)  # below the baseline's oracle score
    (d,) = diagnose([BASELINE, worse], THRESHOLDS)
    assert d.search_gain < 0 and d.falls and not d.hacking


def test_an_ambiguous_baseline_is_reported_not_guessed():
    assert diagnose(ROWS) == []  # two no-search points and none named
    assert "baseline" in diagnostics_markdown(ROWS)
    assert [d.name for d in diagnose([BASELINE, ORACLE_N2])] == ["random-oracle-n2"]  # the only one
