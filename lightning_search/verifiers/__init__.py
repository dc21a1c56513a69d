"""Verifiers score samples (higher is better); one file per verifier, registered by name here.

Heavy libraries (open_clip, transformers) are imported when a verifier is built, not here.
"""

from typing import Any

from lightning_search.errors import lookup
from lightning_search.verifiers.aesthetic import AestheticVerifier
from lightning_search.verifiers.base import Verifier, check_images
from lightning_search.verifiers.classifier import ClassifierVerifier
from lightning_search.verifiers.clip_score import ClipScoreVerifier
from lightning_search.verifiers.ensemble import EnsembleVerifier
from lightning_search.verifiers.hps import HPSVerifier
from lightning_search.verifiers.image_reward import ImageRewardVerifier
from lightning_search.verifiers.pickscore import PickScoreVerifier
from lightning_search.verifiers.remote import RemoteVerifier
from lightning_search.verifiers.self_supervised import SelfSupervisedVerifier
from lightning_search.verifiers.shapes_clip import ShapesClipVerifier
from lightning_search.verifiers.shapes_judge import ShapesJudge
from lightning_search.verifiers.vlm_grader import VLMGraderVerifier

VERIFIERS: dict[str, type[Verifier]] = {
    "classifier": ClassifierVerifier,
    "self_supervised": SelfSupervisedVerifier,
    "ensemble": EnsembleVerifier,
    "clip_score": ClipScoreVerifier,
    "aesthetic": AestheticVerifier,
    "image_reward": ImageRewardVerifier,
    "pickscore": PickScoreVerifier,
    "hps": HPSVerifier,
    "vlm_grader": VLMGraderVerifier,
    "remote": RemoteVerifier,
    "shapes_judge": ShapesJudge,
    "shapes_clip": ShapesClipVerifier,
}


def build_verifier(name: str, **kwargs: Any) -> Verifier:
    """``VERIFIERS[name](**kwargs)``; an unknown name raises an error listing the valid ones."""
    return lookup(VERIFIERS, "verifier", name)(**kwargs)


__all__ = [
    "VERIFIERS",
    "AestheticVerifier",
    "ClassifierVerifier",
    "ClipScoreVerifier",
    "EnsembleVerifier",
    "HPSVerifier",
    "ImageRewardVerifier",
    "PickScoreVerifier",
    "RemoteVerifier",
    "SelfSupervisedVerifier",
    "ShapesClipVerifier",
    "ShapesJudge",
    "VLMGraderVerifier",
    "Verifier",
    "build_verifier",
    "check_images",
]
