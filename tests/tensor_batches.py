"""A deterministic in-memory clip source implementing the trainer's batch interface.

Batch `i` depends only on (seed, i), so a resumed run sees exactly the batches an
uninterrupted run would have seen — which makes resume equivalence testable exactly.
The label is carried by the frame order, so only a model that looks at time can learn it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


class TensorBatches:
    def __init__(
        self,
        num_classes: int,
        batch_size: int,
        frames: int,
        size: int,
        grad_accum: int = 1,
        seed: int = 0,
    ) -> None:
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.frames = frames
        self.size = size
        self.grad_accum = grad_accum
        self.seed = seed
        self.served = 0
        self._next = 0

    def micro_batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        labels = torch.randint(0, self.num_classes, (self.batch_size,), generator=gen)
        base = torch.randn(self.batch_size, 1, 3, self.size, self.size, generator=gen)
        ramp = torch.linspace(-1, 1, self.frames).view(1, -1, 1, 1, 1)
        direction = (labels.float() / max(1, self.num_classes - 1) * 2 - 1).view(-1, 1, 1, 1, 1)
        frames = base + direction * ramp
        return frames, labels

    def batches(
        self, start_step: int, position: dict[str, Any] | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        index = start_step * self.grad_accum if position is None else int(position["index"])
        self._next = index
        while True:
            self.served += 1
            self._next = index + 1
            yield self.micro_batch(index)
            index += 1

    def position(self) -> dict[str, Any]:
        return {"index": self._next}

    def stats(self) -> dict[str, float]:
        return {"batches_served": float(self.served)}
