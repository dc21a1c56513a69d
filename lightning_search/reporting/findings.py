"""The paper's findings, checked on a sweep's rows: each line states the claim, the numbers, and whether
this run reproduces it.

The checks know their sweep: group names and NFE values as in ``recipes/digits/sweep.yaml``. So they run only
when a sweep config asks for them by name (``findings: digits``); a user's own sweep gets none of digits'
verdicts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning_search.errors import lookup

Row = dict[str, Any]


def _group(rows: list[Row], name: str) -> list[Row]:
    return sorted((r for r in rows if r.get("group") == name and r.get("nfe") is not None), key=lambda r: r["nfe"])


def _at(rows: list[Row], nfe: float) -> Row | None:
    return next((r for r in rows if r["nfe"] == nfe), None)


def _nearest(rows: list[Row], nfe: float) -> Row | None:
    return min(rows, key=lambda r: abs(r["nfe"] - nfe)) if rows else None


def paper_findings(rows: list[Row], verifier_group: str = "random / classifier") -> list[tuple[str, bool]]:
    """(sentence with numbers, reproduced?) for each finding whose points are in the sweep."""
    out: list[tuple[str, bool]] = []
    steps = _group(rows, "steps (no search)")
    s20, s64 = _at(steps, 20), _at(steps, 64)
    if s20 and s64:
        gain = s64["inception_score"] - s20["inception_score"]
        out.append((f"More denoising steps plateau: IS at 64 NFE - IS at 20 NFE = {gain:+.3f} (< 0.15)", gain < 0.15))
    rnd = _group(rows, verifier_group)
    if len(rnd) >= 2:
        iss = [r["inception_score"] for r in rnd]
        rising = all(b > a for a, b in zip(iss, iss[1:]))
        trail = ", ".join(f"{r['nfe']:.0f}: {r['inception_score']:.2f}" for r in rnd)
        out.append((f"Search keeps improving IS with NFE ({verifier_group}; NFE: IS = {trail})", rising))
        n1, n16, n32 = _at(rnd, 10), _at(rnd, 160), _at(rnd, 320)
        if n1 and n16:
            gain = n16["inception_score"] - n1["inception_score"]
            out.append((f"IS gain from N = 1 to N = 16: {gain:+.2f} (>= 1.0)", gain >= 1.0))
        if n1 and n32:
            small = [r for r in rnd if 20 <= r["nfe"] <= 80]
            best = min(small, key=lambda r: r["fid"]) if small else None
            if best:
                lowest = min(rnd, key=lambda r: r["fid"])
                hack = n32["fid"] - best["fid"]
                out.append(
                    (
                        f"Verifier hacking: FID is lowest at NFE {lowest['nfe']:.0f} ({lowest['fid']:.2f}), "
                        f"N = 32 is {hack:+.2f} above the best of N = 2..8 (>= 1.5)",
                        20 <= lowest["nfe"] <= 80 and hack >= 1.5,
                    )
                )
            drop = n1["recall"] - n32["recall"]
            out.append(
                (
                    f"Recall falls with search: N = 1 {n1['recall']:.3f} -> N = 32 {n32['recall']:.3f} (>= 0.15 lower)",
                    drop >= 0.15,
                )
            )
    ssl = _at(_group(rows, "random / self_supervised"), 320)
    sup = _at(rnd, 320) if rnd else None
    if ssl and sup:
        out.append(
            (
                f"Self-supervised verifier at N = 32: FID {ssl['fid']:.2f} vs supervised {sup['fid']:.2f} (lower)",
                ssl["fid"] < sup["fid"],
            )
        )
    zo = _nearest(_group(rows, "zero_order (lambda 0.1) / classifier"), 160)
    rnd160 = _at(rnd, 160) if rnd else None
    if zo and rnd160:
        out.append(
            (
                f"At ~160 NFE zero-order keeps more diversity: FID {zo['fid']:.2f} (NFE {zo['nfe']:.0f}) vs random "
                f"{rnd160['fid']:.2f} (lower)",
                zo["fid"] < rnd160["fid"],
            )
        )
    paths = _nearest(_group(rows, "paths / classifier"), 160)
    if paths and rnd160:
        out.append(
            (
                f"At ~160 NFE paths search: FID {paths['fid']:.2f}, recall {paths['recall']:.3f} vs random "
                f"{rnd160['fid']:.2f}, {rnd160['recall']:.3f}",
                paths["fid"] < rnd160["fid"],
            )
        )
    out += beyond_paper_findings(rows, rnd)
    return out


def beyond_paper_findings(rows: list[Row], rnd: list[Row]) -> list[tuple[str, bool]]:
    """SMC steering and gradient search (issue 8) against random search on the same verifier."""
    out: list[tuple[str, bool]] = []
    rnd160 = _at(rnd, 160) if rnd else None
    smc = _nearest(_group(rows, "smc / classifier"), 160)
    if smc and rnd160:
        out.append(
            (
                f"Beyond the paper, SMC at ~160 NFE: verifier {smc['search_score']:.2f} (NFE {smc['nfe']:.0f}, "
                f"IS {smc['inception_score']:.2f}, FID {smc['fid']:.2f}) vs random {rnd160['search_score']:.2f} "
                f"(IS {rnd160['inception_score']:.2f}, FID {rnd160['fid']:.2f}) (verifier at least as high)",
                smc["search_score"] >= rnd160["search_score"],
            )
        )
    grad = _group(rows, "gradient / classifier")
    n1, n4 = (_at(rnd, 10), _at(rnd, 40)) if rnd else (None, None)
    if grad and n1 and n4:
        cheapest = grad[0]
        gain, random_gain = cheapest["search_score"] - n1["search_score"], n4["search_score"] - n1["search_score"]
        out.append(
            (
                f"Beyond the paper, gradient search at {cheapest['nfe']:.0f} NFE (backward passes counted) raises "
                f"the verifier by {gain:+.2f} over no search vs random N = 4 (40 NFE) {random_gain:+.2f} "
                f"(IS {cheapest['inception_score']:.2f} vs {n4['inception_score']:.2f}, FID {cheapest['fid']:.2f} vs "
                f"{n4['fid']:.2f}) (at least as much)",
                gain >= random_gain,
            )
        )
    out += after_paper_findings(rows, rnd160)
    return out


def after_paper_findings(rows: list[Row], rnd160: Row | None) -> list[tuple[str, bool]]:
    """The algorithms that followed the paper (issue 14), at ~160 NFE against random search N = 16."""
    out: list[tuple[str, bool]] = []
    if rnd160 is None:
        return out

    def described(r: Row) -> str:
        return (f"verifier {r['search_score']:.2f} at {r['nfe']:.0f} NFE (IS {r['inception_score']:.2f}, "
                f"FID {r['fid']:.2f}, recall {r['recall']:.3f})")  # fmt: skip

    base = f"random N = 16 {described(rnd160)}"
    sde = _nearest(_group(rows, "smc (SDE proposals) / classifier"), 160)
    if sde:
        out.append((f"SMC with SDE proposals at ~160 NFE: {described(sde)} vs {base} (verifier at least as high)",
                    sde["search_score"] >= rnd160["search_score"]))  # fmt: skip
    for group in ("beam / classifier", "budget forcing / classifier", "evolution / classifier"):
        point = _nearest(_group(rows, group), 160)
        if point:
            name = group.split(" / ")[0]
            out.append((f"{name.capitalize()} at ~160 NFE: {described(point)} vs {base} (verifier at least as high)",
                        point["search_score"] >= rnd160["search_score"]))  # fmt: skip
    pruned = [r for r in _group(rows, "pruning / classifier") if r["search_score"] >= rnd160["search_score"]]
    if _group(rows, "pruning / classifier"):
        cheapest = pruned[0] if pruned else None
        share = cheapest["nfe"] / rnd160["nfe"] if cheapest else float("inf")
        text = (f"{described(cheapest)}, {share:.0%} of random N = 16's NFEs" if cheapest
                else "no pruning point reaches it")  # fmt: skip
        out.append((f"Early pruning reaches random N = 16's verifier score ({rnd160['search_score']:.2f}) with at "
                    f"most 60% of its NFEs: {text}", share <= 0.6))  # fmt: skip
    return out


# sweep config ``findings: NAME`` -> the checks it asks for
FINDINGS: dict[str, Callable[[list[Row]], list[tuple[str, bool]]]] = {"digits": paper_findings}


def findings_markdown(rows: list[Row], name: str) -> str:
    """The report's lines for the checks named ``name`` (a key of :data:`FINDINGS`)."""
    checks = lookup(FINDINGS, "findings", name)
    return "\n".join(f"- {'reproduced' if ok else 'NOT reproduced'}: {text}" for text, ok in checks(rows))
