"""Evaluate a checkpoint without an optimiser: the model built with `temporal.init=checkpoint`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from core import engine as ds_engine
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
