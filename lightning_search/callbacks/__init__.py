"""Callbacks: the prediction writer, the AI-feedback pairs writer, the end-of-run report, checkpoints and
adapters of fit."""

from lightning_search.callbacks.adapter import SaveLoraAdapter
from lightning_search.callbacks.checkpoint import FinalCheckpoint
from lightning_search.callbacks.pairs import PairsWriter
from lightning_search.callbacks.progress import SearchProgressBar
from lightning_search.callbacks.report import RunReport
from lightning_search.callbacks.writer import PredictionWriter

__all__ = ["FinalCheckpoint", "PairsWriter", "PredictionWriter", "RunReport", "SaveLoraAdapter", "SearchProgressBar"]
