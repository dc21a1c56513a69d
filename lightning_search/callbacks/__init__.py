"""Callbacks: the prediction writer and the end-of-run report."""

from lightning_search.callbacks.checkpoint import FinalCheckpoint
from lightning_search.callbacks.progress import SearchProgressBar
from lightning_search.callbacks.report import RunReport
from lightning_search.callbacks.writer import PredictionWriter

__all__ = ["FinalCheckpoint", "PredictionWriter", "RunReport", "SearchProgressBar"]
