"""`vivit train` end to end on the tiny config: synthetic VP9 shards -> DALI (cpu) -> model ->
DeepSpeed -> eval -> run directory + MLflow; resume=auto; `vivit eval`; two launcher ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine_helpers import metrics_rows
from tests.test_distributed import deepspeed_launch

REPO = Path(__file__).resolve().parent.parent
SUMMARY_KEYS = {
    "mode",
    "spatial_model",
    "frames",
    "top1",
    "top5",
    "steps",
    "step_time_median_s",
    "clips_per_s",
    "peak_mem_bytes",
    "trainable_params",
    "frozen_params",
    "wall_s",
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("synth")
    make_synthetic(
        root, clips=48, val_clips=16, frames=8, size=32, seed=0, codec="vp9", objects_dir=None
    )
    return root


def vivit(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "launch.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"vivit {' '.join(args)} failed:\n{proc.stderr[-4000:]}"
    return proc


def tiny_args(shards: Path, out: Path, *extra: str) -> list[str]:
    return [
        "configs/tiny.yaml",
        f"out_dir={out}",
        f"data.root={shards}",
        "data.synthetic=false",
        "train.steps=6",
        "train.log_every=2",
        "optim.warmup_steps=2",
        "data.frames=4",
        "train.micro_batch_size=4",
        "train.progress=false",
        *extra,
    ]


@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_train_writes_run_directory(shards: Path, tmp_path: Path, mode: str) -> None:
    out = tmp_path / "run"
    vivit("train", *tiny_args(shards, out, f"mode={mode}"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary.keys() >= SUMMARY_KEYS
    assert summary["mode"] == mode and summary["steps"] == 6 and summary["frames"] == 4
    assert 0.0 <= summary["top1"] <= summary["top5"] <= 100.0
    assert summary["step_time_median_s"] > 0 and summary["peak_mem_bytes"] > 0
    assert (summary["frozen_params"] > 0) == (mode == "frozen")
    assert (out / "config.yaml").read_text().startswith(f"mode: {mode}")
    records = metrics_rows(out)
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [2, 4, 6] and all(r["loss"] > 0 for r in records if "loss" in r)
    assert any(r.get("event") == "eval" for r in records)
    ckpt = out / "checkpoints" / "step_0000006"
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["step"] == 6 and meta["mode"] == mode

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    assert runs[0].data.params["mode"] == mode
    assert runs[0].data.metrics["top1"] == pytest.approx(summary["top1"])


def test_resume_auto_continues_and_eval_reproduces(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    vivit("train", *tiny_args(shards, out, "mode=frozen", "train.ckpt_every=3", "train.steps=3"))
    vivit("train", *tiny_args(shards, out, "mode=frozen", "train.steps=6"))
    records = metrics_rows(out)
    loss_steps = [r["step"] for r in records if "loss" in r]
    assert loss_steps == [2, 3, 4, 6], "the second run must continue at step 4, not restart"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6

    result = vivit(
        "eval",
        "configs/tiny.yaml",
        f"checkpoint={out}",
        f"data.root={shards}",
        "data.frames=4",
        "data.synthetic=false",
    )
    evaluated = json.loads(result.stdout.strip().splitlines()[-1])
    assert evaluated["top1"] == pytest.approx(summary["top1"])
    assert evaluated["val_videos"] == summary["val_videos"]


def test_bad_override_is_named(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "launch.cli", "train", "configs/tiny.yaml", "adapter.knd=mlp"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "adapter.knd" in proc.stderr and "did you mean 'kind'" in proc.stderr


def test_tracking_failure_does_not_stop_training(shards: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the MLflow store's folder should be")
    out = tmp_path / "run"
    proc = vivit(
        "train", *tiny_args(shards, out, "train.steps=2", f"tracking.uri=sqlite:///{blocker}/x.db")
    )
    assert "MLflow" in proc.stderr and "training goes on" in proc.stderr
    assert json.loads((out / "summary.json").read_text())["steps"] == 2


@pytest.mark.distributed
def test_deepspeed_launcher_two_cpu_ranks(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    deepspeed_launch(
        "launch/train.py", *tiny_args(shards, out, "train.steps=3", "engine.zero_stage=2")
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    assert summary["val_videos"] == 16, "each val video evaluated exactly once across ranks"
