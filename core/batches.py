"""The trainer's batch interface: what any clip source (streaming loader, test tensors) provides.

Structural protocols, so `data/` implements them without importing `core/`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class TrainBatches(Protocol):
    """An endless stream of `(frames B×T×C×H×W, labels B)` on the training device.

    Exact resume: the trainer stores `position()` in each checkpoint (per rank) and passes it
    back to `batches()`, so a resumed run is fed exactly what an uninterrupted one would be.
    """

    num_classes: int

    def batches(
        self, start_step: int, position: dict[str, Any] | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Micro-batches from optimiser step `start_step` on. `position`, a value `position()`
        returned, continues the stream right after the batch it was taken at; None starts it
        for `start_step` (a fresh run, or a checkpoint that holds no position).

        A source may start preparing batches in this call, before the first `next()`: the run
        asks for its stream before it waits for MLflow, so the pipeline fills during start-up."""
        ...

    def position(self) -> dict[str, Any]:
        """Where the stream stands after the last micro-batch `batches()` handed out: a
        JSON-serialisable value that only this source interprets."""
        ...

    def stats(self) -> dict[str, float]:
        """Counters for the metrics log, e.g. `corrupt_skipped`, `data_wait_total_s`."""
        ...


@runtime_checkable
class EvalBatches(Protocol):
    """One exact pass over this rank's share of the validation split, multi-view.

    Yields `(frames B×V×T×C×H×W, labels B)`: V = temporal clips × spatial crops per video.
    """

    num_classes: int

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def stats(self) -> dict[str, float]: ...
