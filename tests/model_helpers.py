"""Tiny ViViT-FE configurations for CPU tests (a 4-block width-96 ViT on 32x32 frames)."""

from __future__ import annotations

import torch

from core.adapter import AdapterConfig
from core.config import ExperimentConfig
from core.spatial import SpatialConfig
from core.temporal import TemporalConfig
from data.config import DataConfig

TINY_VIT = "vit_tiny_patch16_224"
TINY_KWARGS = {"depth": 4, "embed_dim": 96, "num_heads": 3}
IMG, PATCH, FRAMES, CLASSES = 32, 8, 4, 5


def tiny_spatial(**overrides) -> SpatialConfig:
    fields = {"model": TINY_VIT, "img_size": IMG, "patch_size": PATCH, "model_kwargs": TINY_KWARGS}
    return SpatialConfig(**(fields | overrides))


def tiny_config(
    adapter: str = "none",
    frames: int = FRAMES,
    temporal: TemporalConfig | None = None,
    spatial: SpatialConfig | None = None,
    mode: str = "frozen",
) -> ExperimentConfig:
    return ExperimentConfig(
        mode=mode,
        spatial=spatial or tiny_spatial(),
        adapter=AdapterConfig(kind=adapter, bottleneck=16, heads=3),
        temporal=temporal or TemporalConfig(depth=2),
        data=DataConfig(frames=frames),
    )


def tiny_frames(batch: int = 2, frames: int = FRAMES, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, IMG, IMG, generator=generator)
