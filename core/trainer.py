"""Training loop: frozen spatial forward outside the engine, DeepSpeed step, eval, checkpoints."""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from common.seeding import seed_torch
from core import engine as ds_engine
from core.checkpoint import (
    check_resume_config,
    checkpoint_name,
    latest_checkpoint,
    read_data_position,
    remove_stale_tmp,
    resume_checkpoint,
    resume_target,
    save_checkpoint,
)
from core.configtools import dump_yaml, flatten, to_dict
from core.evaluate import evaluate
from core.freezing import freeze_spatial, trainable_module
from core.memory import PeakMemory
from core.model import build_model
from core.optim import warmup_cosine
from core.params import count_params, param_groups
from core.rundir import MetricsLog, write_json_atomic
from core.spatial import file_sha256
from core.tracking import Tracker

if TYPE_CHECKING:
    from core.batches import TrainBatches
    from core.config import ExperimentConfig


@dataclass
class TrainConfig:
    """Step budget, batch sizes and logging cadence."""

    steps: int = 1000
    """Optimiser steps (>= 1; `vivit eval` scores a checkpoint without training)."""
    micro_batch_size: int = 8
    """Clips per rank per forward (DeepSpeed `train_micro_batch_size_per_gpu`)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimiser step."""
    log_every: int = 10
    """Steps between loss/throughput records (metrics.jsonl and MLflow)."""
    eval_every: int = 0
    """0: evaluate only at the end."""
    eval_max_videos: int | None = None
    """Cap on evaluated videos (None: the whole validation split)."""
    ckpt_every: int = 0
    """0: checkpoint only at the end."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept in `out_dir/checkpoints/`; older ones are deleted."""
    progress: bool = True
    """Progress bar on rank 0."""
    sync_steps: bool = False
    """Benchmark mode: wait for the device after every step so each step's time is its own.
    Off, the host queues steps ahead and reads the loss only on logging steps."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(
                f"train.steps must be >= 1, got {self.steps} (to score a checkpoint without "
                "training: vivit eval CONFIG.yaml checkpoint=DIR)"
            )
        if self.micro_batch_size < 1 or self.grad_accum < 1:
            raise ValueError("train.micro_batch_size and train.grad_accum must be >= 1")
        if self.keep_checkpoints < 1:
            raise ValueError(f"train.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")


log = logging.getLogger("vivit")


class Trainer:
    """Model + freezing + DeepSpeed engine, and one optimiser micro-step.

    In frozen mode the spatial transformer stays outside the engine: it runs under no_grad in
    the engine's half precision, and only adapter + temporal + head reach the optimiser.
    """

    def __init__(self, cfg: ExperimentConfig, num_classes: int) -> None:
        self.cfg = cfg
        self.rank, self.world_size = ds_engine.init_distributed()
        self.device = ds_engine.device()
        on_gpu = self.device.type == "cuda"
        self.ds_config = ds_engine.build_ds_config(
            cfg.engine, cfg.optim, cfg.train.micro_batch_size, cfg.train.grad_accum, on_gpu
        )
        self.dtype = ds_engine.compute_dtype(self.ds_config)
        # identical initial weights on every rank (and dropout streams from the same seed)
        seed_torch(cfg.seed, "model-init")
        self.model = build_model(cfg, num_classes)
        self.frozen = cfg.mode == "frozen"
        if self.frozen:
            freeze_spatial(self.model, self.dtype)
            self.model.spatial.to(self.device)
        trainable = trainable_module(self.model, cfg.mode)
        trainable_n, frozen_n = count_params(self.model)
        self.param_counts = {"trainable_params": trainable_n, "frozen_params": frozen_n}
        groups = param_groups(
            trainable,
            weight_decay=cfg.optim.weight_decay,
            lr=cfg.optim.lr,
            spatial_lr_mult=cfg.optim.spatial_lr_mult,
            layer_decay=cfg.optim.layer_decay,
        )
        total = cfg.train.steps
        o = cfg.optim
        self.engine = ds_engine.build_engine(
            trainable,
            groups,
            self.ds_config,
            lambda step: warmup_cosine(step, o.warmup_steps, total, o.min_lr_ratio),
        )
        self.input_dtype = self.dtype
        self.step = 0

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Logits for `B×T×C×H×W` frames (grad flows only into the engine's module)."""
        frames = frames.to(self.device, self.input_dtype, non_blocking=True)
        if self.frozen:
            with torch.no_grad():
                tokens = self.model.spatial(frames)
            return self.engine(tokens)
        return self.engine(frames)

    def train_step(self, frames: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One micro-batch; DeepSpeed steps the optimiser at each accumulation boundary.

        Returns the loss as a 0-dim tensor on the device: reading it (`float()`) waits for the
        device, so the training loop does that only on logging steps.
        """
        self.engine.train()
        logits = self.forward(frames)
        loss = torch.nn.functional.cross_entropy(
            logits.float(), labels.to(logits.device, non_blocking=True)
        )
        self.engine.backward(loss)
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        if boundary:
            self.step += 1
        return loss.detach()

    def eval_forward(self, frames: torch.Tensor) -> torch.Tensor:
        self.engine.eval()
        with torch.no_grad():
            return self.forward(frames)

    @property
    def lr(self) -> float:
        return float(max(self.engine.get_lr()))


def run_training(cfg: ExperimentConfig) -> dict[str, Any]:
    """A whole `vivit train` run: data, model, steps, eval, checkpoints, run directory, MLflow."""
    from data.loader import ensure_dataset, open_train_batches, read_manifest
    from data.manifest import require_splits

    wall_start = time.perf_counter()
    rank, world = ds_engine.init_distributed()
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
    num_classes = len(manifest["classes"])
    trainer = Trainer(cfg, num_classes)
    data_kw = _data_kwargs(cfg, trainer)
    start_step, data_position = _resume(cfg, trainer, run_dir, rank)
    tracker = Tracker(cfg.tracking, run_dir, enabled=rank == 0)
    if start_step == 0:
        tracker.log_params(flatten(to_dict(cfg)) | trainer.param_counts)
    metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=rank == 0)
    metrics.truncate_after(start_step)  # the steps after it run again: no duplicate rows
    if rank == 0:
        log.info(
            "mode=%s spatial=%s frames=%d trainable=%s frozen=%s precision=%s device=%s world=%d",
            cfg.mode,
            cfg.spatial.model,
            cfg.data.frames,
            f"{trainer.param_counts['trainable_params']:,}",
            f"{trainer.param_counts['frozen_params']:,}",
            ds_engine.dtype_name(trainer.dtype),
            trainer.device,
            world,
        )
    train_batches = open_train_batches(
        cfg.data, batch_size=cfg.train.micro_batch_size, seed=cfg.seed, **data_kw
    )
    evaluator = _Evaluator(cfg, trainer, data_kw)
    status = "FAILED"
    try:
        step_times, result = _train_loop(
            cfg, trainer, train_batches, start_step, data_position, metrics, tracker, evaluator
        )
        if trainer.step > start_step or not _has_checkpoint(run_dir, trainer.step):
            # before the eval: a failing eval loses nothing
            _save(cfg, trainer, run_dir, rank, train_batches.position())
        eval_result = evaluator()
        eval_record = {"step": trainer.step, "event": "eval", **eval_result}
        metrics.write(eval_record | {k: result[k] for k in ("train_time_s", "train_cpu_s")})
        tracker.log_metrics(eval_result, step=trainer.step)
        clips_per_step = cfg.train.micro_batch_size * cfg.train.grad_accum * world
        median = statistics.median(step_times) if step_times else float("nan")
        summary = {
            "mode": cfg.mode,
            "spatial_model": cfg.spatial.model,
            "adapter": cfg.adapter.kind,
            "temporal_init": cfg.temporal.init,
            "frames": cfg.data.frames,
            "img_size": cfg.spatial.img_size,
            "top1": eval_result["top1"],
            "top5": eval_result["top5"],
            "val_loss": eval_result["val_loss"],
            "val_videos": eval_result["val_videos"],
            "steps": trainer.step,
            "step_time_median_s": median,
            "clips_per_s": clips_per_step / median if step_times else float("nan"),
            "train_time_s": result["train_time_s"],
            "train_cpu_s": result["train_cpu_s"],
            "data_wait_s": result["data_wait_s"],
            "peak_mem_bytes": result["peak_mem_bytes"],
            "peak_mem_above_start_bytes": result["peak_mem_above_start_bytes"],
            "peak_mem_kind": result["peak_mem_kind"],
            **trainer.param_counts,
            "world_size": world,
            "micro_batch_size": cfg.train.micro_batch_size,
            "grad_accum": cfg.train.grad_accum,
            "precision": ds_engine.dtype_name(trainer.dtype),
            "zero_stage": trainer.engine.zero_optimization_stage(),
            "device": str(trainer.device),
            **{k: v for k, v in train_batches.stats().items() if isinstance(v, (int, float))},
            "wall_s": time.perf_counter() - wall_start,
        }
        if rank == 0:
            write_json_atomic(run_dir / "summary.json", summary)
            tracker.log_metrics(
                {k: v for k, v in summary.items() if isinstance(v, (int, float))}, trainer.step
            )
            tracker.log_artifact(run_dir / "summary.json")
            tracker.log_artifact(run_dir / "config.yaml")
        status = "FINISHED"
        return summary
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM via `vivit train`
        status = "KILLED"
        raise
    finally:
        train_batches.close()
        evaluator.close()
        tracker.close(status)


def _train_loop(
    cfg: ExperimentConfig,
    trainer: Trainer,
    source: TrainBatches,
    start_step: int,
    data_position: dict[str, Any] | None,
    metrics: MetricsLog,
    tracker: Tracker,
    evaluator: _Evaluator,
) -> tuple[list[float], dict[str, Any]]:
    """The step loop. The host syncs with the device only on logging steps (reading the loss),
    unless `train.sync_steps`; step times are then the mean over each logging window, and the
    time spent in evaluation and checkpoints is left out of them."""
    tc = cfg.train
    run_dir = Path(cfg.out_dir)
    clips_per_step = tc.micro_batch_size * tc.grad_accum * trainer.world_size
    stream = iter(source.batches(start_step, data_position))
    memory = PeakMemory(trainer.device)
    memory.start()
    step_times: list[float] = []
    train_time = data_wait = train_cpu = 0.0
    window_loss = torch.zeros((), device=trainer.device)
    window_steps, window_wait = 0, 0.0
    window_t0, window_c0 = time.perf_counter(), time.process_time()
    bar = tqdm(
        total=tc.steps,
        initial=start_step,
        disable=trainer.rank != 0 or not tc.progress,
        desc=f"train[{cfg.mode}]",
        dynamic_ncols=True,
    )
    try:
        while trainer.step < tc.steps:
            t0 = time.perf_counter()
            for _ in range(tc.grad_accum):
                w0 = time.perf_counter()
                frames, labels = next(stream)
                window_wait += time.perf_counter() - w0
                window_loss += trainer.train_step(frames, labels) / tc.grad_accum
            window_steps += 1
            if tc.sync_steps:
                _sync(trainer.device)
                step_times.append(time.perf_counter() - t0)
            bar.update(1)
            step = trainer.step
            if step % tc.log_every == 0 or step == tc.steps:
                loss = float(window_loss) / window_steps  # the host waits for the device here
                window_s = time.perf_counter() - window_t0
                dt = window_s / window_steps
                if not tc.sync_steps:
                    step_times.append(dt)
                train_time += window_s
                train_cpu += time.process_time() - window_c0  # this process, all its threads
                data_wait += window_wait
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss} at step {step}: stopping")
                record = {
                    "step": step,
                    "loss": loss,
                    "lr": trainer.lr,
                    "step_time_s": dt,
                    "clips_per_s": clips_per_step / dt,
                    "data_wait_s": window_wait / window_steps,
                    **{k: v for k, v in source.stats().items() if isinstance(v, (int, float))},
                }
                metrics.write(record)
                tracker.log_metrics(record, step=step)
                bar.set_postfix(
                    loss=f"{loss:.3f}", lr=f"{trainer.lr:.2e}", clips_s=f"{clips_per_step / dt:.1f}"
                )
                window_loss.zero_()
                window_steps, window_wait = 0, 0.0
                window_t0, window_c0 = time.perf_counter(), time.process_time()
            paused, paused_cpu = time.perf_counter(), time.process_time()
            if tc.eval_every and step % tc.eval_every == 0 and step < tc.steps:
                result = evaluator()
                # training time so far (evals excluded), wall clock and process CPU (all threads)
                result |= {
                    "train_time_s": train_time + time.perf_counter() - window_t0,
                    "train_cpu_s": train_cpu + time.process_time() - window_c0,
                }
                metrics.write({"step": step, "event": "eval", **result})
                tracker.log_metrics(result, step=step)
            if tc.ckpt_every and step % tc.ckpt_every == 0 and step < tc.steps:
                _save(cfg, trainer, run_dir, trainer.rank, source.position())
            window_t0 += time.perf_counter() - paused  # eval and checkpoints are not step time
            window_c0 += time.process_time() - paused_cpu
    finally:
        bar.close()
        memory.stop()
    return step_times, {
        "train_time_s": train_time,
        "train_cpu_s": train_cpu,
        "data_wait_s": data_wait,
        "peak_mem_bytes": memory.peak_bytes,
        "peak_mem_above_start_bytes": memory.peak_bytes - memory.start_bytes,
        "peak_mem_kind": memory.kind,
    }


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


class _Evaluator:
    """The run's evaluation: one eval source (DALI pipeline, DataLoader workers) built on first
    use and iterated again at every evaluation."""

    def __init__(self, cfg: ExperimentConfig, trainer: Trainer, data_kw: dict[str, Any]) -> None:
        self.cfg, self.trainer, self.data_kw = cfg, trainer, data_kw
        self._source: Any = None

    def __call__(self) -> dict[str, float]:
        from data.loader import open_eval_batches

        if self._source is None:
            self._source = open_eval_batches(
                self.cfg.data,
                batch_size=self.cfg.data.eval_batch_size,
                max_videos=self.cfg.train.eval_max_videos,
                **self.data_kw,
            )
        return evaluate(self.trainer.eval_forward, self._source, self.trainer.device)

    def close(self) -> None:
        if self._source is not None:
            self._source.close()


def _resume(
    cfg: ExperimentConfig, trainer: Trainer, run_dir: Path, rank: int
) -> tuple[int, dict[str, Any] | None]:
    """(step to start at, this rank's data position to continue the stream at, if saved)."""
    if rank == 0:
        remove_stale_tmp(run_dir)  # saves that were killed leave only a .tmp folder
    if cfg.resume is None:
        return 0, None
    if cfg.resume == "auto":
        path = latest_checkpoint(run_dir)
        if path is None:
            return 0, None
    else:
        path = Path(cfg.resume)
    step = resume_checkpoint(trainer.engine, path, rank)
    trainer.step = step
    if rank == 0:
        log.info("resumed from %s at step %d", path, step)
    return step, read_data_position(path, rank)


def _has_checkpoint(run_dir: Path, step: int) -> bool:
    latest = latest_checkpoint(run_dir)
    return latest is not None and latest.name == checkpoint_name(step)


def _save(
    cfg: ExperimentConfig,
    trainer: Trainer,
    run_dir: Path,
    rank: int,
    data_position: dict[str, Any] | None = None,
) -> Path:
    spatial_weights = None
    if cfg.mode == "frozen" and cfg.spatial.weights:
        spatial_weights = {
            "path": str(Path(cfg.spatial.weights).resolve()),
            "sha256": file_sha256(cfg.spatial.weights),
        }
    meta = {"mode": cfg.mode, "spatial_weights": spatial_weights, "config": to_dict(cfg)}
    spatial_state = None
    if cfg.mode == "frozen" and not cfg.spatial.weights:
        # A backbone from a random init exists in no file: the checkpoint carries it, so that
        # `vivit eval` (or a later stage) rebuilds exactly the model that was trained.
        vit = trainer.model.spatial.vit.state_dict()
        spatial_state = {f"spatial.vit.{k}": v for k, v in vit.items()}
    return save_checkpoint(
        trainer.engine,
        run_dir,
        trainer.step,
        meta,
        rank,
        cfg.train.keep_checkpoints,
        extra_weights=spatial_state,
        data_position=data_position,
    )


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
