"""`vivit demo`: time-to-accuracy of the frozen-spatial two-stage method vs full fine-tuning.

Builds the synthetic action set and pretrains a tiny spatial ViT (both cached under the
output directory, keyed on the options), then trains each arm, for each seed, as its own
`vivit train` processes, evaluating every run at several points of its training with the
same multi-view protocol. The result is top-1 against training time and against training
FLOPs (mean and spread over seeds), a table (final top-1 mean ± sd, training time, time to
reach full fine-tuning's final top-1) and the targets met or missed: `results.md`,
`results.json`, `results.png`. Every run is an MLflow run of one experiment in
`OUT/mlflow.db`: `mlflow ui --backend-store-uri sqlite:///OUT/mlflow.db`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launch.recipes import (
    SPATIAL_KWARGS,
    SPATIAL_MODEL,
    Arm,
    Budget,
    Stage,
    base_overrides,
    budget_for,
    cache_key,
    demo_arms,
    describe,
)

EXPERIMENT = "vivit-demo"
REPO = Path(__file__).resolve().parent.parent


class StageFailed(RuntimeError):
    """A `vivit train` subprocess exited non-zero; the message carries its log tail."""


def _child_env() -> dict[str, str]:
    """The environment of a stage's child process: it imports this checkout, whatever an
    installed copy says."""
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- data + pretrained weights


def prepare_inputs(budget: Budget, cache_root: Path, seed: int) -> tuple[Path, Path]:
    """(shard dir, spatial weights), built once per option set and reused afterwards."""
    from common.atomic import atomic_path
    from data.synthetic import make_synthetic
    from launch.image_pretrain import PretrainConfig, pretrain

    cache = cache_root / cache_key(budget, seed)
    data_root, weights = cache / "synth", cache / "spatial.safetensors"
    if (data_root / "manifest.json").is_file():
        log(f"reusing shards {data_root}")
    else:
        log(f"building synthetic shards ({budget.clips} train / {budget.val_clips} val clips)")
        with atomic_path(data_root) as tmp:
            make_synthetic(
                tmp,
                clips=budget.clips,
                val_clips=budget.val_clips,
                frames=budget.video_frames,
                size=budget.size,
                seed=seed,
                images=budget.images,
            )
    if weights.is_file() and weights.with_suffix(".json").is_file():
        meta = json.loads(weights.with_suffix(".json").read_text())
        log(f"reusing spatial weights {weights} (image val top-1 {meta['val_top1']:.3f})")
    else:
        log(f"pretraining the spatial ViT on {data_root / 'images'}")
        pretrain(
            PretrainConfig(
                images=str(data_root / "images"),
                model=SPATIAL_MODEL,
                out=str(weights),
                img_size=budget.size,
                patch_size=budget.patch,
                model_kwargs=dict(SPATIAL_KWARGS),
                steps=budget.pretrain_steps,
                batch_size=budget.pretrain_batch,
                lr=budget.pretrain_lr,
                min_scale=0.35,
                seed=seed,
            ),
            log=log,
        )
    return data_root, weights


# ---------------------------------------------------------------- MLflow store


def tracking_uri(out: Path) -> str:
    """A SQLite store (MLflow 3.x refuses new file stores without an opt-out variable)."""
    return f"sqlite:///{(out / 'mlflow.db').resolve()}"


def ensure_experiment(uri: str, name: str, artifacts: Path) -> str:
    """Create the experiment with artifacts under the output dir (else they land in ./mlruns)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifacts.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(name, artifact_location=artifacts.resolve().as_uri())


def mlflow_run_names(uri: str, name: str) -> list[str]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r.info.run_name for r in runs]


# ---------------------------------------------------------------- running one stage


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


def run_stage(
    stage: Stage, base_yaml: Path, runs_dir: Path, run_prefix: str, progress: Progress
) -> dict[str, Any]:
    """One fresh `vivit train` process; returns its summary.json plus its eval curve."""
    run_dir = runs_dir / stage.run
    shutil.rmtree(run_dir, ignore_errors=True)
    runs_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "launch.train", str(base_yaml), *stage.overrides]
    cmd += [f"out_dir={run_dir}", f"tracking.run_name={run_prefix}{stage.run}"]
    log_path = runs_dir / f"{stage.run}.log"
    env = _child_env()
    start = time.perf_counter()
    with open(log_path, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        try:
            while proc.poll() is None:
                time.sleep(1.0)
                records = _read_metrics(run_dir / "metrics.jsonl")
                steps = [r for r in records if "loss" in r]
                evals = [r for r in records if r.get("event") == "eval"]
                if steps:
                    last = steps[-1]
                    rate = 1.0 / last["step_time_s"] if last.get("step_time_s") else 0.0
                    top1 = evals[-1]["top1"] if evals else None
                    progress.update(stage.run, last["step"], last["loss"], top1, rate)
        finally:  # interrupted (Ctrl-C, kill): never leave a training process behind
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    process_s = time.perf_counter() - start
    progress.done_steps += stage.steps
    summary_path = run_dir / "summary.json"
    if proc.returncode != 0 or not summary_path.is_file():
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-25:])
        raise StageFailed(f"{stage.run} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
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
    shutil.rmtree(out, ignore_errors=True)
    runs_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "launch.cli", "cache", "build", str(base_yaml)]
    cmd += ["--out", str(out), *stage.args, *stage.overrides]
    log_path = runs_dir / f"{stage.run}.log"
    env = _child_env()
    start = time.perf_counter()
    with open(log_path, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        try:
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
    process_s = time.perf_counter() - start
    manifest_path = out / "cache.json"
    if proc.returncode != 0 or not manifest_path.is_file():
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-25:])
        raise StageFailed(f"{stage.run} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
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


CLOCKS = {"wall": "train_time_s", "cpu": "train_cpu_s"}
"""Training time of a run: wall-clock step time, or the process CPU time of its steps (all
threads; steadier than wall time on a machine shared with other work)."""


def arm_seed_result(
    arm: Arm, summaries: dict[str, dict[str, Any]], flops: dict[str, int], clock: str = "wall"
) -> dict[str, Any]:
    """One arm, one seed: its curve (stages chained: each starts at the previous one's cost).

    `train_time_s` in the result is on `clock` (see CLOCKS), whichever it is.
    """
    key = CLOCKS[clock]
    curve = [{"train_time_s": 0.0, "flops": 0.0, "top1": None, "stage": None}]
    time_offset = flops_offset = 0.0
    for stage in arm.stages:
        s = summaries[stage.run]
        per_step = flops[stage.run]
        for point in s["curve"]:
            t = point[key]
            if t is None:  # an eval record without time (older trainer): spread evenly
                t = s[key] * point["step"] / max(1, s["steps"])
            curve.append(
                {
                    "stage": stage.run,
                    "step": point["step"],
                    "train_time_s": time_offset + t,
                    "flops": flops_offset + per_step * point["step"],
                    "top1": point["top1"],
                }
            )
        time_offset += s[key]
        flops_offset += per_step * s["steps"]
    last = summaries[arm.stages[-1].run]
    return {
        "top1": last["top1"],
        "top5": last["top5"],
        "val_videos": last.get("val_videos"),
        "train_time_s": time_offset,
        "train_flops": flops_offset,
        "process_s": sum(summaries[s.run]["process_s"] for s in arm.stages),
        "step_time_median_s": [summaries[s.run]["step_time_median_s"] for s in arm.stages],
        "stage_time_s": [summaries[s.run][key] for s in arm.stages],
        "peak_mem_bytes": max(summaries[s.run]["peak_mem_bytes"] for s in arm.stages),
        "trainable_params": last["trainable_params"],
        "frozen_params": last["frozen_params"],
        "curve": curve,
    }


# ---------------------------------------------------------------- aggregation over seeds


def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else math.nan


def _sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def mean_curve(per_seed: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Point-wise mean and sd over seeds (every seed runs the same evaluation schedule)."""
    n = min(len(c) for c in per_seed)
    out = []
    for i in range(n):
        points = [c[i] for c in per_seed]
        top1 = [p["top1"] for p in points if p["top1"] is not None]
        out.append(
            {
                "train_time_s": _mean([p["train_time_s"] for p in points]),
                "flops": _mean([p["flops"] for p in points]),
                "top1_mean": _mean(top1) if top1 else None,
                "top1_sd": _sd(top1) if top1 else None,
                "stage": points[0]["stage"],
            }
        )
    return out


def time_to_reach(curve: list[dict[str, Any]], target: float, key: str = "train_time_s"):
    """First `key` at which the curve's mean top-1 reaches `target` (linear between points)."""
    prev = None
    for point in curve:
        top1 = point["top1_mean"]
        if top1 is None:
            continue
        if top1 >= target:
            if prev is None or prev["top1_mean"] is None or top1 == prev["top1_mean"]:
                return point[key]
            frac = (target - prev["top1_mean"]) / (top1 - prev["top1_mean"])
            return prev[key] + max(0.0, min(1.0, frac)) * (point[key] - prev[key])
        prev = point
    return None


def aggregate(
    arms: list[Arm], per_seed: dict[int, dict[str, dict[str, Any]]], baseline: str | None
) -> dict[str, dict[str, Any]]:
    """results.json's `arms`: per arm the mean ± sd over seeds, curves and time to full's top-1."""
    seeds = sorted(per_seed)
    out: dict[str, dict[str, Any]] = {}
    for arm in arms:
        results = [per_seed[s][arm.name] for s in seeds]
        top1 = [r["top1"] for r in results]
        out[arm.name] = {
            "label": arm.label,
            "seeds": seeds,
            "top1_mean": _mean(top1),
            "top1_sd": _sd(top1),
            "top1_per_seed": top1,
            "top5_mean": _mean([r["top5"] for r in results]),
            "train_time_s_mean": _mean([r["train_time_s"] for r in results]),
            "train_time_s_sd": _sd([r["train_time_s"] for r in results]),
            "train_flops": _mean([r["train_flops"] for r in results]),
            "process_s_mean": _mean([r["process_s"] for r in results]),
            "step_time_median_s": [
                _mean([r["step_time_median_s"][i] for r in results]) for i in range(len(arm.stages))
            ],
            "stage_time_s": [
                _mean([r["stage_time_s"][i] for r in results if "stage_time_s" in r])
                for i in range(len(arm.stages))
            ],
            "peak_mem_bytes": max(r["peak_mem_bytes"] for r in results),
            "trainable_params": results[0]["trainable_params"],
            "frozen_params": results[0]["frozen_params"],
            "val_videos": results[0]["val_videos"],
            "stages": [
                {"run": s.run, "mode": s.mode, "frames": s.frames, "steps": s.steps}
                | ({"kind": s.kind} if s.kind != "train" else {})
                for s in arm.stages
            ],
            "curve_mean": mean_curve([r["curve"] for r in results]),
            "curves": {str(s): r["curve"] for s, r in zip(seeds, results, strict=True)},
        }
    if baseline is not None and baseline in out:
        target = out[baseline]["top1_mean"]
        for row in out.values():
            row["time_to_full_top1_s"] = time_to_reach(row["curve_mean"], target)
            row["flops_to_full_top1"] = time_to_reach(row["curve_mean"], target, key="flops")
    return out


# ---------------------------------------------------------------- verdict + report


def verdict(arms: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each with its measured figure (never adjusted)."""
    full, naive = arms["full"], arms["frozen-naive"]
    spatial, method = arms["spatial-only"], arms["two-stage"]
    gap = method["top1_mean"] - full["top1_mean"]
    reach = method.get("time_to_full_top1_s")
    ratio = None if reach is None else reach / full["train_time_s_mean"]
    naive_gap = naive["top1_mean"] - full["top1_mean"]
    floor = spatial["top1_mean"] - max(full["top1_mean"], naive["top1_mean"])
    targets = [
        {
            "target": "method final top-1 >= full - 0.5 points",
            "value": f"{gap:+.2f} points",
            "met": gap >= -0.5,
        },
        {
            "target": "method reaches full's final top-1 in <= 0.6x full's training time "
            "(stage 1 included)",
            "value": "never" if ratio is None else f"{ratio:.2f}x",
            "met": ratio is not None and ratio <= 0.6,
        },
        {
            "target": "naive freezing >= 3 points below full",
            "value": f"{naive_gap:+.2f} points",
            "met": naive_gap <= -3.0,
        },
        {
            "target": "spatial-only clearly below full and naive (>= 3 points below both)",
            "value": f"{floor:+.2f} points below the better of the two",
            "met": floor <= -3.0,
        },
    ]
    if "two-stage-cached" in arms:
        targets += cache_verdict(arms)
    return targets


def cache_speedup(arms: dict[str, dict[str, Any]]) -> float | None:
    """Stage 2 from videos / stage 2 from the cache, same steps (so per epoch as well)."""
    videos = arms["two-stage"]["stage_time_s"][-1]
    cached = arms["two-stage-cached"]["stage_time_s"][-1]
    return videos / cached if cached else None


def cache_verdict(arms: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Targets of the cached variant (issue: train the frozen stage from cached tokens)."""
    full, method, cached = arms["full"], arms["two-stage"], arms["two-stage-cached"]
    gap = cached["top1_mean"] - method["top1_mean"]
    reach = cached.get("time_to_full_top1_s")
    ratio = None if reach is None else reach / full["train_time_s_mean"]
    whole = cached["train_time_s_mean"] / full["train_time_s_mean"]
    speedup = cache_speedup(arms)
    return [
        {
            "target": "cached stage 2 final top-1 within 0.5 points of stage 2 from videos "
            "(cached views vs on-the-fly augmentation)",
            "value": f"{gap:+.2f} points",
            "met": abs(gap) <= 0.5,
        },
        {
            "target": "cached recipe (stage 1 + cache build + stage 2) reaches full's final "
            "top-1 in <= 0.35x full's training time",
            "value": ("never" if ratio is None else f"{ratio:.2f}x")
            + f" (whole recipe {whole:.2f}x full's time)",
            "met": ratio is not None and ratio <= 0.35,
        },
        {
            "target": "cache_speedup: stage 2 time per epoch from videos / from the cache >= 5",
            "value": "-" if speedup is None else f"{speedup:.2f}x",
            "met": speedup is not None and speedup >= 5.0,
        },
    ]


def cache_figures(
    arms: dict[str, dict[str, Any]], cache_runs: list[dict[str, Any]], budget: Budget
) -> dict[str, Any]:
    """results.json's `cache`: speedup, per-epoch times, build cost and storage (seed means)."""
    method, cached = arms["two-stage"], arms["two-stage-cached"]
    epochs = budget.stage2_steps * budget.batch / budget.clips
    build = statistics.fmean(r["train_time_s"] for r in cache_runs)
    return {
        "cache_speedup": cache_speedup(arms),
        "stage2_epochs": epochs,
        "stage2_time_s_videos": method["stage_time_s"][-1],
        "stage2_time_s_cache": cached["stage_time_s"][-1],
        "epoch_s_videos": method["stage_time_s"][-1] / epochs,
        "epoch_s_cache": cached["stage_time_s"][-1] / epochs,
        "build_s": build,
        "build_epochs_equivalent": build / (method["stage_time_s"][-1] / epochs),
        "views": cache_runs[0]["views"],
        "clips": cache_runs[0]["clips"],
        "bytes_per_clip": cache_runs[0]["bytes_per_clip"],
        "whole_recipe_vs_full": cached["train_time_s_mean"] / arms["full"]["train_time_s_mean"],
        "two_stage_vs_full": method["train_time_s_mean"] / arms["full"]["train_time_s_mean"],
    }


def _fmt_s(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f}"


def table_rows(arms: dict[str, dict[str, Any]], baseline: str | None) -> list[list[str]]:
    base_time = arms[baseline]["train_time_s_mean"] if baseline in arms else None
    rows = []
    for name, a in arms.items():
        reach = a.get("time_to_full_top1_s")
        steps = " + ".join(
            f"cache {s['steps']} views@{s['frames']}f"
            if s.get("kind") == "cache"
            else f"{s['steps']}@{s['frames']}f {s['mode']}"
            for s in a["stages"]
        )
        row = [
            name,
            steps,
            f"{a['top1_mean']:.2f} ± {a['top1_sd']:.2f}",
            f"{a['train_time_s_mean']:.0f}",
            f"{a['train_flops'] / 1e12:.2f}",
        ]
        if baseline is not None:
            row += [
                _fmt_s(reach),
                "-" if reach is None or not base_time else f"{reach / base_time:.2f}x",
            ]
        row += [f"{a['trainable_params']:,}"]
        rows.append(row)
    return rows


def render_markdown(result: dict[str, Any], baseline: str | None) -> str:
    from benchmarks.report import markdown_table

    arms = result["arms"]
    first = next(iter(arms.values()))
    seeds = first["seeds"]
    env = result["environment"]
    header = ["arm", "stages (steps@frames)", "final top-1 % (mean ± sd)", "train time s"]
    header += ["train TFLOP"]
    if baseline is not None:
        header += [f"time to {baseline}'s final top-1 s", "/ full time"]
    header += ["trainable params"]
    lines = [f"# {result['title']}", ""]
    lines += [
        f"- seeds: {seeds}; {first['val_videos']} validation videos, "
        f"{result['budget']['eval_clips']} temporal views each (chance {100 / 12:.1f}%)",
        f"- device: {env['device'].get('name')} ({env['device'].get('kind')}, "
        f"{env['device'].get('cores', '-')} cores); commit {env.get('git_commit')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()),
        f"- command: `{result['command']}`; whole run {result['total_s']:.0f} s",
        "",
    ]
    lines += markdown_table(header, table_rows(arms, baseline))
    lines += [
        f"Train time ({result['clock']} clock): the trainer's "
        + ("step time" if result["clock"] == "wall" else "process CPU time of the steps")
        + " summed over every stage of the arm (a cache build's time included; evaluation, "
        "checkpoints and start-up excluded); a multi-stage curve starts at the previous "
        "stage's cost. "
        + (
            f"Time to {baseline}'s final top-1: where the arm's mean curve first reaches the "
            f"{baseline} arm's final mean top-1 (linear between evaluation points). "
            if baseline is not None
            else ""
        )
        + "FLOPs: "
        "benchmarks/flops.py's formula (backward = 2x forward; frozen spatial forward only).",
        "",
        "![top-1 vs training time and FLOPs](results.png)",
        "",
    ]
    if result.get("cache"):
        c = result["cache"]
        lines += [
            "## Stage 2 from cached tokens",
            "",
            f"`vivit cache build` encoded {c['clips']} clips x {c['views']} view(s) once in "
            f"{c['build_s']:.0f} s ({c['bytes_per_clip'] / 1e3:.1f} kB per clip on disk), "
            f"{c['build_epochs_equivalent']:.2f}x the time of one stage-2 epoch from videos. "
            f"Stage 2 ({c['stage2_epochs']:.2f} epochs): {c['stage2_time_s_videos']:.0f} s from "
            f"videos, {c['stage2_time_s_cache']:.0f} s from the cache: cache_speedup "
            f"{c['cache_speedup']:.2f}x per epoch. Whole recipe vs full fine-tuning: "
            f"{c['two_stage_vs_full']:.2f}x from videos, {c['whole_recipe_vs_full']:.2f}x "
            "cached (cache build included).",
            "",
        ]
    if result.get("verdict"):
        lines += ["## Against the targets", ""]
        lines += markdown_table(
            ["target", "measured", "verdict"],
            [[t["target"], t["value"], "met" if t["met"] else "MISSED"] for t in result["verdict"]],
        )
    lines += [
        f"Budget: `{json.dumps(result['budget'])}`",
        "",
        f"Spatial ViT pretraining: `{json.dumps(result['pretrain'])}`",
        "",
        f"MLflow: `mlflow ui --backend-store-uri {result['tracking_uri']}`",
        "",
    ]
    return "\n".join(lines)


def write_report(out: Path, result: dict[str, Any], baseline: str | None) -> None:
    """results.json, results.md and results.png, each written atomically."""
    from benchmarks.plots import plot_time_to_accuracy
    from common.atomic import atomic_write_text

    atomic_write_text(out / "results.json", json.dumps(result, indent=1, default=str) + "\n")
    atomic_write_text(out / "results.md", render_markdown(result, baseline))
    plot_time_to_accuracy(
        {name: a["curve_mean"] for name, a in result["arms"].items()},
        out / "results.png",
        result["title"],
        target=result["arms"][baseline]["top1_mean"] if baseline in result["arms"] else None,
    )


# ---------------------------------------------------------------- entry point


def run_experiment(
    out: Path,
    quick: bool,
    seeds: list[int],
    experiment: str,
    arms_for: Callable[[Budget, Path], list[Arm]],
    title: str,
    baseline: str | None,
    command: str,
    data_seed: int = 0,
    clock: str = "wall",
    tracking: bool = True,
) -> dict[str, Any]:
    """Shared by demo and ablate: inputs once, then every arm for every seed, then the report."""
    from benchmarks.system import environment

    budget = budget_for(quick)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    env = environment(command.split()[1:])  # at the start: the commit the runs ran on
    env["command"] = command
    data_root, weights = prepare_inputs(budget, out / "cache", data_seed)
    from data.manifest import read_manifest

    num_classes = len(read_manifest(data_root)["classes"])
    uri = tracking_uri(out)
    if tracking:
        ensure_experiment(uri, experiment, out / "mlartifacts")
    per_seed: dict[int, dict[str, dict[str, Any]]] = {}
    cache_runs: list[dict[str, Any]] = []
    arms: list[Arm] = []
    for seed in seeds:
        seed_dir = out / f"seed{seed}"
        seed_dir.mkdir(parents=True, exist_ok=True)
        base_yaml = seed_dir / "base.yaml"
        overrides = base_overrides(
            budget, data_root.resolve(), weights.resolve(), seed, uri, experiment
        )
        if not tracking:
            overrides.append("tracking.enabled=false")
        write_base_config(base_yaml, overrides)
        runs_dir = (seed_dir / "runs").resolve()
        arms = arms_for(budget, runs_dir)
        summaries: dict[str, dict[str, Any]] = {}
        flops: dict[str, int] = {}
        for arm in arms:
            train_stages = [s for s in arm.stages if s.kind == "train"]
            progress = Progress(f"[seed {seed}] {arm.name}", sum(s.steps for s in train_stages))
            for stage in arm.stages:
                if stage.run in summaries:  # a stage shared by several arms runs once
                    progress.done_steps += stage.steps if stage.kind == "train" else 0
                    continue
                if stage.kind == "cache":
                    summaries[stage.run] = run_cache_stage(stage, base_yaml, runs_dir)
                else:
                    summaries[stage.run] = run_stage(
                        stage, base_yaml, runs_dir, f"{budget.name}/seed{seed}/", progress
                    )
                flops[stage.run] = stage_flops_per_step(base_yaml, stage, num_classes)
        per_seed[seed] = {arm.name: arm_seed_result(arm, summaries, flops, clock) for arm in arms}
        cache_runs += [summaries[s.run] | {"seed": seed} for s in _cache_stages(arms)]
    arm_results = aggregate(arms, per_seed, baseline)
    pretrain_meta = json.loads(weights.with_suffix(".json").read_text())
    result: dict[str, Any] = {
        "title": title,
        "command": command,
        "seeds": seeds,
        "arms": arm_results,
        "budget": describe(budget),
        "data_seed": data_seed,
        "clock": clock,
        "pretrain": {k: pretrain_meta[k] for k in ("val_top1", "steps", "train_s")},
        "tracking_uri": uri,
        "experiment": experiment,
        "mlflow_runs": sorted(mlflow_run_names(uri, experiment)) if tracking else [],
    }
    if baseline is not None:
        result["verdict"] = verdict(arm_results)
    if "two-stage" in arm_results and "two-stage-cached" in arm_results:
        result["cache"] = cache_figures(arm_results, cache_runs, budget)
    result["environment"] = env
    result["total_s"] = time.perf_counter() - t0
    write_report(out, result, baseline)
    print()
    print((out / "results.md").read_text())
    log(f"done in {result['total_s']:.0f}s: {out / 'results.md'}, results.json, results.png")
    return result


def _cache_stages(arms: list[Arm]) -> list[Stage]:
    found = {s.run: s for arm in arms for s in arm.stages if s.kind == "cache"}
    return list(found.values())


def build_parser(prog: str, default_out: str, what: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=what)
    p.add_argument("--quick", action="store_true", help="CI-sized smoke run (a few minutes)")
    p.add_argument(
        "--out",
        default=None,
        help=f"output dir (default {default_out}, -quick suffix with --quick)",
    )
    p.add_argument("--seeds", type=int, default=1, help="training seeds 0..N-1 (default 1)")
    p.add_argument(
        "--seed", type=int, default=0, help="first training seed (seeds are SEED..SEED+N-1)"
    )
    p.add_argument(
        "--data-seed", type=int, default=0, help="seed of the synthetic set and pretraining"
    )
    p.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="training time as wall-clock step time (default) or the process CPU time of the "
        "steps (steadier on a machine shared with other work)",
    )
    p.add_argument(
        "--no-tracking",
        action="store_true",
        help="no MLflow store (for machines without mlflow); results.{md,json,png} as usual",
    )
    return p


def run_command(
    argv: list[str],
    prog: str,
    default_out: str,
    description: str,
    experiment: str,
    arms: Callable[[Budget, Path], list[Arm]],
    title: str,
    baseline: str | None,
) -> int:
    """The shared CLI body of `vivit demo` and `vivit ablate`."""
    args = build_parser(prog, default_out, description).parse_args(argv)
    if args.seeds < 1:
        print(f"{prog}: --seeds must be >= 1", file=sys.stderr)
        return 2
    out = Path(args.out or (f"{default_out}-quick" if args.quick else default_out))
    seeds = list(range(args.seed, args.seed + args.seeds))
    # `kill` unwinds like Ctrl-C, so the running `vivit train` child is stopped too
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        run_experiment(
            out,
            args.quick,
            seeds,
            experiment,
            arms,
            title,
            baseline=baseline,
            command=" ".join([prog, *argv]),
            data_seed=args.data_seed,
            clock=args.clock,
            tracking=not args.no_tracking,
        )
    except StageFailed as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    return run_command(
        argv,
        "vivit demo",
        "runs/demo",
        "Time-to-accuracy of full fine-tuning, naive freezing, the spatial-only floor and "
        "the two-stage frozen-spatial method on the built-in synthetic action set; writes "
        "results.md/json/png and an MLflow store.",
        EXPERIMENT,
        demo_arms,
        "vivit demo: time to accuracy, frozen-spatial two-stage vs full fine-tuning",
        baseline="full",
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
