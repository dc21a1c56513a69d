"""Reward per NFE: how many NFEs each algorithm needs to reach random search's verifier score at N candidates.

For every group of a sweep (one algorithm with one verifier, several points) the search-verifier score is
taken as a function of NFE, linear between the group's points in log NFE; the NFE at which it first reaches
random search's score at N = 8, 16, 32 is read off that curve, and the held-out metrics (IS, FID, recall)
are interpolated at the same place. A group that never gets there is reported as such, with its best score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Row = dict[str, Any]
METRICS = ("inception_score", "fid", "recall")


def _points(rows: Sequence[Row], group: str) -> list[Row]:
    pts = [r for r in rows if r.get("group") == group and r.get("nfe") and r.get("search_score") is not None]
    return sorted(pts, key=lambda r: r["nfe"])


def first_crossing(points: Sequence[Row], target: float) -> Row | None:
    """The interpolated {nfe, search_score, metrics} where the score first reaches ``target``, or None."""
    for i, p in enumerate(points):
        if p["search_score"] < target:
            continue
        if i == 0:  # already there at its cheapest point: at most that many NFEs
            return {"nfe": p["nfe"], "search_score": p["search_score"], **{m: p.get(m) for m in METRICS}, "bound": True}
        a = points[i - 1]
        w = (target - a["search_score"]) / (p["search_score"] - a["search_score"])
        log_nfe = math.log(a["nfe"]) + w * (math.log(p["nfe"]) - math.log(a["nfe"]))
        out = {"nfe": math.exp(log_nfe), "search_score": target, "interpolated": p["search_score"] != target}
        for m in METRICS:
            va, vb = a.get(m), p.get(m)
            out[m] = None if va is None or vb is None else va + w * (vb - va)
        return out
    return None


def efficiency_rows(
    rows: Sequence[Row], reference: str, candidates: Sequence[int] = (8, 16, 32), per_candidate: float | None = None
) -> list[Row]:
    """One row per (group, N): the NFEs needed to reach the reference group's score at N candidates.

    reference: the group of random search with the same verifier; its point with N candidates is the one
    at ``N x per_candidate`` NFEs (default: its first point's NFEs, N = 1).
    """
    ref = _points(rows, reference)
    if not ref:
        return []
    per_candidate = per_candidate or ref[0]["nfe"]
    targets = {n: next((r for r in ref if r["nfe"] == n * per_candidate), None) for n in candidates}
    searched = [r for r in rows if r.get("algorithm") not in (None, "none")]  # no-search points reach nothing
    groups = sorted({r["group"] for r in searched if r.get("group") not in (None, reference)})
    out = []
    for n, target in targets.items():
        if target is None:
            continue
        out.append({"group": reference, "n": n, "target": target["search_score"], "nfe": target["nfe"],
                    **{m: target.get(m) for m in METRICS}, "saving": 1.0, "reached": True})  # fmt: skip
        for group in groups:
            points = _points(rows, group)
            if not points or points[0].get("verifier") != target.get("verifier"):
                continue
            hit = first_crossing(points, target["search_score"])
            if hit is None:
                best = max(points, key=lambda p: p["search_score"])
                out.append({"group": group, "n": n, "target": target["search_score"], "nfe": None, "reached": False,
                            "best": best["search_score"], "best_nfe": best["nfe"]})  # fmt: skip
            else:
                out.append({"group": group, "n": n, "target": target["search_score"], **hit, "reached": True,
                            "saving": target["nfe"] / hit["nfe"]})  # fmt: skip
    return out


def efficiency_markdown(rows: Sequence[Row], reference: str, candidates: Sequence[int] = (8, 16, 32)) -> str:
    """The reward-per-NFE table of report.md ("" when the sweep has no reference points)."""
    table = efficiency_rows(rows, reference, candidates)
    if not table:
        return ""

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    lines = [
        f"NFEs each algorithm needs to reach the verifier score of `{reference}` at N candidates (linear in log NFE "
        "between a group's points; held-out metrics read at the same place).",
        "",
        "| N | target score | algorithm | NFE to reach it | x fewer NFEs | IS | FID | recall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        if r["reached"]:
            nfe = (
                ("<= " if r.get("bound") else "")
                + fmt(r["nfe"], ".0f")
                + (" (interp.)" if r.get("interpolated") else "")
            )
            lines.append(
                f"| {r['n']} | {r['target']:.2f} | {r['group']} | {nfe} | {fmt(r.get('saving'), '.2f')} | "
                f"{fmt(r.get('inception_score'), '.2f')} | {fmt(r.get('fid'), '.2f')} | {fmt(r.get('recall'), '.3f')} |"
            )
        else:
            lines.append(
                f"| {r['n']} | {r['target']:.2f} | {r['group']} | not reached (best {r['best']:.2f} at "
                f"{r['best_nfe']:.0f}) | - | - | - | - |"
            )
    return "\n".join(lines)
