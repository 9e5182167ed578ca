"""What a token cache must agree on with the run that reads it (`vivit cache build`, `data.cache`).

The spatial transformer's output for a view depends on its weights, its architecture and
input size, which block is read and how the patch tokens are laid out; which views exist
depends on the frame sampling and the augmentation. The builder writes these fields into the
cache's manifest and the trainer compares them with its own (`data.cache_format.check_spec`),
so a cache never silently feeds stale features. The keys are the config keys a user would
change, so a refusal names the one that differs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.config import ExperimentConfig
    from core.spatial import SpatialTransformer


def cache_spec(cfg: ExperimentConfig, spatial: SpatialTransformer, sha256: str) -> dict[str, Any]:
    """The pinned fields of a cache built (or read) with `cfg` and this spatial module.

    `sha256` is `core.spatial.state_sha256` of the spatial weights as loaded, before freezing.
    """
    data = cfg.data
    patch = spatial.vit.patch_embed.patch_size
    spec: dict[str, Any] = {  # checked in this order: the weights last, as the least telling
        "spatial.model": cfg.spatial.model,
        "spatial.model_kwargs": cfg.spatial.model_kwargs,
        "spatial.img_size": cfg.spatial.img_size,
        "spatial.patch_size": int(patch[0] if isinstance(patch, (tuple, list)) else patch),
        "spatial.layer": cfg.spatial.layer,
        "spatial.patch_tokens": cfg.spatial.patch_tokens,
        "spatial.pool_grid": cfg.spatial.pool_grid
        if cfg.spatial.patch_tokens == "pooled"
        else None,
        "tokens": {
            "dim": int(spatial.embed_dim),
            "patches": spatial.num_patch_tokens,
        },
        "data.frames": data.frames,
        "data.sampling": data.sampling,
        "data.stride": data.stride if data.sampling == "stride" else None,
        "data.min_scale": data.min_scale,
        "data.flip": data.flip,
        "spatial.sha256": sha256,
    }
    return json.loads(json.dumps(spec))  # plain JSON values, as read back from the manifest
