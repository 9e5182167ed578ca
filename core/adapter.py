"""Compact adapters between the frozen per-frame tokens and the temporal transformer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


class Adapter(nn.Module):
    """Maps one frame's (CLS B x T x D, patches B x T x N x D) to one B x T x D token."""

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class NoAdapter(Adapter):
    """Naive freezing: the frozen CLS goes straight to the temporal transformer."""

    def forward(self, cls: Tensor, patches: Tensor) -> Tensor:
        return cls


class MLPAdapter(Adapter):
    """Residual bottleneck on the CLS; the zero up-projection makes it start as the identity."""

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.trunc_normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, cls: Tensor, patches: Tensor) -> Tensor:
        return cls + self.up(self.act(self.down(self.norm(cls))))


class AttnPoolAdapter(Adapter):
    """Attention pooling over the frame's patch tokens, so the frame token can focus on regions.

    One query per frame: a learned query plus the frame's normalised CLS (so where it looks can
    depend on what the frame shows). Keys/values are the normalised patch tokens. The pooled
    result is added to the CLS through a zero-initialised output projection: identity at start.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"adapter.heads={heads} must divide the spatial width {dim}")
        self.heads = heads
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.query, std=0.02)
        for linear in (self.q, self.kv):
            nn.init.trunc_normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, cls: Tensor, patches: Tensor) -> Tensor:
        b, t, n, d = patches.shape
        h = self.heads
        query = self.q(self.query + self.norm_q(cls.reshape(b * t, 1, d)))
        key, value = self.kv(self.norm_kv(patches.reshape(b * t, n, d))).chunk(2, dim=-1)

        def split(x: Tensor) -> Tensor:
            return x.reshape(b * t, -1, h, d // h).transpose(1, 2)

        pooled = F.scaled_dot_product_attention(split(query), split(key), split(value))
        pooled = pooled.transpose(1, 2).reshape(b, t, d)
        return cls + self.proj(pooled)


def build_adapter(cfg: AdapterConfig, dim: int) -> Adapter:
    """The adapter named by `cfg.kind` for tokens of width `dim`."""
    if cfg.kind == "none":
        return NoAdapter()
    if cfg.kind == "mlp":
        return MLPAdapter(dim, cfg.bottleneck)
    if cfg.kind == "attn":
        return AttnPoolAdapter(dim, cfg.heads)
    raise ValueError(f"adapter.kind={cfg.kind!r}: expected one of none, mlp, attn")
