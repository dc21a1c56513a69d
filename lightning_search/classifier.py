"""Small image classifiers: the digits verifier (for search) and evaluator (for metrics), and their loader.

Trained by ``lightning-search fit --config recipes/digits/verifier.yaml`` (or ``evaluator.yaml``) on
disjoint halves of the training split. Different architectures and seeds, so that search that exploits
the verifier's quirks shows up in the evaluator's metrics as "verifier hacking".
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from lightning import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from typing_extensions import override

from lightning_search.checkpoints import load_checkpoint
from lightning_search.errors import CheckpointError, lookup
from lightning_search.factories import plain_callable
from lightning_search.seeding import run_seed, seeded_step


class FeatureClassifier(nn.Module):
    """A body from images to ``feature_dim`` features and a linear head from them to logits: the sample-quality
    metrics and the self-supervised verifier read the features, the classifier verifier the logits.

    images: (B, 1, 8, 8) -> logits (B, num_classes)
    """

    feature_dim = 64

    def __init__(self, body: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class DigitsCNN(FeatureClassifier):
    """Two 3x3 convolutions and a 2x2 pool: 8x8 -> 4x4 x 32 -> 64 features -> logits."""

    def __init__(self, num_classes: int = 10) -> None:
        # built before the head, as the weights were always drawn (body, then head)
        body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 16, self.feature_dim), nn.ReLU(),
        )  # fmt: skip
        super().__init__(body, num_classes)


class DigitsWideNet(FeatureClassifier):
    """A different design for the evaluator: strided 5x5 convolution, dropout, 2-layer MLP; 64 features."""

    def __init__(self, num_classes: int = 10) -> None:
        body = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2, stride=2), nn.GELU(), nn.Flatten(), nn.Dropout(0.2),
            nn.Linear(32 * 16, 128), nn.GELU(), nn.Linear(128, self.feature_dim), nn.GELU(),
        )  # fmt: skip
        super().__init__(body, num_classes)


CLASSIFIERS: dict[str, type[nn.Module]] = {"digits-cnn": DigitsCNN, "digits-wide": DigitsWideNet}


class ClassifierModule(LightningModule):
    """Cross-entropy training of a registered classifier on batches of ``image`` and ``condition`` (label).

    ``seed``: of the training draws (shifts, dropout), per step as ``DiffusionModule``'s (``seeding.py``);
    None: the run's ``seed_everything``.
    """

    def __init__(
        self,
        arch: str = "digits-cnn",
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"])
        self.seed = self.hparams["seed"] = run_seed(seed)
        self.net = lookup(CLASSIFIERS, "classifier architecture", arch)(num_classes)
        self.optimizer = plain_callable(optimizer)

    @override
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    @staticmethod
    def _shift(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # one-pixel random translations: 650 training digits are few, and generated digits are not centred alike
        dx, dy = torch.randint(
            -1, 2, (2,), generator=generator, device=generator.device if generator else None
        ).tolist()
        return torch.roll(images, shifts=(dy, dx), dims=(2, 3))

    @override
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        with seeded_step(self.seed, self.global_step, batch_idx, self.global_rank, self.device) as generator:
            loss = F.cross_entropy(self.net(self._shift(batch["image"], generator)), batch["condition"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    @override
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self.net(batch["image"])
        self.log("val/loss", F.cross_entropy(logits, batch["condition"]))
        self.log("val/accuracy", (logits.argmax(1) == batch["condition"]).float().mean(), prog_bar=True)

    @override
    def configure_optimizers(self):
        return self.optimizer(self.parameters())


def load_classifier(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """A trained classifier network (eval mode) from a Lightning checkpoint, loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"classifier checkpoint {str(path)!r} not found; train it first, e.g. "
            "`lightning-search fit --config recipes/digits/verifier.yaml`, or point to an existing .ckpt"
        )
    ckpt = load_checkpoint(path, "classifier checkpoint", map_location)
    if not any(k.startswith("net.") for k in ckpt.get("state_dict", {})):
        raise CheckpointError(
            f"classifier checkpoint {str(path)!r} holds no classifier (no net.* weights): a checkpoint of another "
            "model? Point to one written by `lightning-search fit --config recipes/digits/verifier.yaml`"
        )
    hparams = ckpt.get("hyper_parameters", {})
    net = lookup(CLASSIFIERS, "classifier architecture", hparams.get("arch", "digits-cnn"))(
        hparams.get("num_classes", 10)
    )
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"classifier checkpoint {str(path)!r} does not fit its architecture {hparams.get('arch')!r} "
            f"({str(err).splitlines()[-1].strip()[:160]})"
        ) from None
    return net.eval().requires_grad_(False)
