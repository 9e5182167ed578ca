"""The demo's numbers: each arm's curve per seed (stages chained), their mean and spread
over seeds, the time to reach full fine-tuning's top-1, and the targets met or missed."""

from __future__ import annotations

import math
import statistics
from typing import Any

from launch.recipes import (
    Arm,
    Budget,
)

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


def paired_gap(arm: dict[str, Any], other: dict[str, Any]) -> str:
    """`arm - other` in top-1 points: the mean, each seed's difference, and the standard error
    of the mean difference. Both arms of a seed share its data order and initial streams, so
    the per-seed differences tell whether a gap stands out of the seed-to-seed spread."""
    diffs = [a - b for a, b in zip(arm["top1_per_seed"], other["top1_per_seed"], strict=True)]
    text = f"{_mean(diffs):+.2f} points"
    if len(diffs) < 2:
        return text
    per_seed = ", ".join(f"{d:+.2f}" for d in diffs)
    se = _sd(diffs) / math.sqrt(len(diffs))
    return f"{text} (per seed {per_seed}; standard error {se:.2f})"


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
            "value": paired_gap(method, full),
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
            "value": paired_gap(cached, method),
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
