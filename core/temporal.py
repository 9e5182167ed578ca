"""Temporal transformer over one token per frame, with its own CLS and temporal positions."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm, LayerScale
from timm.models import named_apply
from timm.models.vision_transformer import Block, init_weights_vit_timm
from torch import Tensor, nn


@dataclass
class TemporalConfig:
    """Late-fusion temporal encoder and how it is initialised."""

    kind: Literal["transformer", "mean"] = "transformer"
    """`transformer`: ViViT-FE's temporal encoder; `mean`: the average of the frame tokens
    (Scenic ViViT's `spatial_only_baseline`, the bag-of-frames control: no order, no params)."""
    depth: int = 4
    """Temporal transformer blocks."""
    width: int | None = None
    """None: the spatial width (required for `init: image`); else a projection is added."""
    heads: int | None = None
    """None: the spatial model's head count when widths match, else width // 64 (at least 1)."""
    mlp_ratio: float = 4.0
    """MLP hidden width as a multiple of the temporal width."""
    init: Literal["random", "image", "checkpoint"] = "random"
    """`image`: copy the spatial ViT's last `depth` blocks; `checkpoint`: load an earlier run."""
    checkpoint: str | None = None
    """Run checkpoint directory (or run directory: newest checkpoint) for `init: checkpoint`."""
    load_spatial: bool = True
    """With `init: checkpoint`, also take the spatial weights from it (stage 2 of the recipe)."""
    pos_init: Literal["sincos", "normal"] = "sincos"
    """Temporal position embedding init; std-0.02 `normal` lets the model ignore order for long."""
    head_dropout: float = 0.0
    """Dropout before the classification head."""
    head_norm: Literal["batch", "none"] = "batch"
    """Normalise the temporal output across the batch before the classifier (BatchNorm
    without affine, as MAE's linear probe): the zero-initialised head then sees centred,
    unit-scale features from step 0 instead of a near-constant vector, which is what kept
    every arm at chance for hundreds of steps (README, "The two-stage recipe")."""

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"temporal.depth must be >= 1, got {self.depth}")
        if self.init == "checkpoint" and not self.checkpoint:
            raise ValueError("temporal.init=checkpoint needs temporal.checkpoint=PATH")
        if self.head_norm not in ("batch", "none"):
            raise ValueError(f"temporal.head_norm={self.head_norm!r}: expected batch or none")
        if self.kind not in ("transformer", "mean"):
            raise ValueError(f"temporal.kind={self.kind!r}: expected transformer or mean")
        if self.kind == "mean" and (self.init == "image" or self.width is not None):
            raise ValueError(
                "temporal.kind=mean has no blocks or projection: use temporal.init random or "
                "checkpoint and leave temporal.width unset"
            )


def block_style(reference: nn.Module | None) -> dict[str, Any]:
    """`Block` arguments that reproduce a timm ViT block's structure (biases, norms, layer scale).

    The temporal blocks are built like the spatial ones so `init: image` can copy them exactly.
    """
    style: dict[str, Any] = {"qkv_bias": True, "norm_layer": partial(LayerNorm, eps=1e-6)}
    if not isinstance(reference, Block):
        return style
    attn, mlp = reference.attn, reference.mlp
    norm = reference.norm1
    style["qkv_bias"] = getattr(attn.qkv, "bias", None) is not None
    style["qk_norm"] = not isinstance(getattr(attn, "q_norm", nn.Identity()), nn.Identity)
    style["scale_attn_norm"] = not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity)
    style["scale_mlp_norm"] = not isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity)
    style["proj_bias"] = attn.proj.bias is not None
    style["act_layer"] = type(mlp.act)
    style["norm_layer"] = partial(type(norm), eps=getattr(norm, "eps", 1e-6))
    if isinstance(reference.ls1, LayerScale):
        style["init_values"] = 1e-5
    return style


def sincos_1d(length: int, dim: int) -> Tensor:
    """Fixed 1-D sin-cos positions (length x dim): order is visible from step 0."""
    half = dim // 2
    freqs = 1.0 / (10000 ** (torch.arange(half, dtype=torch.float64) / max(half, 1)))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * freqs[None]
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0 : 2 * half : 2] = angles.sin()
    table[:, 1 : 2 * half : 2] = angles.cos()
    return table.float()


def resize_temporal_pos(pos: Tensor, num_frames: int) -> Tensor:
    """Linearly resample a 1 x (T0+1) x W embedding to T+1 positions; the CLS slot is kept.

    `align_corners`: the first and last frame keep their embeddings, as uniform sampling spreads
    any T frames over the same clip.
    """
    if pos.shape[1] == num_frames + 1:
        return pos
    cls, frames = pos[:, :1], pos[:, 1:]
    if frames.shape[1] == 1:
        resized = frames.expand(-1, num_frames, -1)
    else:
        resized = F.interpolate(
            frames.float().transpose(1, 2), size=num_frames, mode="linear", align_corners=True
        )
        resized = resized.transpose(1, 2).to(pos.dtype)
    return torch.cat([cls, resized], dim=1)


class TemporalTransformer(nn.Module):
    """ViViT-FE's temporal encoder: its own CLS over one token per frame; returns the CLS (B x W)."""

    def __init__(
        self,
        cfg: TemporalConfig,
        in_dim: int,
        num_frames: int,
        spatial_heads: int,
        reference_block: nn.Module | None = None,
    ) -> None:
        super().__init__()
        width = cfg.width or in_dim
        if cfg.heads is not None:
            heads = cfg.heads
        elif width == in_dim:
            heads = spatial_heads
        else:
            heads = max(1, width // 64)
        if width % heads:
            raise ValueError(f"temporal width {width} is not divisible by temporal.heads={heads}")
        self.width = width
        self.num_heads = heads
        self.num_frames = num_frames
        self.proj = nn.Linear(in_dim, width) if width != in_dim else nn.Identity()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_frames + 1, width))
        style = block_style(reference_block)
        self.blocks = nn.Sequential(
            *[Block(width, heads, mlp_ratio=cfg.mlp_ratio, **style) for _ in range(cfg.depth)]
        )
        self.norm = style["norm_layer"](width)
        self._init_weights(cfg.pos_init)

    def _init_weights(self, pos_init: str) -> None:
        nn.init.normal_(self.cls_token, std=0.02)
        if pos_init == "sincos":
            with torch.no_grad():
                self.pos_embed.copy_(sincos_1d(self.num_frames + 1, self.width)[None])
        elif pos_init == "normal":
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            raise ValueError(f"temporal.pos_init={pos_init!r}: expected sincos or normal")
        named_apply(init_weights_vit_timm, self.blocks)
        if isinstance(self.proj, nn.Linear):
            init_weights_vit_timm(self.proj)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.ndim != 3 or tokens.shape[1] != self.num_frames:
            raise ValueError(
                f"temporal transformer built for {self.num_frames} frames got tokens "
                f"{tuple(tokens.shape)} (expected B x {self.num_frames} x D)"
            )
        x = self.proj(tokens)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return x[:, 0]


class FrameMean(nn.Module):
    """The spatial-only baseline: the mean of the T frame tokens (order-blind, no parameters).

    Keeps the attributes the rest of the model reads off a temporal encoder (`width`,
    `num_frames`, `num_heads`, an empty `blocks`).
    """

    def __init__(self, in_dim: int, num_frames: int) -> None:
        super().__init__()
        self.width = in_dim
        self.num_frames = num_frames
        self.num_heads = 0
        self.blocks = nn.Sequential()

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.ndim != 3 or tokens.shape[1] != self.num_frames:
            raise ValueError(
                f"frame mean built for {self.num_frames} frames got tokens {tuple(tokens.shape)}"
            )
        return tokens.mean(dim=1)


def build_temporal(
    cfg: TemporalConfig,
    in_dim: int,
    num_frames: int,
    spatial_heads: int,
    reference_block: nn.Module | None = None,
) -> TemporalTransformer | FrameMean:
    """The temporal encoder `cfg.kind` names."""
    if cfg.kind == "mean":
        return FrameMean(in_dim, num_frames)
    return TemporalTransformer(cfg, in_dim, num_frames, spatial_heads, reference_block)
