"""Evaluate a checkpoint without an optimiser: the model built with `temporal.init=checkpoint`.

The shard set must have the checkpoint's class set: a classifier trained on other classes
scores nothing meaningful, so a mismatch is an error before any model is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from core import engine as ds_engine
from core.ckpt_format import head_classes
from core.evaluate import evaluate
from core.model import build_model

if TYPE_CHECKING:
    from core.config import ExperimentConfig


def evaluate_checkpoint(cfg: ExperimentConfig) -> dict[str, Any]:
    from data.loader import open_eval_batches, read_manifest

    rank, world = ds_engine.init_distributed()
    dev = ds_engine.device()
    dtype = (
        torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    )
    manifest = read_manifest(cfg.data.root)
    check_class_set(cfg.temporal.checkpoint, manifest["classes"], cfg.data.root)
    model = build_model(cfg, len(manifest["classes"])).to(dev, dtype).eval()
    batches = open_eval_batches(
        cfg.data,
        batch_size=cfg.data.eval_batch_size,
        img_size=cfg.spatial.img_size,
        mean=tuple(model.spatial.mean),
        std=tuple(model.spatial.std),
        rank=rank,
        world_size=world,
        device=dev,
        dtype=dtype,
        max_videos=cfg.train.eval_max_videos,
    )
    result = evaluate(lambda x: model(x.to(dev, dtype)), batches, dev)
    return {"checkpoint": cfg.temporal.checkpoint, **result, **batches.stats()}


class ClassSetError(ValueError):
    """A checkpoint evaluated on shards with another class set; names both."""


def _names(classes: list[str], limit: int = 6) -> str:
    shown = ", ".join(classes[:limit])
    return f" ({shown}{', ...' if len(classes) > limit else ''})"


def check_class_set(checkpoint: Any, classes: list[str], root: Any) -> None:
    """Raise `ClassSetError` unless `classes` (the shard manifest's) are the checkpoint's: the
    same count as its classifier's rows and, where its meta records class names, the same names
    in the same order."""
    ckpt, rows, names = head_classes(checkpoint)
    classes = [str(c) for c in classes]
    if rows == len(classes) and (names is None or names == classes):
        return
    trained = f"{rows} classes" + (_names(names) if names else "")
    if names and rows == len(classes):
        trained = f"{rows} other classes" + _names(names)
    raise ClassSetError(
        f"checkpoint {ckpt} was trained on {trained}, but {root}/manifest.json has "
        f"{len(classes)} classes{_names(classes)}: evaluate it on shards with its class set "
        "(`vivit shards build --out` into the training set's directory keeps its class index)"
    )
