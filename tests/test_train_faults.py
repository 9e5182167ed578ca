"""`vivit train` (in process, tiny config) survives bad data and a tracking outage, checks its
splits before training, and keeps its final checkpoint when the final evaluation fails."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from core.config import load_config
from launch.run import run_training
from tests.data_helpers import level, video_record, write_shard_set
from tests.tracking_helpers import BlackHole, mlflow_env_restored

CLASSES = list("abcd")


def _records(n: int, prefix: str = "c") -> list[tuple[str, dict[str, bytes]]]:
    return [
        (f"{prefix}{i}", video_record(np.full((6, 32, 32, 3), level(i % 4), np.uint8), i % 4))
        for i in range(n)
    ]


def _run(root: Path, out: Path, *extra: str) -> dict:
    cfg = load_config(
        "configs/tiny.yaml",
        [
            f"out_dir={out}",
            f"data.root={root}",
            "data.synthetic=false",
            "data.frames=4",
            "data.workers=0",
            "data.shuffle_buffer=4",
            "data.eval_clips=1",
            "data.decoder=dali",
            "train.steps=2",
            "train.micro_batch_size=2",
            "train.log_every=1",
            "train.progress=false",
            "optim.warmup_steps=1",
            "tracking.enabled=false",
            *extra,
        ],
    )
    return run_training(cfg)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    return write_shard_set(root, {"train": [_records(8)], "val": [_records(4, "v")]}, CLASSES)


def test_out_of_range_labels_do_not_stop_training(tmp_path: Path) -> None:
    bad = _records(8)
    for i in (1, 5):
        bad[i][1]["cls"] = b"999"
    bad[3][1]["cls"] = b"-1"
    splits = {"train": [bad], "val": [_records(4, "v")]}
    root = write_shard_set(tmp_path / "d", splits, CLASSES, flip_safe=False)
    summary = _run(root, tmp_path / "run", "train.steps=3")
    assert summary["steps"] == 3 and summary["bad_label_skipped"] >= 1
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["bad_label_skipped"] >= 1


def test_missing_val_split_fails_before_training(tmp_path: Path) -> None:
    root = write_shard_set(tmp_path / "d", {"train": [_records(8)]}, CLASSES)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="split 'val' \\(data.val_split\\)") as err:
        _run(root, out)
    assert str(root / "manifest.json") in str(err.value)
    assert not (out / "metrics.jsonl").exists(), "no step may run before the splits are checked"


def test_final_checkpoint_is_saved_before_the_final_eval(
    clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_eval(*args, **kwargs):
        raise RuntimeError("eval broke")

    monkeypatch.setattr("core.fit._Evaluator.__call__", broken_eval)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="eval broke"):
        _run(clean, out)
    assert (out / "checkpoints" / "step_0000002" / "meta.json").is_file()


def test_unreachable_tracking_server_does_not_hold_training(clean: Path, tmp_path: Path) -> None:
    server = BlackHole()
    try:
        with mlflow_env_restored():
            t0 = time.perf_counter()
            summary = _run(
                clean,
                tmp_path / "run",
                "tracking.enabled=true",
                f"tracking.uri=http://127.0.0.1:{server.port}",
                "tracking.timeout_s=2",
                "tracking.close_timeout_s=5",
            )
            wall = time.perf_counter() - t0
    finally:
        server.close()
    assert summary["steps"] == 2 and (tmp_path / "run" / "summary.json").is_file()
    assert wall < summary["wall_s"] + 10
    assert wall < 120


def test_tracking_start_runs_before_the_first_step(
    clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's start is setup: it ends before training time starts counting."""
    from core.tracking import Tracker
    from core.trainer import Trainer

    events: list[str] = []
    start, train_step = Tracker._start, Trainer.train_step

    def slow_start(self, *args, **kwargs):
        time.sleep(1.0)
        start(self, *args, **kwargs)
        events.append("tracking started")

    def first_step(self, *args, **kwargs):
        events.append("step")
        return train_step(self, *args, **kwargs)

    monkeypatch.setattr(Tracker, "_start", slow_start)
    monkeypatch.setattr(Trainer, "train_step", first_step)
    with mlflow_env_restored():
        _run(
            clean,
            tmp_path / "run",
            "tracking.enabled=true",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        )
    assert events[:2] == ["tracking started", "step"]
