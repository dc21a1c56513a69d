"""Metrics on pluggable features: FID, KID, IS (torchmetrics), precision/recall, accuracy; GFLOPs."""

from lightning_search.metrics.flops import backbone_gflops, verifier_gflops
from lightning_search.metrics.precision_recall import PrecisionRecall, precision_recall
from lightning_search.metrics.sample_quality import ClassifierFeatures, SampleQuality

__all__ = [
    "ClassifierFeatures",
    "PrecisionRecall",
    "SampleQuality",
    "backbone_gflops",
    "precision_recall",
    "verifier_gflops",
]
