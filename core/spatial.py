"""Spatial transformer: any timm ViT applied per frame, returning CLS and patch tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SpatialConfig:
    """The per-frame image ViT (timm) and where its weights come from."""

    model: str = "vit_tiny_patch16_224"
    """timm model name (a VisionTransformer variant)."""
    weights: str | None = None
    """Local weights file (safetensors or torch checkpoint, timm key names); never a hub download."""
    img_size: int = 224
    patch_size: int | None = None
    """None keeps the model's own patch size."""
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra `timm.create_model` arguments, e.g. depth/embed_dim/num_heads for tiny debug ViTs."""
    layer: int = -1
    """Block whose output is used (-1: last block, followed by the final norm)."""

    def __post_init__(self) -> None:
        if self.img_size < 8:
            raise ValueError(f"spatial.img_size must be >= 8, got {self.img_size}")
