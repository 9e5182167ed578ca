"""Compact adapters between the frozen per-frame tokens and the temporal transformer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class AdapterConfig:
    """Which adapter sits after the spatial transformer (outside it, so no gradient flows back)."""

    kind: Literal["none", "mlp", "attn"] = "none"
    """`mlp`: zero-initialised residual bottleneck on the CLS; `attn`: learned query over patch tokens."""
    bottleneck: int = 64
    """Hidden width of the `mlp` adapter."""
    heads: int = 4
    """Attention heads of the `attn` adapter."""

    def __post_init__(self) -> None:
        if self.bottleneck < 1 or self.heads < 1:
            raise ValueError("adapter.bottleneck and adapter.heads must be >= 1")
