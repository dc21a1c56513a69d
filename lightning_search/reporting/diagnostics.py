"""Verifier-hacking diagnostics for a sweep: does search raise its own verifier while what it was meant to
improve falls?

For every searched point, the gain of the search verifier over the no-search baseline (the plain sample of
the sampler the search spends its candidates on) is set next to the held-out evaluators' gains (the other
``score/*`` columns), the change of IS and FID on the evaluator's features, and of diversity (recall, and
the mean within-class pairwise feature distance). A point is flagged when the search verifier rises while a
held-out measure falls beyond its threshold: the pattern Ma et al. 2025 (Sec. 4.1) call verifier hacking,
and what Singhal et al. 2025 and ReNO guard against with their reward regularisers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]


@dataclass
class HackingThresholds:
    """How far a held-out measure may fall before a point is flagged (sweep YAML: ``diagnostics:``).

    Args:
        baseline: name of the no-search point to compare against (None: the only no-search point, if one).
        score: largest tolerated drop of a held-out evaluator's mean score (its own units, e.g. logits).
        inception_score: largest tolerated drop of IS.
        fid: largest tolerated relative rise of FID (0.25: 25 % above the baseline's).
        recall: largest tolerated drop of recall (absolute).
        pairwise_distance: largest tolerated relative drop of the mean pairwise feature distance.
        verifier: the verifier every run was steered by (a fine-tune's reward, which is also the search
            verifier of the runs that search): then runs without search are diagnosed too, fine-tuned models
            against the base model (``compare``); None: each point's own search verifier (sweeps).
    """

    baseline: str | None = None
    score: float = 0.5
    inception_score: float = 0.1
    fid: float = 0.25
    recall: float = 0.1
    pairwise_distance: float = 0.1
    verifier: str | None = None


@dataclass
class Diagnosis:
    """One searched point against the baseline: its search gain, held-out changes, and what fell too far."""

    name: str
    verifier: str | None
    search_gain: float | None
    heldout_gains: dict[str, float]
    changes: dict[str, float]
    falls: list[str]

    @property
    def hacking(self) -> bool:
        """The search verifier rose (or is unknown to the baseline: search raises it by construction) while a
        held-out measure fell beyond its threshold."""
        return (self.search_gain is None or self.search_gain > 0) and bool(self.falls)


def _num(row: Row, key: str) -> float | None:
    v = row.get(key)
    return float(v) if isinstance(v, (int, float)) and v == v else None  # v == v: not NaN


def find_baseline(rows: list[Row], name: str | None = None) -> Row | None:
    """The named row, or the only no-search row (algorithm ``none``); None when that is ambiguous."""
    if name is not None:
        return next((r for r in rows if r.get("name") == name), None)
    plain = [r for r in rows if r.get("algorithm") == "none"]
    return plain[0] if len(plain) == 1 else None


def diagnose(rows: list[Row], thresholds: HackingThresholds | None = None) -> list[Diagnosis]:
    """A :class:`Diagnosis` for each searched row (algorithm other than ``none``), in the rows' order."""
    t = thresholds or HackingThresholds()
    if t.verifier is None and not any(r.get("algorithm") not in (None, "none") for r in rows):
        return []  # nothing was searched: nothing to diagnose
    base = find_baseline(rows, t.baseline)
    if base is None:
        return []
    out = []
    for row in rows:
        if row is base or (t.verifier is None and row.get("algorithm") in (None, "none")):
            continue
        verifier = t.verifier or row.get("verifier")
        search_gain = None
        own = _num(row, f"score/{verifier}" if t.verifier else "search_score")
        base_own = _num(base, f"score/{verifier}")
        if own is not None and base_own is not None:
            search_gain = own - base_own
        heldout, changes, falls = {}, {}, []
        for key in sorted(k for k in row if k.startswith("score/") and k != f"score/{verifier}"):
            a, b = _num(row, key), _num(base, key)
            if a is None or b is None:
                continue
            heldout[key[len("score/") :]] = a - b
            if a - b < -t.score:
                falls.append(f"{key[len('score/') :]} {b:.2f} -> {a:.2f} ({a - b:+.2f})")
        for key, label, relative, limit, worse_if_higher in (
            ("inception_score", "IS", False, t.inception_score, False),
            ("fid", "FID", True, t.fid, True),
            ("recall", "recall", False, t.recall, False),
            ("pairwise_distance", "pairwise distance", True, t.pairwise_distance, False),
        ):
            a, b = _num(row, key), _num(base, key)
            if a is None or b is None:
                continue
            change = (a - b) / abs(b) if relative and b else a - b
            changes[key] = change
            worse = change if worse_if_higher else -change
            if worse > limit:
                shown = f"{change:+.0%}" if relative else f"{change:+.3f}"
                falls.append(f"{label} {b:.3g} -> {a:.3g} ({shown})")
        out.append(Diagnosis(str(row.get("name")), verifier, search_gain, heldout, changes, falls))
    return out


def _fmt(v: float | None, relative: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.0%}" if relative else f"{v:+.2f}"


def diagnostics_markdown(rows: list[Row], thresholds: HackingThresholds | None = None) -> str:
    """The report's section: warning lines for flagged points, then a table of every searched point."""
    t = thresholds or HackingThresholds()
    if t.verifier is None and not any(r.get("algorithm") not in (None, "none") for r in rows):
        return ""  # nothing was searched: nothing to diagnose
    base = find_baseline(rows, t.baseline)
    if base is None:
        return (
            "No no-search baseline to compare against: name one with `diagnostics: {baseline: POINT}` in the "
            "sweep config."
        )
    results = diagnose(rows, t)
    if not results:
        return ""
    evaluators = sorted({k for d in results for k in d.heldout_gains})
    lines = [
        f"Gains over the no-search baseline `{base.get('name')}` (same sampler). A point is flagged when its "
        f"search verifier rises while a held-out evaluator drops by more than {t.score}, IS by more than "
        f"{t.inception_score}, FID rises by more than {t.fid:.0%}, recall drops by more than {t.recall} or the "
        f"mean within-class pairwise feature distance by more than {t.pairwise_distance:.0%}.",
        "",
    ]
    flagged = [d for d in results if d.hacking]
    for d in flagged:
        gain = "?" if d.search_gain is None else f"{d.search_gain:+.2f}"
        lines.append(
            f"- WARNING verifier hacking at `{d.name}`: search verifier {d.verifier} {gain} while " + "; ".join(d.falls)
        )
    if not flagged:
        lines.append("- no point flagged")
    lines += ["", "| point | search verifier | gain | " + " | ".join(f"{e} gain" for e in evaluators)
              + " | IS | FID | recall | pairwise distance | flagged |"]  # fmt: skip
    lines.append("|" + "---|" * (8 + len(evaluators)))
    for d in results:
        cells = [d.name, str(d.verifier), _fmt(d.search_gain)]
        cells += [_fmt(d.heldout_gains.get(e)) for e in evaluators]
        cells += [
            _fmt(d.changes.get("inception_score")),
            _fmt(d.changes.get("fid"), relative=True),
            _fmt(d.changes.get("recall")),
            _fmt(d.changes.get("pairwise_distance"), relative=True),
            "yes" if d.hacking else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
