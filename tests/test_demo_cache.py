"""The demo's cached arm: stage 1 -> `vivit cache build` -> stage 2 from the cache, with the
build's time and FLOPs counted in the arm's cost, and its targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_config
from launch.demo_results import aggregate, arm_seed_result, cache_figures, verdict
from launch.recipes import QUICK, Arm, Stage, base_overrides, demo_arms


def test_cached_arm_is_stage1_then_cache_build_then_stage2_from_it(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    arms = {a.name: a for a in demo_arms(QUICK, runs)}
    s1, build, s2 = arms["two-stage-cached"].stages
    assert s1.run == arms["two-stage"].stages[0].run == "two-stage-s1"  # run once, shared
    assert build.kind == "cache" and build.args[:2] == ["--views", str(QUICK.cache_views)]
    assert build.steps == QUICK.clips * QUICK.cache_views
    base = base_overrides(QUICK, tmp_path / "synth", tmp_path / "w.safetensors", 0, "x", "e")
    built, cached = (load_config(None, base + s.overrides) for s in (build, s2))
    uncached = load_config(None, base + arms["two-stage"].stages[1].overrides)
    assert cached.data.cache == str(runs / "two-stage-cache") and uncached.data.cache is None
    # the cache is built with stage 2's config: same weights source, frames and layout
    for cfg in (built, cached):
        assert cfg.temporal.checkpoint == uncached.temporal.checkpoint
        assert cfg.temporal.load_spatial and cfg.data.frames == uncached.data.frames
        assert cfg.spatial == uncached.spatial and cfg.mode == "frozen"
    assert cached.train.steps == uncached.train.steps


def _summary(top1, time_s, steps, curve) -> dict:
    return {
        "top1": top1,
        "top5": 90.0,
        "steps": steps,
        "train_time_s": time_s,
        "train_cpu_s": time_s,
        "process_s": time_s + 1,
        "step_time_median_s": 0.1,
        "peak_mem_bytes": 1,
        "trainable_params": 1,
        "frozen_params": 0,
        "curve": curve,
    }


def test_cache_build_counts_in_the_cost_and_shifts_stage2(tmp_path: Path) -> None:
    arm = Arm(
        "two-stage-cached",
        "",
        [
            Stage("s1", [], 10, "full", 2),
            Stage("cache", [], 100, "cache", 8, kind="cache"),
            Stage("s2", [], 4, "frozen", 8),
        ],
    )
    summaries = {
        "s1": _summary(30.0, 10.0, 10, [{"step": 10, "top1": 30.0, "train_time_s": 10.0}]),
        "cache": _summary(None, 5.0, 100, []),
        "s2": _summary(40.0, 2.0, 4, [{"step": 4, "top1": 40.0, "train_time_s": 2.0}]),
    }
    got = arm_seed_result(arm, summaries, {"s1": 100, "cache": 7, "s2": 10}, "wall")
    assert [p["train_time_s"] for p in got["curve"]] == [0.0, 10.0, 17.0]
    assert [p["flops"] for p in got["curve"]] == [0.0, 1000.0, 1740.0]
    assert got["train_time_s"] == 17.0 and got["stage_time_s"] == [10.0, 5.0, 2.0]


@pytest.mark.parametrize("cached_top1,met", [(50.3, True), (49.0, False)])
def test_cache_targets_and_figures(cached_top1: float, met: bool) -> None:
    def result(top1, points, stage_times):
        curve = [{"train_time_s": 0.0, "flops": 0.0, "top1": None, "stage": None}]
        curve += [
            {"train_time_s": t, "flops": t, "top1": a, "stage": "x", "step": 1} for t, a in points
        ]
        return {
            "top1": top1,
            "top5": 90.0,
            "val_videos": 10,
            "train_time_s": points[-1][0],
            "train_flops": 1.0,
            "process_s": 1.0,
            "step_time_median_s": [0.1] * len(stage_times),
            "stage_time_s": stage_times,
            "peak_mem_bytes": 1,
            "trainable_params": 1,
            "frozen_params": 0,
            "curve": curve,
        }

    names = ["full", "frozen-naive", "spatial-only", "two-stage", "two-stage-cached"]
    per_seed = {
        0: {
            "full": result(50.0, [(100, 50.0)], [100.0]),
            "frozen-naive": result(40.0, [(50, 40.0)], [50.0]),
            "spatial-only": result(20.0, [(100, 20.0)], [100.0]),
            "two-stage": result(50.0, [(60, 45.0), (90, 50.0)], [60.0, 30.0]),
            "two-stage-cached": result(cached_top1, [(60, 45.0), (72, 51.0)], [60.0, 6.0, 6.0]),
        }
    }
    stages = {n: len(per_seed[0][n]["stage_time_s"]) for n in names}
    arms = [
        Arm(n, n, [Stage(f"{n}{i}", [], 1, "full", 8) for i in range(stages[n])]) for n in names
    ]
    out = aggregate(arms, per_seed, "full")
    targets = verdict(out)[4:]
    assert len(targets) == 3
    assert targets[0]["met"] is met  # within 0.5 points of stage 2 from videos
    assert targets[2]["value"] == "5.00x" and targets[2]["met"] is True  # 30 s / 6 s
    figures = cache_figures(out, [{"train_time_s": 6.0, "views": 1, "clips": 100,
                                   "bytes_per_clip": 1e3}], QUICK)  # fmt: skip
    assert figures["cache_speedup"] == pytest.approx(5.0)
    assert figures["whole_recipe_vs_full"] == pytest.approx(0.72)
