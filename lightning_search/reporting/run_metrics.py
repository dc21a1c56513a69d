"""metrics.json of a run folder: sample quality on the evaluator's features, verifier scores, compute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lightning_search.runs import RunFolder, atomic_write_text


def summarize_records(records: list[dict]) -> dict[str, Any]:
    """Means over samples of NFE, GFLOPs, wall time, the search score and every verifier's score."""

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    summary: dict[str, Any] = {
        "num_samples": len(records),
        "algorithm": records[0].get("algorithm") if records else None,
        "verifier": records[0].get("verifier") if records else None,
        "nfe": mean([r["nfe"] for r in records]),
        "gflops": mean([r["gflops"] for r in records]),
        "verifier_gflops": mean([r["verifier_gflops"] for r in records]),
        "wall_time_per_sample": mean([r["wall_time"] for r in records]),
        "search_score": mean([r["score"] for r in records]),
    }
    names = sorted({name for r in records for name in r.get("scores", {})})
    summary["verifier_scores"] = {n: mean([r["scores"].get(n) for r in records]) for n in names}
    return summary


def compute_run_metrics(
    run_dir: str | Path,
    evaluator: torch.nn.Module | None = None,
    reference: torch.Tensor | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read a run's records and images, compute the metrics, write ``metrics.json`` and return it."""
    from lightning_search.metrics.sample_quality import SampleQuality

    folder = RunFolder(run_dir)
    records = folder.records()
    metrics = summarize_records(records)
    if evaluator is not None and reference is not None and records:
        images = folder.load_images(records)
        quality = SampleQuality(evaluator, reference)
        labels = [r["condition"] for r in records] if isinstance(records[0]["condition"], int) else None
        for start in range(0, len(records), 1000):
            quality.update(images[start : start + 1000], None if labels is None else labels[start : start + 1000])
        metrics.update(quality.compute())
    metrics.update(extra or {})
    folder.write_metrics(metrics)
    return metrics


def write_verifier_table(path: str | Path, metrics: dict[str, Any]) -> None:
    """The run's mean score under every verifier (the search one marked), as a markdown table."""
    search = metrics.get("verifier")
    rows = [
        f"| {name}{' (search)' if name == search else ''} | {value:.4f} |"
        for name, value in sorted(metrics["verifier_scores"].items())
        if value is not None
    ]
    header = [
        f"# Mean verifier scores: {metrics.get('num_samples')} samples, search {metrics.get('algorithm')!r}",
        "",
        f"NFE per sample {metrics.get('nfe')}; search verifier {search!r}"
        + (
            f" (its own mean over the chosen samples: {metrics['search_score']:.4f})"
            if metrics.get("search_score") is not None
            else ""
        ),
        "",
        "| verifier | mean score |",
        "|---|---|",
    ]
    atomic_write_text(path, "\n".join(header + rows) + "\n")
