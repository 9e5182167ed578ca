"""The composition root of a training run: config -> data sources + trainer -> `core.fit`.

The only place in training where `data/` (shards, decoding) and `core/` (model, engine, loop)
meet; `launch/predict.py` is prediction's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from core import engine as ds_engine
from core.cache_spec import cache_spec
from core.checkpoint import check_resume_config, resume_target
from core.configtools import dump_yaml, to_dict
from core.evaluate import evaluate
from core.evaluation_run import check_class_set
from core.fit import fit
from core.model import build_model
from core.trainer import Trainer
from data.loader import (
    ensure_dataset,
    open_cached_train_batches,
    open_eval_batches,
    open_train_batches,
    read_manifest,
)
from data.manifest import checkpoint_labels, require_splits

if TYPE_CHECKING:
    from core.config import ExperimentConfig


def run_training(cfg: ExperimentConfig) -> dict[str, Any]:
    """A whole `vivit train` run: data, model, steps, eval, checkpoints, run directory, MLflow."""
    wall_start = time.perf_counter()
    rank, _ = ds_engine.init_distributed()
    run_dir = Path(cfg.out_dir)
    # before config.yaml is written: a refused resume leaves the run directory as it was
    check_resume_config(to_dict(cfg), resume_target(cfg.resume, run_dir))
    if rank == 0:
        ensure_dataset(cfg.data, cfg.seed)
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, run_dir / "config.yaml")
    ds_engine.barrier()
    manifest = read_manifest(cfg.data.root)
    require_splits(
        manifest,
        cfg.data.root,
        {"data.train_split": cfg.data.train_split, "data.val_split": cfg.data.val_split},
    )
    trainer = Trainer(cfg, len(manifest["classes"]))
    data_kw = _data_kwargs(cfg, trainer)
    if cfg.data.cache:
        train_source = open_cache_batches(cfg, trainer, manifest["classes"])
    else:
        train_source = open_train_batches(
            cfg.data, batch_size=cfg.train.micro_batch_size, seed=cfg.seed, **data_kw
        )

    def make_eval_source():
        return open_eval_batches(
            cfg.data,
            batch_size=cfg.data.eval_batch_size,
            max_videos=cfg.train.eval_max_videos,
            **data_kw,
        )

    try:
        return fit(
            cfg,
            trainer,
            train_source,
            make_eval_source,
            wall_start=wall_start,
            # class names (+ clip fps / duration cap) in every checkpoint, for `vivit predict`
            checkpoint_meta=checkpoint_labels(manifest, cfg.data.train_split),
        )
    finally:
        train_source.close()


def evaluate_checkpoint(cfg: ExperimentConfig) -> dict[str, Any]:
    """`vivit eval`: the model built with `temporal.init=checkpoint`, no optimiser."""
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


def open_cache_batches(cfg: ExperimentConfig, trainer: Trainer, classes: list[str]) -> Any:
    """Training batches of cached spatial tokens (`data.cache`), refused unless the cache's
    pinned fields (spatial sha256, model, frames, img_size, token layout) are this run's."""
    assert trainer.spatial_sha256 is not None
    return open_cached_train_batches(
        cfg.data,
        batch_size=cfg.train.micro_batch_size,
        rank=trainer.rank,
        world_size=trainer.world_size,
        seed=cfg.seed,
        device=trainer.device,
        expect=cache_spec(cfg, trainer.model.spatial, trainer.spatial_sha256),
        classes=classes,
    )


def _data_kwargs(cfg: ExperimentConfig, trainer: Trainer) -> dict[str, Any]:
    spatial = trainer.model.spatial
    return dict(
        img_size=cfg.spatial.img_size,
        mean=tuple(spatial.mean),
        std=tuple(spatial.std),
        rank=trainer.rank,
        world_size=trainer.world_size,
        device=trainer.device,
        dtype=trainer.input_dtype,
    )
