"""Temporal transformer over one token per frame, with its own CLS and temporal positions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class TemporalConfig:
    """Late-fusion temporal encoder and how it is initialised."""

    depth: int = 4
    width: int | None = None
    """None: the spatial width (required for `init: image`); else a projection is added."""
    heads: int | None = None
    """None: the spatial model's head count when widths match, else width // 64 (at least 1)."""
    mlp_ratio: float = 4.0
    init: Literal["random", "image", "checkpoint"] = "random"
    """`image`: copy the spatial ViT's last `depth` blocks; `checkpoint`: load an earlier run."""
    checkpoint: str | None = None
    """Run checkpoint directory (or run directory: newest checkpoint) for `init: checkpoint`."""
    load_spatial: bool = True
    """With `init: checkpoint`, also take the spatial weights from it (stage 2 of the recipe)."""
    pos_init: Literal["sincos", "normal"] = "sincos"
    """Temporal position embedding init; std-0.02 `normal` lets the model ignore order for long."""
    head_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"temporal.depth must be >= 1, got {self.depth}")
        if self.init == "checkpoint" and not self.checkpoint:
            raise ValueError("temporal.init=checkpoint needs temporal.checkpoint=PATH")
