"""`vivit demo --quick` end to end (real shards, DALI/PyAV, DeepSpeed, MLflow) and its recipes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import load_config
from launch.recipes import QUICK, ablation_arms, base_overrides, demo_arms


def _all_overrides(arms, tmp_path: Path) -> list[list[str]]:
    base = base_overrides(
        QUICK, tmp_path / "synth", tmp_path / "w.safetensors", 0, "sqlite:///x", "e"
    )
    return [base + stage.overrides for arm in arms for stage in arm.stages]


def test_every_arm_resolves_to_a_valid_config(tmp_path: Path) -> None:
    arms = demo_arms(QUICK, tmp_path / "runs") + ablation_arms(QUICK, tmp_path / "runs")
    for overrides in _all_overrides(arms, tmp_path):
        cfg = load_config(None, overrides)
        assert cfg.resume is None and cfg.seed == 0
    by_name = {arm.name: arm for arm in demo_arms(QUICK, tmp_path / "runs")}
    s1, s2 = (
        load_config(None, _all_overrides([by_name["two-stage"]], tmp_path)[i]) for i in (0, 1)
    )
    assert s1.mode == "full" and s2.mode == "frozen" and s2.adapter.kind == "attn"
    assert s1.data.frames * 4 >= s2.data.frames > s1.data.frames
    assert s2.temporal.init == "checkpoint" and s2.temporal.load_spatial
    assert Path(s2.temporal.checkpoint).name == "two-stage-s1"
    assert {arm.name for arm in ablation_arms(QUICK, tmp_path)} == {
        f"{a}/{i}" for a in ("none", "mlp", "attn") for i in ("random", "image", "stage-1")
    }


# `--quick` takes ~3-5 min on an idle 2-core CPU; the cap leaves room for a loaded machine.
QUICK_DEMO_CAP_S = 1500


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path: Path) -> None:
    from launch.demo import EXPERIMENT, mlflow_run_names

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
    result = json.loads((out / "results.json").read_text())
    rows = {row["arm"]: row for row in result["rows"]}
    assert list(rows) == ["full", "frozen-naive", "two-stage"]
    for row in rows.values():
        for key in (
            "top1",
            "top5",
            "train_time_s",
            "step_time_median_s",
            "peak_mem_bytes",
            "train_mem_bytes",
        ):
            assert math.isfinite(row[key]) and row[key] >= 0, (row["arm"], key, row[key])
        assert 0 <= row["top1"] <= row["top5"] <= 100
        assert row["val_videos"] == QUICK.val_clips
    # freezing is visible in the parameter counts; stage 1 + stage 2 are both counted
    assert rows["frozen-naive"]["trainable_params"] < rows["full"]["trainable_params"]
    assert rows["two-stage"]["frozen_params"] > 0 and rows["full"]["frozen_params"] == 0
    assert len(rows["two-stage"]["runs"]) == 2
    v = result["verdict"]
    assert math.isclose(
        v["time_ratio"], rows["two-stage"]["train_time_s"] / rows["full"]["train_time_s"]
    )
    # memory verdict: what training adds, max over both stages of the method
    assert v["mem_kind"] == "training-added"
    assert math.isclose(
        v["mem_ratio"], rows["two-stage"]["train_mem_bytes"] / rows["full"]["train_mem_bytes"]
    )
    assert (out / "results.md").read_text().count("| two-stage |") == 1
    assert (out / "results.png").stat().st_size > 1000
    # every stage is an MLflow run of one experiment in the store under the out dir
    names = mlflow_run_names(result["tracking_uri"], EXPERIMENT)
    assert sorted(names) == sorted(
        f"quick/{r}" for r in ("full", "frozen-naive", "two-stage-s1", "two-stage-s2")
    )
    assert result["tracking_uri"].endswith(str((out / "mlflow.db").resolve()))
    # a second run reuses the cached shards and spatial weights (same options, same key)
    from launch.demo import prepare_inputs

    cached = list((out / "cache").iterdir())
    assert len(cached) == 1
    weights = cached[0] / "spatial.safetensors"
    before = weights.stat().st_mtime_ns, (cached[0] / "synth" / "manifest.json").stat().st_mtime_ns
    data_root, again = prepare_inputs(QUICK, out / "cache", seed=0)
    assert again == weights and data_root == cached[0] / "synth"
    after = weights.stat().st_mtime_ns, (data_root / "manifest.json").stat().st_mtime_ns
    assert after == before


def _row(arm: str, top1: float, train_s: float, peak: float, train_mem: float) -> dict:
    return {
        "arm": arm,
        "top1": top1,
        "top1_se": 1.5,
        "top5": 90.0,
        "train_time_s": train_s,
        "wall_s": train_s + 10,
        "stage_step_times_s": [0.1],
        "peak_mem_bytes": peak,
        "train_mem_bytes": train_mem,
        "trainable_params": 1000,
    }


def test_verdict_judges_training_memory_and_is_not_fooled_by_process_size() -> None:
    from launch.demo import markdown_table, verdict

    mb = 2.0**20
    rows = [
        _row("full", 50.0, 100.0, 1500 * mb, 400 * mb),
        _row("frozen-naive", 40.0, 30.0, 1420 * mb, 100 * mb),
        _row("two-stage", 49.5, 45.0, 1450 * mb, 200 * mb),
    ]
    v = verdict(rows)
    assert v["mem_kind"] == "training-added" and math.isclose(v["mem_ratio"], 0.5)
    assert math.isclose(v["process_mem_ratio"], 1450 / 1500)
    assert v["accuracy_ok"] and v["naive_below"] and v["time_ok"] and v["mem_below"]
    table = markdown_table(rows, rows[0])
    assert "| two-stage | 49.50 (±1.50) |" in table and "0.45x | 0.50x |" in table
    # without a training-memory reading the verdict falls back to (and says) process peak
    for row in rows:
        row["train_mem_bytes"] = math.nan
    v = verdict(rows)
    assert v["mem_kind"] == "process peak" and not v["mem_below"]
    assert "n/a" in markdown_table(rows, rows[0])
    rows[2]["top1"] = 45.0  # 5 points below full: the accuracy target is missed
    assert not verdict(rows)["accuracy_ok"]
