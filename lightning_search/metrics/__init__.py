"""Metrics on pluggable features: FID, KID, IS (torchmetrics), precision/recall, accuracy, diversity; GFLOPs."""

from lightning_search.metrics.diversity import PairwiseDistance, mean_pairwise_distance
from lightning_search.metrics.flops import backbone_gflops, verifier_gflops
from lightning_search.metrics.precision_recall import PrecisionRecall, precision_recall
from lightning_search.metrics.sample_quality import ClassifierFeatures, SampleQuality

__all__ = [
    "ClassifierFeatures",
    "PairwiseDistance",
    "PrecisionRecall",
    "SampleQuality",
    "backbone_gflops",
    "mean_pairwise_distance",
    "precision_recall",
    "verifier_gflops",
]
