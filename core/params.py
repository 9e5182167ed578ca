"""Parameter counting and AdamW parameter groups (weight decay by rule, per-part learning rates)."""

from __future__ import annotations

import re

from torch import nn

from core.model import NO_DECAY_SUFFIXES

SPATIAL_PREFIX = "spatial."
_BLOCK = re.compile(r"^spatial\.vit\.blocks\.(\d+)\.")
_EMBED = re.compile(
    r"^spatial\.vit\.(cls_token|reg_token|dist_token|pos_embed|patch_embed|norm_pre)"
)


def count_params(module: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return trainable, frozen


def _decays(name: str, param: nn.Parameter, no_decay: set[str]) -> bool:
    """Matrices decay; norms, biases, other 1-D params, embeddings and tokens do not."""
    if param.ndim <= 1 or name in no_decay:
        return False
    return name.rsplit(".", 1)[-1] not in NO_DECAY_SUFFIXES


def spatial_layer_id(name: str, depth: int) -> int:
    """BEiT-style depth of a spatial parameter: embeddings 0, block i -> i+1, final norm depth+1."""
    match = _BLOCK.match(name)
    if match:
        return int(match.group(1)) + 1
    if _EMBED.match(name):
        return 0
    return depth + 1


def _spatial_depth(module: nn.Module) -> int:
    spatial = getattr(module, "spatial", None)
    return int(getattr(spatial, "depth", 0))


def param_groups(
    module: nn.Module,
    weight_decay: float,
    lr: float,
    spatial_lr_mult: float = 1.0,
    layer_decay: float | None = None,
) -> list[dict]:
    """AdamW groups over the trainable parameters of `module` (ViViTFE or its temporal head).

    Spatial parameters (names `spatial.*`, full mode) learn at `lr * spatial_lr_mult`, times
    `layer_decay ** (depth + 1 - layer_id)` if set (block i: `layer_decay ** (depth - i)`).
    Each group has `params`, `weight_decay`, `lr`, `lr_scale` (lr / base lr, for schedulers)
    and `name`. Frozen parameters are in no group.
    """
    no_decay_fn = getattr(module, "no_weight_decay", None)
    no_decay = set(no_decay_fn()) if callable(no_decay_fn) else set()
    depth = _spatial_depth(module)
    groups: dict[str, dict] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        decay = _decays(name, param, no_decay)
        if name.startswith(SPATIAL_PREFIX):
            layer = spatial_layer_id(name, depth)
            scale = spatial_lr_mult
            if layer_decay is not None:
                scale *= layer_decay ** (depth + 1 - layer)
            part = f"spatial_layer{layer:02d}" if layer_decay is not None else "spatial"
        else:
            scale, part = 1.0, "head"
        key = f"{part}_{'decay' if decay else 'no_decay'}"
        group = groups.setdefault(
            key,
            {
                "params": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr": lr * scale,
                "lr_scale": scale,
                "name": key,
            },
        )
        group["params"].append(param)
    return list(groups.values())
