"""Sample quality on a classifier's features: FID, KID, IS (torchmetrics), k-NN precision/recall, accuracy,
and diversity (mean pairwise feature distance within a class).

For digits the classifier is the evaluator, trained on data the verifier never saw; FID/KID/precision/
recall use its penultimate features, IS and accuracy its logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# imported from their modules: torchmetrics.image only re-exports them when torch-fidelity is installed
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from lightning_search.metrics.diversity import PairwiseDistance
from lightning_search.metrics.precision_recall import PrecisionRecall


class ClassifierFeatures(nn.Module):
    """Adapts a classifier with ``features()``/``head`` to torchmetrics' ``feature=`` modules.

    ``output="features"`` gives penultimate features (FID, KID, PR), ``"logits"`` the logits (IS).
    ``num_features`` is set so that torchmetrics does not probe the module with a 299x299 dummy image.
    """

    def __init__(self, classifier: nn.Module, output: str = "features") -> None:
        super().__init__()
        self.classifier, self.output = classifier, output
        self.num_features = classifier.feature_dim if output == "features" else classifier.head.out_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float() / 255
        features = self.classifier.features(images.float())
        return features if self.output == "features" else self.classifier.head(features)


class SampleQuality(nn.Module):
    """Accumulates generated images (with their target labels) against a fixed real set; ``compute()`` -> dict.

    Args:
        classifier: the evaluator network (``features``, ``head``); frozen.
        real_images: (N, C, H, W) in [0, 1], the reference set.
        kid_subset_size: KID subset size (capped at the number of samples).
        inception_splits: IS splits (1: one estimate over all samples).
    """

    def __init__(
        self,
        classifier: nn.Module,
        real_images: torch.Tensor,
        kid_subset_size: int = 100,
        inception_splits: int = 1,
    ) -> None:
        super().__init__()
        features, logits = ClassifierFeatures(classifier, "features"), ClassifierFeatures(classifier, "logits")
        n_real = real_images.shape[0]
        # sync_on_compute=False: a run's metrics are computed by one process from the merged outputs
        local = {"sync_on_compute": False}
        self.fid = FrechetInceptionDistance(feature=features, normalize=True, **local)
        self.kid = KernelInceptionDistance(
            feature=features, normalize=True, subset_size=min(kid_subset_size, n_real), **local
        )
        # normalize=False: InceptionScore would otherwise truncate floats to uint8 even for a custom model
        self.inception = InceptionScore(feature=logits, normalize=False, splits=inception_splits, **local)
        self.pr = PrecisionRecall(features, **local)
        self.diversity = PairwiseDistance(features, **local)
        self.classifier, self.kid_subset_size = classifier, kid_subset_size
        self.register_buffer("correct", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("total", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("real_images", real_images.float(), persistent=False)
        self._real_added = False

    def _add_real(self) -> None:
        for chunk in self.real_images.split(1024):
            self.fid.update(chunk, real=True)
            self.kid.update(chunk, real=True)
            self.pr.update(chunk, real=True)
        self._real_added = True

    @torch.no_grad()
    def update(self, images: torch.Tensor, labels: Sequence[int] | torch.Tensor | None = None) -> None:
        """images: (B, C, H, W) in [0, 1]; labels: the class each image was conditioned on (for accuracy)."""
        if not self._real_added:
            self._add_real()
        images = images.to(self.real_images.device).float()
        self.fid.update(images, real=False)
        self.kid.update(images, real=False)
        self.inception.update(images)
        self.pr.update(images, real=False)
        self.diversity.update(images, labels)
        if labels is not None:
            labels = torch.as_tensor(labels, device=images.device)
            self.correct += (self.classifier(images).argmax(1) == labels).sum()
            self.total += labels.numel()

    @torch.no_grad()
    def compute(self) -> dict[str, float]:
        n_fake = len(self.inception.features) and sum(f.shape[0] for f in self.inception.features)
        self.kid.subset_size = min(self.kid_subset_size, n_fake, self.real_images.shape[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # KID draws random subsets from the global generator: fix them, same images same KID
            kid_mean, kid_std = self.kid.compute()
        is_mean, is_std = self.inception.compute()
        pr = self.pr.compute()
        out = {
            "fid": float(self.fid.compute()),
            "kid": float(kid_mean),
            "kid_std": float(kid_std),
            "inception_score": float(is_mean),
            "precision": float(pr["precision"]),
            "recall": float(pr["recall"]),
            "pairwise_distance": float(self.diversity.compute()),
            "num_samples": int(n_fake),
        }
        if self.total > 0:
            out["accuracy"] = float(self.correct) / float(self.total)
        return out
