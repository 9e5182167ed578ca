"""`vivit demo`: arms and recipes resolve, the time-to-accuracy maths, and `--quick` end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import load_config
from launch.demo_results import aggregate, mean_curve, time_to_reach, verdict
from launch.recipes import (
    ARMS,
    DEFAULT,
    QUICK,
    Arm,
    Stage,
    ablation_arms,
    base_overrides,
    demo_arms,
)


def _all_overrides(arms, tmp_path: Path, budget=QUICK) -> list[list[str]]:
    base = base_overrides(
        budget, tmp_path / "synth", tmp_path / "w.safetensors", 0, "sqlite:///x", "e"
    )
    return [base + stage.overrides for arm in arms for stage in arm.stages]


@pytest.mark.parametrize("budget", [QUICK, DEFAULT], ids=["quick", "default"])
def test_every_arm_resolves_to_a_valid_config(tmp_path: Path, budget) -> None:
    arms = demo_arms(budget, tmp_path / "runs") + ablation_arms(budget, tmp_path / "runs")
    for overrides in _all_overrides(arms, tmp_path, budget):
        cfg = load_config(None, overrides)
        assert cfg.resume is None and cfg.seed == 0
        assert cfg.train.eval_every > 0 and 0 < cfg.optim.warmup_steps < cfg.train.steps
    by_name = {arm.name: arm for arm in demo_arms(budget, tmp_path / "runs")}
    assert tuple(by_name) == ARMS
    full, naive, spatial = (
        load_config(None, _all_overrides([by_name[n]], tmp_path, budget)[0])
        for n in ("full", "frozen-naive", "spatial-only")
    )
    assert full.mode == "full" and full.temporal.kind == "transformer"
    assert naive.mode == "frozen" and naive.adapter.kind == "none"
    assert naive.temporal.init == "random"
    assert spatial.temporal.kind == "mean" and spatial.data.frames == full.data.frames
    s1, s2 = (
        load_config(None, _all_overrides([by_name["two-stage"]], tmp_path, budget)[i])
        for i in (0, 1)
    )
    assert s1.mode == "full" and s2.mode == "frozen" and s2.adapter.kind == "attn"
    assert s1.data.frames * 4 == s2.data.frames == full.data.frames  # the paper's T/4
    # stage 1 holds as many frames per step as a T-frame step, at sqrt-scaled lr
    assert s1.train.micro_batch_size * s1.data.frames == s2.train.micro_batch_size * s2.data.frames
    assert s2.train.micro_batch_size == full.train.micro_batch_size == budget.batch
    assert s1.optim.lr == pytest.approx(2 * s2.optim.lr) and s2.optim.lr == full.optim.lr
    assert s2.temporal.init == "checkpoint" and s2.temporal.load_spatial
    assert Path(s2.temporal.checkpoint).name == "two-stage-s1"
    assert {arm.name for arm in ablation_arms(budget, tmp_path)} == {
        f"{a}/{i}" for a in ("none", "mlp", "attn") for i in ("random", "image", "stage-1")
    }


def test_default_demo_fits_its_time_budget_on_paper() -> None:
    """Step budgets as the recipe states them: >= 1000 val clips, stage 1 at T/4."""
    assert DEFAULT.val_clips >= 1000
    assert DEFAULT.stage1_frames * 4 == DEFAULT.frames
    assert DEFAULT.stage2_steps < DEFAULT.full_steps


def _curve(points: list[tuple[float, float | None]]) -> list[dict]:
    return [
        {"train_time_s": t, "flops": 10 * t, "top1": a, "stage": "x", "step": i}
        for i, (t, a) in enumerate(points)
    ]


def test_time_to_reach_interpolates_and_says_never() -> None:
    mean = mean_curve([_curve([(0, None), (10, 20.0), (20, 40.0)])])
    assert time_to_reach(mean, 30.0) == pytest.approx(15.0)
    assert time_to_reach(mean, 30.0, key="flops") == pytest.approx(150.0)
    assert time_to_reach(mean, 20.0) == pytest.approx(10.0)
    assert time_to_reach(mean, 41.0) is None


def test_mean_curve_averages_seeds_pointwise() -> None:
    mean = mean_curve([_curve([(0, None), (10, 20.0)]), _curve([(0, None), (12, 30.0)])])
    assert mean[1]["train_time_s"] == pytest.approx(11.0)
    assert mean[1]["top1_mean"] == pytest.approx(25.0)
    assert mean[1]["top1_sd"] == pytest.approx(math.sqrt(50.0))


def _arm_result(top1: float, curve: list[tuple[float, float | None]]) -> dict:
    return {
        "top1": top1,
        "top5": 90.0,
        "val_videos": 100,
        "train_time_s": curve[-1][0],
        "train_flops": 10.0 * curve[-1][0],
        "process_s": curve[-1][0] + 5,
        "step_time_median_s": [0.1],
        "peak_mem_bytes": 1,
        "trainable_params": 1,
        "frozen_params": 0,
        "curve": _curve(curve),
        "stage_time_s": [curve[-1][0]],
    }


def test_aggregate_writes_the_results_format_and_the_verdict() -> None:
    arms = [Arm(name, name, [Stage(name, [], 10, "full", 8)]) for name in ARMS]
    per_seed = {
        0: {
            "full": _arm_result(50.0, [(0, None), (50, 40.0), (100, 50.0)]),
            "frozen-naive": _arm_result(40.0, [(0, None), (30, 35.0), (60, 40.0)]),
            "spatial-only": _arm_result(30.0, [(0, None), (50, 25.0), (100, 30.0)]),
            "two-stage": _arm_result(51.0, [(0, None), (30, 45.0), (40, 55.0), (60, 51.0)]),
            "two-stage-cached": _arm_result(51.2, [(0, None), (20, 46.0), (30, 55.0)]),
        },
        1: {
            "full": _arm_result(52.0, [(0, None), (50, 42.0), (100, 52.0)]),
            "frozen-naive": _arm_result(41.0, [(0, None), (30, 35.0), (60, 41.0)]),
            "spatial-only": _arm_result(31.0, [(0, None), (50, 25.0), (100, 31.0)]),
            "two-stage": _arm_result(50.0, [(0, None), (30, 47.0), (40, 53.0), (60, 50.0)]),
            "two-stage-cached": _arm_result(50.2, [(0, None), (20, 46.0), (30, 54.0)]),
        },
    }
    out = aggregate(arms, per_seed, "full")
    for name in ARMS:
        for key in ("top1_mean", "top1_sd", "seeds", "train_time_s_mean", "time_to_full_top1_s"):
            assert key in out[name], (name, key)
        assert out[name]["seeds"] == [0, 1]
    assert out["full"]["top1_mean"] == pytest.approx(51.0)
    assert out["full"]["top1_sd"] == pytest.approx(math.sqrt(2.0))
    # two-stage mean curve: 46 at 30 s, 54 at 40 s -> reaches 51 at 36.25 s
    assert out["two-stage"]["time_to_full_top1_s"] == pytest.approx(36.25)
    assert out["frozen-naive"]["time_to_full_top1_s"] is None
    assert json.loads(json.dumps(out))  # plain JSON
    checks = {t["target"].split()[0]: t for t in verdict(out)}
    assert checks["method"]["met"] is True  # 50.5 >= 51 - 0.5
    by_target = verdict(out)
    # paired per seed: 51 - 50 = +1, 50 - 52 = -2; sd 2.12 / sqrt(2) = 1.50
    gap = "-0.50 points (per seed +1.00, -2.00; standard error 1.50)"
    assert by_target[0]["met"] is True and by_target[0]["value"] == gap
    assert by_target[1]["met"] is True and by_target[1]["value"] == "0.36x"
    assert by_target[2]["met"] is True and by_target[3]["met"] is True


# `--quick` takes ~5 min on an idle 2-core CPU; the cap leaves room for a loaded machine.
QUICK_DEMO_CAP_S = 1500


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path: Path) -> None:
    from launch.demo import EXPERIMENT, mlflow_run_names, prepare_inputs

    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "launch.demo", "--quick", "--out", str(out)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=QUICK_DEMO_CAP_S, check=False
        )
    except subprocess.TimeoutExpired as err:
        tail = (err.stdout or b"")[-3000:]
        pytest.fail(f"vivit demo --quick ran over {QUICK_DEMO_CAP_S}s; output tail:\n{tail!r}")
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "| two-stage |" in proc.stdout  # the table is printed as well as written
    assert "ETA" in proc.stdout  # a progress line per arm
    result = json.loads((out / "results.json").read_text())
    arms = result["arms"]
    assert list(arms) == list(ARMS)
    for name, arm in arms.items():
        assert arm["seeds"] == [0]
        assert 0 <= arm["top1_mean"] <= 100 and arm["top1_sd"] == 0.0
        assert arm["train_time_s_mean"] > 0 and arm["train_flops"] > 0
        assert "time_to_full_top1_s" in arm
        curve = arm["curve_mean"]
        points = [p for p in curve if p["top1_mean"] is not None]
        assert len(points) >= QUICK.eval_points, name
        times = [p["train_time_s"] for p in curve]
        assert times == sorted(times) and times[0] == 0.0
        assert arm["val_videos"] == QUICK.val_clips
    # the method's curve starts at stage 1's cost: its first stage-2 point lies beyond it
    method = arms["two-stage"]["curve_mean"]
    s1_end = max(p["train_time_s"] for p in method if p["stage"] == "two-stage-s1")
    s2 = [p for p in method if p["stage"] == "two-stage-s2"]
    assert s2 and all(p["train_time_s"] > s1_end for p in s2)
    assert arms["frozen-naive"]["frozen_params"] > 0 and arms["full"]["frozen_params"] == 0
    assert arms["full"]["train_flops"] > arms["frozen-naive"]["train_flops"]
    assert {t["target"] for t in result["verdict"]} and len(result["verdict"]) == 7
    assert result["cache"]["cache_speedup"] > 0 and result["cache"]["build_s"] > 0
    assert result["environment"]["git_commit"]
    md = (out / "results.md").read_text()
    assert md.count("| two-stage |") == 1 and "Against the targets" in md
    assert (out / "results.png").stat().st_size > 1000
    names = mlflow_run_names(result["tracking_uri"], EXPERIMENT)
    assert sorted(names) == sorted(
        f"quick/seed0/{r}"
        for r in (
            "full",
            "frozen-naive",
            "spatial-only",
            "two-stage-s1",
            "two-stage-s2",
            "two-stage-s2-cached",
        )
    )
    # a second run reuses the cached shards and spatial weights (same options, same key)
    cached = list((out / "cache").iterdir())
    assert len(cached) == 1
    weights = cached[0] / "spatial.safetensors"
    before = weights.stat().st_mtime_ns, (cached[0] / "synth" / "manifest.json").stat().st_mtime_ns
    data_root, again = prepare_inputs(QUICK, out / "cache", seed=0)
    assert again == weights and data_root == cached[0] / "synth"
    after = weights.stat().st_mtime_ns, (data_root / "manifest.json").stat().st_mtime_ns
    assert after == before


def test_two_stage_curve_starts_at_stage1_cost_on_either_clock() -> None:
    from launch.demo_results import arm_seed_result

    arm = Arm("two-stage", "", [Stage("s1", [], 10, "full", 2), Stage("s2", [], 4, "frozen", 8)])

    def summary(top1: float, wall: float, cpu: float, steps: int, curve: list) -> dict:
        return {
            "top1": top1,
            "top5": 90.0,
            "steps": steps,
            "train_time_s": wall,
            "train_cpu_s": cpu,
            "process_s": wall + 1,
            "step_time_median_s": 0.1,
            "peak_mem_bytes": 1,
            "trainable_params": 1,
            "frozen_params": 0,
            "curve": curve,
        }

    summaries = {
        "s1": summary(
            30.0,
            10.0,
            20.0,
            10,
            [{"step": 10, "top1": 30.0, "train_time_s": 10.0, "train_cpu_s": 20.0}],
        ),
        "s2": summary(
            40.0,
            4.0,
            6.0,
            4,
            [
                {"step": 2, "top1": 35.0, "train_time_s": 2.0, "train_cpu_s": 3.0},
                {"step": 4, "top1": 40.0, "train_time_s": 4.0, "train_cpu_s": 6.0},
            ],
        ),
    }
    flops = {"s1": 100, "s2": 10}
    wall = arm_seed_result(arm, summaries, flops, "wall")
    assert [p["train_time_s"] for p in wall["curve"]] == [0.0, 10.0, 12.0, 14.0]
    assert [p["flops"] for p in wall["curve"]] == [0.0, 1000.0, 1020.0, 1040.0]
    assert wall["train_time_s"] == 14.0 and wall["top1"] == 40.0
    cpu = arm_seed_result(arm, summaries, flops, "cpu")
    assert [p["train_time_s"] for p in cpu["curve"]] == [0.0, 20.0, 23.0, 26.0]
