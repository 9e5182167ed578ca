"""Optimiser settings, weight-decay parameter groups and the warm-up + cosine schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class OptimConfig:
    """AdamW over the trainable parameters only."""

    lr: float = 1e-3
    """Peak learning rate of the trainable non-spatial parts (per optimiser step)."""
    spatial_lr_mult: float = 0.1
    """Full mode: the spatial transformer learns at `lr * spatial_lr_mult` (a fair baseline needs it)."""
    layer_decay: float | None = None
    """Full mode: extra per-block decay `layer_decay ** (depth - i)` on top of `spatial_lr_mult`."""
    weight_decay: float = 0.05
    """AdamW decay of weight matrices (norms, biases, embeddings and tokens: none)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW moment coefficients."""
    eps: float = 1e-8
    """AdamW denominator epsilon."""
    warmup_steps: int = 50
    """Linear warm-up to the peak learning rate, then cosine decay to the floor."""
    min_lr_ratio: float = 0.01
    """Cosine floor as a fraction of the peak."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (DeepSpeed `gradient_clipping`)."""
    impl: str = "torch"
    """`torch`: `torch.optim.AdamW` under DeepSpeed (fused kernels on a GPU; nothing to compile);
    `deepspeed`: DeepSpeed's FusedAdam, JIT-built on first use (nvcc on a GPU, a C++ build on a
    CPU). `torch` is the default: it needs no compiler on the user's nodes, and on the H100 check
    DeepSpeed's build failed with an arch list holding `9.0a` (benchmarks/results/gpu-check_*)."""

    def __post_init__(self) -> None:
        if self.impl not in ("deepspeed", "torch"):
            raise ValueError(f"optim.impl must be 'deepspeed' or 'torch', got {self.impl!r}")
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.spatial_lr_mult < 0:
            raise ValueError(f"optim.spatial_lr_mult must be >= 0, got {self.spatial_lr_mult}")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1, then cosine down to `min_lr_ratio` at `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
