"""Model families behind one interface (:class:`Backbone`); one file per family."""

from lightning_search.backbones.base import (
    Backbone,
    cond_batch_size,
    cond_cat,
    cond_index,
    cond_repeat,
    cond_where,
)
from lightning_search.backbones.digits import DIGITS_SIZES, DigitsBackbone
from lightning_search.backbones.schedules import FlowSchedule, Schedule, VPSchedule

__all__ = [
    "DIGITS_SIZES",
    "Backbone",
    "DigitsBackbone",
    "FlowSchedule",
    "Schedule",
    "VPSchedule",
    "cond_cat",
    "cond_index",
    "cond_batch_size",
    "cond_repeat",
    "cond_where",
]
