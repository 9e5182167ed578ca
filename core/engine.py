"""The only module that knows DeepSpeed: builds the engine over the trainable parts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class EngineConfig:
    """DeepSpeed JSON and the overrides the YAML may apply to it."""

    ds_config: str = "ds_configs/zero2_bf16.json"
    """DeepSpeed JSON (ZeRO stage, precision, offload); relative paths resolve against the repo."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """`auto`: the JSON's precision on GPU, fp32 on CPU (DeepSpeed's CPU path has no fp16)."""
    zero_stage: int | None = None
    """Override the JSON's ZeRO stage."""

    def __post_init__(self) -> None:
        if self.zero_stage is not None and self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"engine.zero_stage must be 0..3, got {self.zero_stage}")
