"""Verifiers score samples (higher is better); one file per verifier, registered by name here."""

from lightning_search.verifiers.base import Verifier, check_images
from lightning_search.verifiers.classifier import ClassifierVerifier

VERIFIERS: dict[str, type[Verifier]] = {"classifier": ClassifierVerifier}

__all__ = ["VERIFIERS", "ClassifierVerifier", "Verifier", "check_images"]
