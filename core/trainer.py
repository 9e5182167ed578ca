"""Training loop: frozen spatial forward outside the engine, DeepSpeed step, eval, checkpoints."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    """Step budget, batch sizes and logging cadence."""

    steps: int = 1000
    """Optimiser steps."""
    micro_batch_size: int = 8
    """Clips per rank per forward (DeepSpeed `train_micro_batch_size_per_gpu`)."""
    grad_accum: int = 1
    log_every: int = 10
    eval_every: int = 0
    """0: evaluate only at the end."""
    eval_max_videos: int | None = None
    """Cap on evaluated videos (None: the whole validation split)."""
    ckpt_every: int = 0
    """0: checkpoint only at the end."""
    keep_checkpoints: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"train.steps must be >= 0, got {self.steps}")
        if self.micro_batch_size < 1 or self.grad_accum < 1:
            raise ValueError("train.micro_batch_size and train.grad_accum must be >= 1")
        if self.keep_checkpoints < 1:
            raise ValueError(f"train.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
