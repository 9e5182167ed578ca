"""The `train.*` config section: step budget, batch sizes, cadences (no training code here, so
reading a config imports nothing of the trainer)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    """Step budget, batch sizes and logging cadence."""

    steps: int = 1000
    """Optimiser steps (>= 1; `vivit eval` scores a checkpoint without training)."""
    micro_batch_size: int = 8
    """Clips per rank per forward (DeepSpeed `train_micro_batch_size_per_gpu`)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimiser step."""
    log_every: int = 10
    """Steps between loss/throughput records (metrics.jsonl and MLflow)."""
    eval_every: int = 0
    """0: evaluate only at the end."""
    eval_max_videos: int | None = None
    """Cap on evaluated videos (None: the whole validation split)."""
    ckpt_every: int = 0
    """0: checkpoint only at the end."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept in `out_dir/checkpoints/`; older ones are deleted."""
    precise_bn_batches: int = 8
    """Before every evaluation and the final checkpoint, BatchNorm running statistics
    (`temporal.head_norm=batch`) are recomputed over the next N training micro-batches, which
    training then takes as usual (the "precise BN" of PySlowFast). Running averages lag weights
    that move fast: at peak learning rate the demo's stage 2 read 18.6% top-1 from them and
    32.2% from recomputed ones. Costs N forward passes: the final refresh counts as training
    time; an evaluation's refresh counts only in that evaluation's `train_time_s` (the curve
    point's cost), since the final refresh starts the statistics afresh. 0: off."""
    progress: bool = True
    """Progress bar on rank 0."""
    sync_steps: bool = False
    """Benchmark mode: wait for the device after every step so each step's time is its own.
    Off, the host queues steps ahead and reads the loss only on logging steps."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(
                f"train.steps must be >= 1, got {self.steps} (to score a checkpoint without "
                "training: vivit eval CONFIG.yaml checkpoint=DIR)"
            )
        if self.micro_batch_size < 1 or self.grad_accum < 1:
            raise ValueError("train.micro_batch_size and train.grad_accum must be >= 1")
        if self.precise_bn_batches < 0:
            raise ValueError(
                f"train.precise_bn_batches must be >= 0, got {self.precise_bn_batches}"
            )
        if self.keep_checkpoints < 1:
            raise ValueError(f"train.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
