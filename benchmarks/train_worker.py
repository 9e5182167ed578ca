"""One training configuration, timed in its own process: `python -m benchmarks.train_worker`.

Run by `benchmarks.runner`, one process per configuration, so that peak memory belongs
to this configuration alone. Writes a JSON result (atomically) to `--result`; on
MemoryError / CUDA OOM it writes `status: oom` and exits with `OOM_EXIT_CODE`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.child import OOM_EXIT_CODE
from benchmarks.specs import BenchSpec
from common.atomic import atomic_write_text


def _rss_peak_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _rss_now_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _write(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


class _Clock:
    """Wall time of a region; on a GPU the queue is drained first so the time is the work's."""

    def __init__(self, cuda: bool) -> None:
        import torch

        self._sync = torch.cuda.synchronize if cuda else (lambda: None)

    def time(self, fn) -> tuple[float, Any]:
        self._sync()
        start = time.perf_counter()
        out = fn()
        self._sync()
        return time.perf_counter() - start, out


def _synthetic_batch(spec: BenchSpec, trainer: Any, num_classes: int):
    import torch

    size = spec.backbone.img_size
    shape = (spec.micro_batch, spec.frames, 3, size, size)
    gen = torch.Generator().manual_seed(0)
    frames = torch.randn(shape, generator=gen).to(trainer.device, trainer.input_dtype)
    labels = torch.randint(0, num_classes, (spec.micro_batch,), generator=gen).to(trainer.device)
    return frames, labels


def _warm_medians(reps: int, timed: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Median of each duration `timed()` returns, over `reps` calls after one more that warms up
    kernels and the allocator."""
    timed()
    runs = [timed() for _ in range(reps)]
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def _time_spatial_forward(trainer: Any, frames: Any, clock: _Clock, reps: int) -> float:
    """Median time of the frozen spatial transformer's forward over the whole micro-batch."""
    import torch

    spatial = trainer.model.spatial

    def forward() -> dict[str, float]:
        return {"spatial": clock.time(lambda: spatial(frames))[0]}

    with torch.no_grad():
        return _warm_medians(reps, forward)["spatial"]


def _time_phases(trainer: Any, frames: Any, labels: Any, clock: _Clock, reps: int) -> dict:
    """Median time of each phase of a step (forward with the loss, backward, optimiser step),
    each drained on a GPU: where a step's time goes. The phases' sum exceeds the step a little
    there, since each drain stalls the queue; they are extra steps, after the timed ones."""
    engine = trainer.engine

    def phases() -> dict[str, float]:
        t_fwd, loss = clock.time(lambda: trainer.loss(frames, labels))
        t_bwd, _ = clock.time(lambda: engine.backward(loss))
        t_opt, _ = clock.time(engine.step)
        return {"forward": t_fwd, "backward": t_bwd, "optimizer": t_opt}

    return _warm_medians(reps, phases)


def _feed_from_data(trainer: Any, cfg: Any, spec: BenchSpec):
    """The real streaming pipeline (shards -> decode -> augment) at this config's sizes, or,
    with `data.cache` set, the cached-token stream stage 2 trains from (refused unless the
    cache pins this run's spatial weights, frames, size and token layout, as in training)."""
    if cfg.data.cache:
        from data.manifest import read_manifest
        from launch.run import open_cache_batches

        source = open_cache_batches(cfg, trainer, read_manifest(cfg.data.root)["classes"])
        return source.num_classes, iter(source.batches(0)), source

    from data.loader import open_train_batches

    spatial = trainer.model.spatial
    source = open_train_batches(
        cfg.data,
        batch_size=spec.micro_batch,
        img_size=spec.backbone.img_size,
        mean=spatial.mean,
        std=spatial.std,
        rank=0,
        world_size=1,
        seed=cfg.seed,
        device=trainer.device,
        dtype=trainer.input_dtype,
    )
    return source.num_classes, iter(source.batches(0)), source


def measure(spec: BenchSpec) -> dict[str, Any]:
    """Build the trainer for `spec`, warm up, time `spec.steps` steps; every figure in one dict."""
    import torch

    from benchmarks.flops import dims_of, mfu, spatial_fwd_flops, train_step_flops
    from benchmarks.system import device_info
    from core.config import load_config
    from core.trainer import Trainer

    rss_after_imports = _rss_peak_bytes()
    cuda = torch.cuda.is_available()
    if cuda and spec.gpu_budget_bytes:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, spec.gpu_budget_bytes / total))
    cfg = load_config(None, spec.overrides())
    num_classes = spec.num_classes
    if spec.data_root is not None:
        from data.manifest import read_manifest

        num_classes = len(read_manifest(spec.data_root)["classes"])
    t0 = time.perf_counter()
    trainer = Trainer(cfg, num_classes=num_classes)
    build_s = time.perf_counter() - t0
    clock = _Clock(cuda)
    baseline_peak = _rss_peak_bytes()
    baseline_now = _rss_now_bytes()
    gpu_baseline = torch.cuda.memory_allocated() if cuda else None

    stream = None
    if spec.data_root is not None:
        _, stream, source = _feed_from_data(trainer, cfg, spec)
    else:
        frames, labels = _synthetic_batch(spec, trainer, num_classes)

    step_times: list[float] = []
    wait_times: list[float] = []
    cpu_times: list[float] = []
    losses: list[float] = []
    for i in range(spec.warmup + spec.steps):
        wait = 0.0
        if stream is not None:
            wait, (frames, labels) = clock.time(lambda: next(stream))
        cpu0 = time.process_time()
        dt, loss = clock.time(lambda f=frames, y=labels: trainer.train_step(f, y))
        cpu_dt = time.process_time() - cpu0
        losses.append(float(loss))
        if i >= spec.warmup:
            step_times.append(dt)
            cpu_times.append(cpu_dt)
            wait_times.append(wait)

    data_stats: dict[str, float] = {}
    if stream is not None:  # end the workers now: left to exit, each sat out a 5 s join
        data_stats = {k: float(v) for k, v in source.stats().items()}
        source.close()
    spatial_s = None
    if spec.measure_spatial and spec.mode == "frozen" and not cfg.data.cache:
        spatial_s = _time_spatial_forward(trainer, frames, clock, reps=max(2, spec.steps // 2))
    phase_s = None
    if spec.measure_spatial and stream is None:
        phase_s = _time_phases(trainer, frames, labels, clock, reps=max(2, spec.steps // 2))
        if spatial_s is not None:
            phase_s["spatial_forward"] = spatial_s  # part of "forward", under no_grad

    device = device_info()
    dims = dims_of(trainer.model, num_classes)
    step_s = statistics.median(step_times)
    mode = "cached" if cfg.data.cache else spec.mode
    flops = train_step_flops(dims, mode, spec.frames, spec.micro_batch)
    spatial_flops = spec.micro_batch * spec.frames * spatial_fwd_flops(dims)
    peak_rss = _rss_peak_bytes()
    result: dict[str, Any] = {
        "status": "ok",
        "device": device["name"],
        "device_kind": device["kind"],
        "build_s": build_s,
        "step_time_median_s": step_s,
        "step_time_min_s": min(step_times),
        "step_time_max_s": max(step_times),
        "step_times_s": step_times,
        "step_cpu_time_median_s": statistics.median(cpu_times),
        "clips_per_s": spec.micro_batch / step_s,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_finite": all(math.isfinite(x) for x in losses),
        "flops_per_step": flops,
        "tflops": flops / step_s / 1e12,
        "mfu": mfu(flops, step_s, device["name"]) if cuda else None,
        "rss_after_imports_bytes": rss_after_imports,
        "rss_baseline_peak_bytes": baseline_peak,
        "rss_baseline_now_bytes": baseline_now,
        "rss_peak_bytes": peak_rss,
        "input_dtype": str(trainer.input_dtype).removeprefix("torch."),
        **trainer.param_counts,
    }
    if cuda:
        result["gpu_baseline_bytes"] = int(gpu_baseline or 0)
        result["gpu_peak_bytes"] = int(torch.cuda.max_memory_allocated())
        result["peak_mem_bytes"] = result["gpu_peak_bytes"]
        result["train_mem_bytes"] = result["gpu_peak_bytes"] - result["gpu_baseline_bytes"]
        result["mem_kind"] = "cuda_max_memory_allocated"
    else:
        result["peak_mem_bytes"] = peak_rss
        result["train_mem_bytes"] = max(0, peak_rss - baseline_now)
        result["mem_kind"] = "cpu_peak_rss"
    if spatial_s is not None:
        result["spatial_fwd_s"] = spatial_s
        result["spatial_fwd_flops"] = spatial_flops
        result["spatial_fwd_tflops"] = spatial_flops / spatial_s / 1e12
        result["spatial_fwd_mfu"] = mfu(spatial_flops, spatial_s, device["name"]) if cuda else None
    if phase_s is not None:
        result["phase_s"] = phase_s
    if stream is not None:
        result["data_wait_median_s"] = statistics.median(wait_times)
        result["data_step_time_median_s"] = statistics.median(
            w + s for w, s in zip(wait_times, step_times, strict=True)
        )
        result["data_wait_total_s"] = sum(wait_times)
        result["data_wait_share"] = sum(wait_times) / (sum(wait_times) + sum(step_times))
        result["data_decoder"] = str(getattr(source, "decoder", ""))
        result["data_stats"] = data_stats
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_worker")
    parser.add_argument("--json-config", required=True, help="BenchSpec as a JSON file path")
    parser.add_argument("--result", required=True, help="where to write the result JSON")
    args = parser.parse_args(argv)
    spec = BenchSpec.from_json(json.loads(Path(args.json_config).read_text()))
    out = Path(args.result)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        result = measure(spec)
    except MemoryError as exc:
        _write(out, {"status": "oom", "error": f"MemoryError: {exc}"})
        return OOM_EXIT_CODE
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower():
            _write(out, {"status": "oom", "error": f"{type(exc).__name__}: {str(exc)[:500]}"})
            return OOM_EXIT_CODE
        raise
    _write(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
