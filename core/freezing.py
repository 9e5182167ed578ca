"""Freezing the spatial transformer: no gradients, no optimiser state, eval mode, half precision."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from core.model import ViViTFE
from core.params import count_params

__all__ = ["count_params", "freeze_spatial", "trainable_module"]


def freeze_spatial(model: ViViTFE, dtype: torch.dtype = torch.float32) -> None:
    """Freeze `model.spatial` for good: it then runs forward-only, under `no_grad`, in `dtype`.

    The caller picks `dtype` (bf16/fp16 on GPU, fp32 on CPU). Eval mode sticks through a later
    `model.train()`; the head casts the frozen tokens to its own dtype.
    """
    spatial = model.spatial
    for param in spatial.parameters():
        param.requires_grad_(False)
        param.grad = None
    spatial.to(dtype=dtype)
    spatial.frozen = True
    spatial.eval()


def trainable_module(model: ViViTFE, mode: Literal["full", "frozen"]) -> nn.Module:
    """What the optimiser/engine wraps: the temporal head (frozen mode) or the whole model."""
    if mode == "frozen":
        if not model.spatial.frozen:
            raise ValueError("mode=frozen: call freeze_spatial(model, dtype) first")
        return model.temporal_head
    if mode == "full":
        if model.spatial.frozen:
            raise ValueError("mode=full but the spatial transformer is frozen")
        return model
    raise ValueError(f"mode={mode!r}: expected full or frozen")
