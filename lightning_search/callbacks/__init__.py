"""Callbacks: the prediction writer, the AI-feedback pairs writer, the end-of-run report, checkpoints,
adapters and sample grids of fit."""

from lightning_search.callbacks.adapter import SaveLoraAdapter
from lightning_search.callbacks.checkpoint import FinalCheckpoint
from lightning_search.callbacks.pairs import PairsWriter
from lightning_search.callbacks.progress import SearchProgressBar
from lightning_search.callbacks.report import RunReport
from lightning_search.callbacks.sample_grid import LogSampleGrid
from lightning_search.callbacks.writer import PredictionWriter

__all__ = [
    "FinalCheckpoint",
    "LogSampleGrid",
    "PairsWriter",
    "PredictionWriter",
    "RunReport",
    "SaveLoraAdapter",
    "SearchProgressBar",
]
