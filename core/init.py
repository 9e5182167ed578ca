"""Temporal-transformer initialisation: random, copied image-ViT blocks, or an earlier run.

An earlier run's checkpoint is read through `core.ckpt_format`, which owns its layout
(`find_checkpoint`, `read_checkpoint_weights`; re-exported here for existing callers).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from core.ckpt_format import WEIGHTS_FILE, find_checkpoint, read_checkpoint_weights
from core.spatial import WeightsSource, file_sha256, load_spatial_weights, load_vit_state
from core.temporal import TemporalConfig, resize_temporal_pos

if TYPE_CHECKING:
    from core.model import ViViTFE

log = logging.getLogger(__name__)

__all__ = [
    "copy_image_blocks",
    "find_checkpoint",
    "init_temporal",
    "load_checkpoint_init",
    "read_checkpoint_weights",
]


def copy_image_blocks(model: ViViTFE) -> None:
    """Temporal blocks (and final norm) := the spatial ViT's last blocks (and its final norm)."""
    temporal = model.temporal_head.temporal
    vit = model.spatial.vit
    depth, available = len(temporal.blocks), len(vit.blocks)
    if temporal.width != model.spatial.embed_dim:
        raise ValueError(
            f"temporal.init=image needs the spatial width ({model.spatial.embed_dim}), "
            f"temporal width is {temporal.width}: leave temporal.width unset"
        )
    if depth > available:
        raise ValueError(
            f"temporal.init=image: temporal.depth={depth} but the spatial ViT has only {available} blocks"
        )
    if temporal.num_heads != model.spatial.num_heads:
        raise ValueError(
            f"temporal.init=image: temporal.heads={temporal.num_heads} but the spatial blocks "
            f"use {model.spatial.num_heads} heads"
        )
    pairs = [(temporal.blocks[i], vit.blocks[available - depth + i]) for i in range(depth)]
    pairs.append((temporal.norm, vit.norm))
    for target, source in pairs:
        mine, theirs = target.state_dict(), source.state_dict()
        shapes = {k: tuple(v.shape) for k, v in mine.items()}
        if shapes != {k: tuple(v.shape) for k, v in theirs.items()}:
            diff = sorted(set(mine) ^ set(theirs)) or [
                k for k in mine if mine[k].shape != theirs[k].shape
            ]
            raise ValueError(
                "temporal.init=image: the temporal blocks do not match the spatial blocks "
                f"(check temporal.heads / temporal.mlp_ratio); differing keys: {diff}"
            )
        target.load_state_dict(theirs)


def _load_temporal_head(model: ViViTFE, state: dict[str, Tensor], source: str) -> None:
    """Load `temporal_head.*`: temporal part must match; adapter and classifier may be fresh."""
    head = model.temporal_head
    own = head.state_dict()
    saved = {
        k.removeprefix("temporal_head."): v
        for k, v in state.items()
        if k.startswith("temporal_head.")
    }
    stray = [k for k in state if not k.startswith(("temporal_head.", "spatial."))]
    if stray:
        raise ValueError(f"{source}: keys outside temporal_head.*/spatial.*: {stray}")
    pos_key = "temporal.pos_embed"
    if pos_key in saved and pos_key in own and saved[pos_key].shape != own[pos_key].shape:
        saved[pos_key] = resize_temporal_pos(saved[pos_key], head.temporal.num_frames)

    temporal_keys = [k for k in own if k.startswith("temporal.")]
    adapter_keys = [k for k in own if k.startswith("adapter.")]
    saved_adapter = [k for k in saved if k.startswith("adapter.")]
    missing = [k for k in temporal_keys if k not in saved]
    optional = ("adapter.", "head_norm.")  # may be absent on either side
    unexpected = [k for k in saved if k not in own and not k.startswith(optional)]
    if saved_adapter and sorted(saved_adapter) != sorted(adapter_keys):
        missing += [k for k in adapter_keys if k not in saved]
        unexpected += [k for k in saved_adapter if k not in own]
    wrong = [
        f"{k} {tuple(saved[k].shape)}!={tuple(own[k].shape)}"
        for k in temporal_keys + (adapter_keys if saved_adapter else [])
        if k in saved and saved[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{source} does not fit this temporal head: "
            f"missing {['temporal_head.' + k for k in missing]}, "
            f"unexpected {['temporal_head.' + k for k in unexpected]}, shape mismatches {wrong}"
        )
    load = {k: saved[k] for k in temporal_keys}
    if saved_adapter:
        load.update({k: saved[k] for k in adapter_keys})
    else:
        # Stage 2 inserts the adapter: it keeps its identity initialisation.
        log.info("%s has no adapter weights: adapter starts as identity", source)
    classifier = [k for k in own if k.startswith("head.")]
    if all(k in saved and saved[k].shape == own[k].shape for k in classifier):
        load.update({k: saved[k] for k in classifier})
        # the running statistics of the feature normalisation in front of the classifier
        norm = [k for k in own if k.startswith("head_norm.")]
        if norm and all(k in saved and saved[k].shape == own[k].shape for k in norm):
            load.update({k: saved[k] for k in norm})
    else:
        # Another class set (e.g. a temporal transformer trained on a larger video set).
        classes = own["head.weight"].shape[0]
        log.warning("%s: classifier does not fit %d classes; head stays zero", source, classes)
    head.load_state_dict(load, strict=False)


def _load_spatial(
    model: ViViTFE, state: dict[str, Tensor], meta: dict[str, Any], ckpt: Path
) -> None:
    """The checkpoint's spatial weights: its own `spatial.vit.*`, else the file its meta pins.

    Either way `model.spatial.weights_source` names the file they came from, so that a frozen
    run started from this checkpoint pins it in turn (stage 2 -> `vivit eval`/`predict`).
    """
    source = f"checkpoint {ckpt}"
    spatial_state = {
        k.removeprefix("spatial.vit."): v for k, v in state.items() if k.startswith("spatial.")
    }
    if spatial_state:
        stray = [k for k in state if k.startswith("spatial.") and not k.startswith("spatial.vit.")]
        if stray:
            raise ValueError(f"{source}: unexpected spatial keys {stray}")
        load_vit_state(model.spatial.vit, spatial_state, f"spatial part of {source}")
        model.spatial.weights_source = WeightsSource(ckpt / WEIGHTS_FILE, "spatial.vit.")
        return
    weights = meta.get("spatial_weights")
    if not weights:
        log.info("%s holds no spatial weights: keeping spatial.weights", source)
        return
    path = Path(weights["path"])
    if not path.is_file():
        raise FileNotFoundError(f"{source} was trained on spatial weights {path}, which is missing")
    digest = file_sha256(path)
    if digest != weights.get("sha256"):
        raise ValueError(
            f"{source} was trained on spatial weights {path} with sha256 {weights.get('sha256')}, "
            f"but that file now has sha256 {digest}"
        )
    prefix = str(weights.get("prefix", ""))
    load_spatial_weights(model.spatial.vit, path, prefix)
    model.spatial.weights_source = WeightsSource(path, prefix)


def load_checkpoint_init(model: ViViTFE, path: str | Path, load_spatial: bool = True) -> Path:
    """Initialise from an earlier run (stage 2 of the recipe); returns the checkpoint used."""
    ckpt = find_checkpoint(path)
    state, meta = read_checkpoint_weights(ckpt)
    source = f"checkpoint {ckpt}"
    _load_temporal_head(model, state, source)
    if load_spatial:
        _load_spatial(model, state, meta, ckpt)
    return ckpt


def init_temporal(model: ViViTFE, cfg: TemporalConfig) -> None:
    """Apply `cfg.init` to a freshly built model (before freezing)."""
    if cfg.init == "random":
        return
    if cfg.init == "image":
        copy_image_blocks(model)
    elif cfg.init == "checkpoint":
        if not cfg.checkpoint:
            raise ValueError("temporal.init=checkpoint needs temporal.checkpoint=PATH")
        load_checkpoint_init(model, cfg.checkpoint, cfg.load_spatial)
    else:
        raise ValueError(f"temporal.init={cfg.init!r}: expected random, image or checkpoint")
