"""A run's life outside the step loop: SIGTERM ends the MLflow run as KILLED; a resume refused
for a changed config leaves the run directory's config.yaml as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.data_helpers import write_shard_set
from tests.test_train_faults import CLASSES, _records, _run

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("life")
    return write_shard_set(root, {"train": [_records(8)], "val": [_records(4, "v")]}, CLASSES)


def _logged_steps(metrics: Path) -> int:
    if not metrics.is_file():
        return 0
    return sum(1 for line in metrics.read_text().splitlines() if '"loss"' in line)


def test_sigterm_ends_the_mlflow_run_as_killed(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": "", "PYTHONPATH": str(REPO)}
    args = [
        "configs/tiny.yaml",
        f"out_dir={out}",
        f"data.root={shards}",
        "data.synthetic=false",
        "data.frames=4",
        "data.workers=0",
        "data.shuffle_buffer=4",
        "data.decoder=dali",
        "train.steps=100000",
        "train.micro_batch_size=2",
        "train.log_every=1",
        "train.progress=false",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch.cli", "train", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while _logged_steps(out / "metrics.jsonl") < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "training never logged a step"
            time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = (out / "mlflow_run_id").read_text().strip()
    assert client.get_run(run_id).info.status == "KILLED"


def test_resume_refused_for_changed_config_keeps_config_yaml(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run(shards, out, "train.steps=2")
    before = (out / "config.yaml").read_text()
    from core.configtools import ConfigError

    with pytest.raises(ConfigError) as err:
        _run(shards, out, "train.steps=4", "adapter.kind=mlp", "optim.lr=0.01")
    text = str(err.value)
    assert "adapter.kind" in text and "'attn' -> 'mlp'" in text and "optim.lr" in text
    assert "resume=none" in text and str(out) in text
    assert (out / "config.yaml").read_text() == before


def test_resume_with_operational_changes_continues(shards: Path, tmp_path: Path) -> None:
    """More steps, other logging or tracking settings are not a changed experiment."""
    out = tmp_path / "run"
    _run(shards, out, "train.steps=2")
    summary = _run(shards, out, "train.steps=3", "train.log_every=2", "data.workers=1")
    assert summary["steps"] == 3
    assert "steps: 3" in (out / "config.yaml").read_text()
    assert json.loads((out / "summary.json").read_text())["steps"] == 3
