"""The exact judge of the shapes world: GenEval's evaluator with a detector that cannot be wrong on renders.

Detection (the analogue of GenEval's Mask2Former): every pixel takes the nearest palette colour (background
included) if it lies within ``tolerance`` of it (0.5: half the smallest distance between palette colours, so
the choice is unambiguous); the 8-connected components of each colour are the candidate objects; a
component's class is the shape whose mask, drawn in the component's bounding box, overlaps it best (IoU), and
that IoU is its confidence. Components under ``min_area`` pixels or ``min_iou`` confidence, or whose box is
more than ``max_aspect`` times longer than wide (every shape of the world has a square box), are not objects.
On the renderer's own images every object is found with IoU 1 (the templates are the renderer's masks).

Judgement (GenEval's ``evaluate``, ``evaluation/evaluate_images.py`` at commit 16f1681): include clauses need
at least ``count`` objects of the class; colour and position are checked on the ``count`` most confident of
them; a position holds against every object matched by the target clause, by GenEval's relative-position
rule; exclude clauses fail with ``count`` or more objects. An image scores 1.0 if every check passes, else 0.0;
``partial_credit`` scores the fraction of checks passed instead (a dense reward). The overall GenEval score
is the mean over tasks of the per-task accuracy (``evaluation/summary_scores.py``): :func:`judge_accuracy`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

import numpy as np
import torch

from lightning_search.errors import ConfigurationError
from lightning_search.verifiers.base import Verifier


@cache
def _world():
    # imported here, not at module level: lightning_search.data imports the verifier base (no import circle)
    from lightning_search.worlds import shapes

    palette = np.array([shapes.BACKGROUND, *shapes.COLORS.values()], dtype=np.float32)
    by_text = {p["prompt"]: shapes.condition_metadata(p) for p in shapes.all_prompts()}
    return shapes, palette, by_text


def metadata_of(condition: Any) -> dict[str, Any]:
    """GenEval metadata of a condition: the dict itself, or the world's prompt of that caption."""
    if isinstance(condition, dict) and "include" in condition:
        return condition
    text = condition.get("prompt") if isinstance(condition, dict) else condition
    by_text = _world()[2]
    if not isinstance(text, str) or text not in by_text:
        raise ConfigurationError(
            f"the shapes judge needs a shapes-world caption or its GenEval metadata, got {condition!r} "
            "(captions come from lightning_search.worlds.shapes.all_prompts())"
        )
    return by_text[text]


def detect_objects(
    image: np.ndarray, tolerance: float = 0.5, min_area: int = 6, min_iou: float = 0.6, max_aspect: float = 1.5
) -> dict[str, list[dict[str, Any]]]:
    """image (3, H, W) in [0, 1] -> {class: [{class, color, box, area, confidence}, ...]} sorted by
    confidence (then area) descending, as GenEval's detections are. Boxes are (x0, y0, x1, y1), x1 / y1
    exclusive."""
    from scipy import ndimage

    shapes, palette, _ = _world()
    colours = list(shapes.COLORS)
    pixels = np.asarray(image, dtype=np.float32).transpose(1, 2, 0)
    dist = np.linalg.norm(pixels[:, :, None, :] - palette[None, None], axis=-1)  # (H, W, K)
    label, near = dist.argmin(-1), dist.min(-1) < tolerance
    found: dict[str, list[dict[str, Any]]] = {}
    for k, colour in enumerate(colours, start=1):
        components, n = ndimage.label((label == k) & near, structure=np.ones((3, 3), dtype=bool))
        for index, window in enumerate(ndimage.find_objects(components), start=1):
            crop = components[window] == index
            area = int(crop.sum())
            if area < min_area:
                continue
            h, w = crop.shape
            if max(h, w) > max_aspect * min(h, w):
                continue
            ious = {s: _iou(crop, shapes.shape_mask(s, w, h)) for s in shapes.SHAPES}
            cls = max(ious, key=ious.get)
            if ious[cls] < min_iou:
                continue
            box = (window[1].start, window[0].start, window[1].stop, window[0].stop)
            found.setdefault(cls, []).append(
                {"class": cls, "color": colour, "box": box, "area": area, "confidence": ious[cls]}
            )
    for objects in found.values():
        objects.sort(key=lambda o: (-o["confidence"], -o["area"], o["box"][1], o["box"][0]))
    return found


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def evaluate(
    objects: dict[str, list[dict[str, Any]]], metadata: dict[str, Any], position_threshold: float = 0.1
) -> tuple[int, int, list[str]]:
    """GenEval's judgement of detected objects -> (checks passed, checks made, reasons for failures).

    Every include clause makes a count check plus one per colour / position it names, every exclude clause
    one check; a check that cannot be made because an earlier one of its clause failed counts as failed.
    """
    relative_position = _world()[0].relative_position
    passed, total, reasons = 0, 0, []
    matched_groups: list[list[dict] | None] = []
    for req in metadata.get("include", []):
        cls, count = req["class"], int(req["count"])
        checks = 1 + ("color" in req) + ("position" in req)
        total += checks
        found = objects.get(cls, [])[:count]
        ok = len(found) >= count
        if not ok:
            reasons.append(f"expected {cls}>={count}, found {len(found)}")
        else:
            passed += 1
            if "color" in req:
                hits = sum(o["color"] == req["color"] for o in found)
                ok = hits >= count
                passed += ok
                if not ok:
                    reasons.append(f"expected {req['color']} {cls}>={count}, found {hits} {req['color']}")
            if "position" in req and ok:
                relation, target = req["position"]
                group = matched_groups[target]
                if group is None:
                    ok = False
                    reasons.append(f"no target for {cls} to be {relation}")
                else:
                    ok = all(
                        relation in relative_position(o["box"], t["box"], position_threshold)
                        for o in found
                        for t in group
                    )
                    if not ok:
                        reasons.append(f"expected {cls} {relation} target")
                passed += ok
        matched_groups.append(found if ok else None)
    for req in metadata.get("exclude", []):
        total += 1
        n = len(objects.get(req["class"], []))
        if n >= int(req["count"]):
            reasons.append(f"expected {req['class']}<{req['count']}, found {n}")
        else:
            passed += 1
    return passed, total, reasons


class ShapesJudge(Verifier):
    """The oracle of the shapes world: 1.0 if GenEval would call the image correct for its caption, else 0.0.

    Conditions are the world's GenEval metadata dicts (or its captions). Held out from search and RL by
    default: it is what their results are measured with.

    Args:
        partial_credit: score the fraction of checks passed (a dense reward) instead of all-or-nothing.
        categories: score only conditions of these GenEval tags and NaN the rest, so that a run's mean score
            of such a judge is its accuracy on those tags (records store NaN as null; means skip it).
        tolerance, min_area, min_iou, max_aspect: the detector's settings (module docstring).
        position_threshold: GenEval's ``position_threshold``.
    """

    channels = 3

    def __init__(
        self,
        partial_credit: bool = False,
        categories: list[str] | None = None,
        tolerance: float = 0.5,
        min_area: int = 6,
        min_iou: float = 0.6,
        max_aspect: float = 1.5,
        position_threshold: float = 0.1,
    ) -> None:
        super().__init__()
        valid = _world()[0].CATEGORIES
        for c in categories or []:
            if c not in valid:
                raise ConfigurationError(f"unknown shapes category {c!r}; valid: {', '.join(valid)}")
        if not 0 < tolerance <= 0.5:
            raise ConfigurationError(f"tolerance must lie in (0, 0.5] (half the palette spacing), got {tolerance}")
        self.partial_credit, self.categories = partial_credit, None if categories is None else set(categories)
        self.detector = {"tolerance": tolerance, "min_area": min_area, "min_iou": min_iou, "max_aspect": max_aspect}
        self.position_threshold = position_threshold

    def judge(self, image: np.ndarray, condition: Any) -> tuple[int, int, list[str]]:
        """(checks passed, checks made, failure reasons) for one image (3, H, W) in [0, 1]."""
        return evaluate(detect_objects(image, **self.detector), metadata_of(condition), self.position_threshold)

    def score(
        self, images: torch.Tensor, conditions: Sequence[Any], x0_images: torch.Tensor | None = None
    ) -> torch.Tensor:
        array = images.detach().float().cpu().numpy()
        out = []
        for image, condition in zip(array, conditions):
            meta = metadata_of(condition)
            if self.categories is not None and meta["tag"] not in self.categories:
                out.append(float("nan"))
                continue
            passed, total, _ = self.judge(image, meta)
            out.append(passed / total if self.partial_credit else float(passed == total))
        return torch.tensor(out, dtype=torch.float32, device=images.device)


def judge_accuracy(records: Iterable[dict[str, Any]], verifier: str = "judge") -> dict[str, float]:
    """Per-task accuracy and GenEval's overall score (mean over tasks) from a run's records.

    records: ``records.jsonl`` rows (``lightning_search.runs.read_records``) whose ``condition`` is a
    shapes metadata dict and whose ``scores[verifier]`` is the judge's 0 / 1 score.
    Returns ``{tag: accuracy, ..., "overall": mean over tags}`` (tags in the order first seen).
    """
    by_tag: dict[str, list[float]] = {}
    for r in records:
        value = r.get("scores", {}).get(verifier)
        if value is not None:
            by_tag.setdefault(metadata_of(r["condition"])["tag"], []).append(float(value))
    if not by_tag:
        raise ConfigurationError(f"no record holds a {verifier!r} score; add the judge to the run's verifiers")
    acc = {tag: sum(v) / len(v) for tag, v in by_tag.items()}
    return {**acc, "overall": sum(acc.values()) / len(acc)}
