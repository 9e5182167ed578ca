"""One demo stage as its own process (`vivit train` or `vivit cache build`): its command,
environment, progress line, summary and eval curve; and what a stage costs in FLOPs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.child_env import checkout_env
from launch.recipes import (
    Stage,
)


class StageFailed(RuntimeError):
    """A `vivit train` subprocess exited non-zero; the message carries its log tail."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_base_config(path: Path, overrides: list[str]) -> None:
    """Resolve the shared overrides once (a bad key fails here, before any run) and save them."""
    from core.config import load_config
    from core.configtools import dump_yaml

    dump_yaml(load_config(None, overrides), path)


def stage_flops_per_step(base_yaml: Path, stage: Stage, num_classes: int) -> int:
    """Training FLOPs of one optimiser step of `stage` (benchmarks/flops.py's formula)."""
    from benchmarks.flops import dims_of, train_step_flops
    from core.config import load_config
    from core.model import build_parts

    cfg = load_config(base_yaml, [*stage.overrides, "spatial.weights=null"])
    model = build_parts(cfg.spatial, cfg.adapter, cfg.temporal, cfg.data.frames, num_classes)
    if stage.kind == "cache":  # a "step" of a cache build is one clip view through the ViT
        from benchmarks.flops import spatial_fwd_flops

        return cfg.data.frames * spatial_fwd_flops(dims_of(model))
    clips = cfg.train.micro_batch_size * cfg.train.grad_accum
    mode = "cached" if cfg.data.cache else cfg.mode
    return train_step_flops(dims_of(model), mode, cfg.data.frames, clips)


@dataclass
class Progress:
    """Prints one line per arm as its runs advance: step, loss, latest top-1, ETA."""

    label: str
    total_steps: int
    done_steps: int = 0
    every_s: float = 15.0
    _last: float = field(default=0.0)

    def update(self, run: str, step: int, loss: float | None, top1: float | None, rate: float):
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        left = self.total_steps - self.done_steps - step
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        parts = [f"{self.label} {run}: step {self.done_steps + step}/{self.total_steps}"]
        if loss is not None:
            parts.append(f"loss {loss:.3f}")
        if top1 is not None:
            parts.append(f"top-1 {top1:.1f}%")
        parts.append(f"ETA {eta}")
        log("  ".join(parts))


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            break
    return records


def _run_child(
    name: str,
    cmd: list[str],
    out: Path,
    runs_dir: Path,
    result: Path,
    on_tick: Callable[[], None] | None = None,
) -> float:
    """Run one stage's process into a fresh `out`, its output in `runs_dir/<name>.log`;
    `on_tick` is called every second while it runs. Returns its wall time.

    Raises `StageFailed` (with the log's tail) unless it exits 0 having written `result`; an
    interrupted demo (Ctrl-C, kill) never leaves the process behind.
    """
    shutil.rmtree(out, ignore_errors=True)
    runs_dir.mkdir(parents=True, exist_ok=True)
    log_path = runs_dir / f"{name}.log"
    start = time.perf_counter()
    with open(log_path, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=checkout_env())
        try:
            while proc.poll() is None:
                time.sleep(1.0)
                if on_tick is not None:
                    on_tick()
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    process_s = time.perf_counter() - start
    if proc.returncode != 0 or not result.is_file():
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-25:])
        raise StageFailed(f"{name} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    return process_s


def run_stage(
    stage: Stage, base_yaml: Path, runs_dir: Path, run_prefix: str, progress: Progress
) -> dict[str, Any]:
    """One fresh `vivit train` process; returns its summary.json plus its eval curve."""
    run_dir = runs_dir / stage.run
    cmd = [sys.executable, "-m", "launch.train", str(base_yaml), *stage.overrides]
    cmd += [f"out_dir={run_dir}", f"tracking.run_name={run_prefix}{stage.run}"]

    def report() -> None:
        records = _read_metrics(run_dir / "metrics.jsonl")
        steps = [r for r in records if "loss" in r]
        evals = [r for r in records if r.get("event") == "eval"]
        if steps:
            last = steps[-1]
            rate = 1.0 / last["step_time_s"] if last.get("step_time_s") else 0.0
            top1 = evals[-1]["top1"] if evals else None
            progress.update(stage.run, last["step"], last["loss"], top1, rate)

    summary_path = run_dir / "summary.json"
    process_s = _run_child(stage.run, cmd, run_dir, runs_dir, summary_path, report)
    progress.done_steps += stage.steps
    summary = json.loads(summary_path.read_text())
    summary["process_s"] = process_s
    summary["run"] = stage.run
    summary["curve"] = [
        {
            "step": r["step"],
            "top1": r["top1"],
            "train_time_s": r.get("train_time_s"),
            "train_cpu_s": r.get("train_cpu_s"),
        }
        for r in _read_metrics(run_dir / "metrics.jsonl")
        if r.get("event") == "eval"
    ]
    log(
        f"  {stage.run}: top-1 {summary['top1']:.2f}  train {summary['train_time_s']:.1f}s  "
        f"step {summary['step_time_median_s']:.3f}s  ({process_s:.0f}s with start-up and evals)"
    )
    return summary


def run_cache_stage(stage: Stage, base_yaml: Path, runs_dir: Path) -> dict[str, Any]:
    """One fresh `vivit cache build` process; a summary shaped like a training stage's: its
    build time (wall and process CPU, start-up excluded) is the stage's training time, its
    "steps" the clip views encoded, and it has no evaluation points."""
    out = runs_dir / stage.run
    cmd = [sys.executable, "-m", "launch.cli", "cache", "build", str(base_yaml)]
    cmd += ["--out", str(out), *stage.args, *stage.overrides]
    manifest_path = out / "cache.json"
    process_s = _run_child(stage.run, cmd, out, runs_dir, manifest_path)
    split = json.loads(manifest_path.read_text())["splits"]["train"]
    build = split["build"]
    views = split["clips"] * split["views"]
    summary = {
        "run": stage.run,
        "steps": views,
        "train_time_s": build["build_s"],
        "train_cpu_s": build["build_cpu_s"],
        "step_time_median_s": build["build_s"] / max(1, views),
        "process_s": process_s,
        "peak_mem_bytes": 0,
        "curve": [],
        "clips": split["clips"],
        "views": split["views"],
        "bytes_per_clip": split["bytes_per_clip"],
        "storage": split.get("storage", {}),
    }
    log(
        f"  {stage.run}: {split['clips']} clips x {split['views']} view(s) in "
        f"{build['build_s']:.1f}s ({build['build_cpu_s']:.1f}s CPU), "
        f"{split['bytes_per_clip'] / 1e3:.1f} kB per clip ({process_s:.0f}s with start-up)"
    )
    return summary
