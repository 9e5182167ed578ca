"""Public entry points of the input pipeline (the rest of `data/` is built behind them)."""

from __future__ import annotations

from data.cache_reader import CachedTrainBatches, open_cached_train_batches
from data.dataset import ensure_dataset
from data.jobs import flip_policy
from data.manifest import read_manifest
from data.sources import EvalBatchSource, TrainBatchSource, open_eval_batches, open_train_batches

__all__ = [
    "CachedTrainBatches",
    "EvalBatchSource",
    "TrainBatchSource",
    "ensure_dataset",
    "flip_policy",
    "open_cached_train_batches",
    "open_eval_batches",
    "open_train_batches",
    "read_manifest",
]
