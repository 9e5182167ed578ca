"""A run after its parts are built: resume, steps, evaluation, checkpoints, metrics, summary.

The data sources arrive through the protocols of `core.batches` (built by the composition
root, `launch/run.py`), so nothing here imports `data/`.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from core import engine as ds_engine
from core.batches import EvalBatches, TrainBatches
from core.checkpoint import (
    checkpoint_name,
    latest_checkpoint,
    read_data_position,
    remove_stale_tmp,
    resume_checkpoint,
    save_checkpoint,
)
from core.configtools import flatten, to_dict
from core.evaluate import evaluate
from core.lookahead import Lookahead
from core.memory import PeakMemory
from core.rundir import MetricsLog, write_json_atomic
from core.tracking import Tracker
from core.trainer import Trainer

if TYPE_CHECKING:
    from core.config import ExperimentConfig

log = logging.getLogger("vivit")


def fit(
    cfg: ExperimentConfig,
    trainer: Trainer,
    train_source: TrainBatches,
    make_eval_source: Callable[[], EvalBatches],
    wall_start: float | None = None,
    checkpoint_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Resume, the step loop, periodic and final evaluation, checkpoints, metrics and MLflow,
    and `summary.json`: everything of a run after its parts are built (`launch/run.py`).

    `checkpoint_meta`: more entries for every checkpoint's `meta.json`, from the composition
    root (the class names and clip geometry of the training shards, for `vivit predict`)."""
    checkpoint_meta = dict(checkpoint_meta or {})
    wall_start = time.perf_counter() if wall_start is None else wall_start
    rank, world = trainer.rank, trainer.world_size
    run_dir = Path(cfg.out_dir)
    start_step, data_position = _resume(cfg, trainer, run_dir, rank)
    memory = PeakMemory(trainer.device)
    memory.start()
    # the source starts preparing its first batches now, while MLflow starts: the first step
    # then does not wait for the pipeline to fill (the data wait once counted ~0.5 s of it)
    stream = Lookahead(train_source, iter(train_source.batches(start_step, data_position)))
    tracker = Tracker(cfg.tracking, run_dir, enabled=rank == 0)
    if start_step == 0:
        tracker.log_params(flatten(to_dict(cfg)) | trainer.param_counts)
    if not tracker.settle(cfg.tracking.timeout_s):  # its start is setup, not training time
        log.info(
            "MLflow is still starting after %d s: training starts anyway", cfg.tracking.timeout_s
        )
    metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=rank == 0)
    metrics.truncate_after(start_step)  # the steps after it run again: no duplicate rows
    if rank == 0:
        log.info(
            "mode=%s spatial=%s frames=%d trainable=%s frozen=%s precision=%s zero=%d device=%s "
            "world=%d",
            cfg.mode,
            cfg.spatial.model,
            cfg.data.frames,
            f"{trainer.param_counts['trainable_params']:,}",
            f"{trainer.param_counts['frozen_params']:,}",
            ds_engine.dtype_name(trainer.dtype),
            trainer.engine.zero_optimization_stage(),
            trainer.device,
            world,
        )
    evaluator = _Evaluator(trainer, make_eval_source)
    status = "FAILED"
    try:
        step_times, result = _train_loop(
            cfg,
            trainer,
            train_source,
            stream,
            memory,
            start_step,
            metrics,
            tracker,
            evaluator,
            checkpoint_meta,
        )
        if trainer.step > start_step or not _has_checkpoint(run_dir, trainer.step):
            # before the eval: a failing eval loses nothing
            _save(cfg, trainer, run_dir, rank, checkpoint_meta, result["data_position"])
        eval_result = evaluator()
        eval_record = {"step": trainer.step, "event": "eval", **eval_result}
        metrics.write(
            eval_record | {k: result[k] for k in ("train_time_s", "train_cpu_s", "precise_bn_s")}
        )
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
            **{k: v for k, v in train_source.stats().items() if isinstance(v, (int, float))},
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
        memory.stop()  # when the loop never ran
        evaluator.close()
        tracker.close(status)


def _train_loop(
    cfg: ExperimentConfig,
    trainer: Trainer,
    source: TrainBatches,
    stream: Lookahead,
    memory: PeakMemory,
    start_step: int,
    metrics: MetricsLog,
    tracker: Tracker,
    evaluator: _Evaluator,
    checkpoint_meta: dict[str, Any],
) -> tuple[list[float], dict[str, Any]]:
    """The step loop. The host syncs with the device only on logging steps (reading the loss),
    unless `train.sync_steps`; step times are then the mean over each logging window, and the
    time spent in evaluation and checkpoints is left out of them."""
    tc = cfg.train
    run_dir = Path(cfg.out_dir)
    clips_per_step = tc.micro_batch_size * tc.grad_accum * trainer.world_size
    precise_bn = tc.precise_bn_batches if trainer.batch_norms() else 0
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
                # the source's counters first: the step's own figures win any name they share
                # (a source's cumulative wait once overwrote the per-step `data_wait_s`)
                record = {
                    **{k: v for k, v in source.stats().items() if isinstance(v, (int, float))},
                    "step": step,
                    "loss": loss,
                    "lr": trainer.lr,
                    "step_time_s": dt,
                    "clips_per_s": clips_per_step / dt,
                    "data_wait_s": window_wait / window_steps,
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
                refresh_wall = refresh_cpu = 0.0
                if precise_bn:
                    refresh_wall, refresh_cpu = _refresh_batch_norm(trainer, stream, precise_bn)
                # the cost of the model this evaluation sees: training so far (wall clock and
                # process CPU, all threads) plus this refresh, which made its statistics. The
                # refresh is not added to training: the final one recomputes every statistic
                # from scratch and training normalises by batch, so an evaluation's refresh
                # leaves the trained model unchanged, and more curve points cost no more time
                so_far = {
                    "train_time_s": train_time + paused - window_t0 + refresh_wall,
                    "train_cpu_s": train_cpu + paused_cpu - window_c0 + refresh_cpu,
                    "precise_bn_s": refresh_wall,
                }
                result = evaluator() | so_far
                metrics.write({"step": step, "event": "eval", **result})
                tracker.log_metrics(result, step=step)
            if tc.ckpt_every and step % tc.ckpt_every == 0 and step < tc.steps:
                _save(cfg, trainer, run_dir, trainer.rank, checkpoint_meta, stream.position())
            window_t0 += time.perf_counter() - paused  # eval and checkpoints are not step time
            window_c0 += time.process_time() - paused_cpu
        final_refresh = 0.0
        if precise_bn and trainer.step > start_step:  # the final model's statistics: training
            final_refresh, cpu = _refresh_batch_norm(trainer, stream, precise_bn)
            train_time, train_cpu = train_time + final_refresh, train_cpu + cpu
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
        "data_position": stream.position(),
        "precise_bn_s": final_refresh,
    }


def _refresh_batch_norm(trainer: Trainer, stream: Lookahead, batches: int) -> tuple[float, float]:
    """Precise BN over the next `batches` training batches (peeked: training still takes
    them); returns its (wall, process CPU) seconds: the cost of the model it makes."""
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.refresh_batch_norm(stream.peek(batches))
    return time.perf_counter() - t0, time.process_time() - c0


class _Evaluator:
    """The run's evaluation: one eval source (DALI pipeline, DataLoader workers) made on first
    use by `make_source` and iterated again at every evaluation."""

    def __init__(self, trainer: Trainer, make_source: Callable[[], EvalBatches]) -> None:
        self.trainer, self.make_source = trainer, make_source
        self._source: EvalBatches | None = None

    def __call__(self) -> dict[str, float]:
        if self._source is None:
            self._source = self.make_source()
        return evaluate(self.trainer.eval_forward, self._source, self.trainer.device)

    def close(self) -> None:
        close = getattr(self._source, "close", None)
        if close is not None:
            close()


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
    extra_meta: dict[str, Any] | None = None,
    data_position: dict[str, Any] | None = None,
) -> Path:
    # A frozen backbone is pinned by the file its weights came from (the image weights, or a
    # stage-1 checkpoint), not by `spatial.weights`, which stage 2 overrides from stage 1.
    source = trainer.model.spatial.weights_source if cfg.mode == "frozen" else None
    meta = {
        "mode": cfg.mode,
        "spatial_weights": source.pin() if source else None,
        "config": to_dict(cfg),
    }
    meta |= extra_meta or {}
    spatial_state = None
    if cfg.mode == "frozen" and source is None:
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
