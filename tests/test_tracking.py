"""A tracking outage never holds training: calls are queued, bounded in time, then dropped.

Two outages: a closed port (connection refused) and a server that accepts connections and
never answers (the case MLflow's default 120 s timeout x 7 retries turned into minutes).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.tracking import Tracker, TrackingConfig
from tests.tracking_helpers import BlackHole, closed_port, mlflow_env_restored


@pytest.fixture(autouse=True)
def _restore_env() -> Iterator[None]:
    with mlflow_env_restored():
        yield


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    server = BlackHole()
    yield server
    server.close()


def _use_tracker(uri: str, run_dir: Path) -> float:
    """Seconds the training side spends in tracking calls for a short run."""
    import mlflow.tracking.context  # noqa: F401 (the import is not what is timed)

    cfg = TrackingConfig(uri=uri, timeout_s=1, max_retries=0, close_timeout_s=3)
    t0 = time.perf_counter()
    tracker = Tracker(cfg, run_dir, enabled=True)
    tracker.log_params({"a": 1, "b": "x"})
    for step in range(200):
        tracker.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    assert time.perf_counter() - t0 < 2.0, "tracking calls held the step loop"
    tracker.log_artifact(run_dir / "config.yaml")
    tracker.close("FINISHED")
    return time.perf_counter() - t0


def _bounded(uri: str, run_dir: Path, limit: float) -> float:
    box: dict = {}

    def run() -> None:
        try:
            box["s"] = _use_tracker(uri, run_dir)
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"tracking blocked for more than {limit} s"
    if "error" in box:
        raise box["error"]
    return box["s"]


def test_closed_port_does_not_block(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "config.yaml").write_text("mode: frozen\n")
    with caplog.at_level(logging.WARNING, logger="core.tracking"):
        spent = _bounded(f"http://127.0.0.1:{closed_port()}", tmp_path, 20)
    assert spent < 10
    assert "training goes on" in caplog.text


def test_server_that_never_answers_does_not_block(
    tmp_path: Path, black_hole: BlackHole, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "config.yaml").write_text("mode: frozen\n")
    with caplog.at_level(logging.WARNING, logger="core.tracking"):
        spent = _bounded(f"http://127.0.0.1:{black_hole.port}", tmp_path, 20)
    assert spent < 10
    assert "MLflow" in caplog.text


def test_timeouts_default_short_but_user_setting_wins(tmp_path: Path) -> None:
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "5"
    tracker = Tracker(
        TrackingConfig(uri=f"http://127.0.0.1:{closed_port()}", close_timeout_s=0), tmp_path, True
    )
    tracker.close()
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"


def test_sqlite_store_records_the_run(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("mode: frozen\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(TrackingConfig(uri=uri, experiment="t"), run_dir, enabled=True)
    tracker.log_params({"mode": "frozen"})
    tracker.log_metrics({"loss": 0.5, "top1": 12.5}, step=3)
    tracker.log_artifact(run_dir / "config.yaml")
    tracker.close("FINISHED")
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params == {"mode": "frozen"} and run.data.metrics["top1"] == 12.5
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["config.yaml"]
    assert (run_dir / "mlflow_run_id").read_text() == run.info.run_id


def test_worker_outliving_close_ends_cleanly(tmp_path: Path, black_hole: BlackHole) -> None:
    """close() gives up on a server that never answers; the worker still ends without error."""
    errors: list[BaseException] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        cfg = TrackingConfig(
            uri=f"http://127.0.0.1:{black_hole.port}",
            timeout_s=1,
            max_retries=0,
            close_timeout_s=0.2,
        )
        tracker = Tracker(cfg, tmp_path, enabled=True)
        tracker.log_metrics({"loss": 1.0}, step=0)
        tracker.close("FINISHED")
        worker = tracker._thread
        assert worker.is_alive(), "the worker was meant to outlive close() here"
        worker.join(30)
        assert not worker.is_alive()
    finally:
        threading.excepthook = previous
    assert errors == [], f"tracking worker died with {errors!r}"


def _slow_start(monkeypatch: pytest.MonkeyPatch, seconds: float, fail: bool = False) -> list:
    """Replace MLflow's start with a sleep (then a failure if `fail`); the list records its end."""
    ended: list[float] = []

    def start(self, cfg, run_dir) -> None:
        time.sleep(seconds)
        ended.append(time.perf_counter())
        if fail:
            raise ConnectionError("no server")

    monkeypatch.setattr(Tracker, "_start", start)
    return ended


def test_settle_waits_for_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ended = _slow_start(monkeypatch, 0.5)
    t0 = time.perf_counter()
    tracker = Tracker(TrackingConfig(close_timeout_s=0), tmp_path, enabled=True)
    assert tracker.settle(10)
    assert ended, "settle returned before the start had ended"
    assert time.perf_counter() - t0 >= 0.5
    tracker._dead = True  # no MLflow behind the fake start: close() must not call it
    tracker.close()


def test_settle_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ended = _slow_start(monkeypatch, 2.0)
    tracker = Tracker(TrackingConfig(close_timeout_s=0), tmp_path, enabled=True)
    t0 = time.perf_counter()
    assert not tracker.settle(0.2)
    assert time.perf_counter() - t0 < 1.5 and not ended
    tracker._dead = True
    tracker.close()


def test_settle_returns_once_tracking_gave_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _slow_start(monkeypatch, 0.0, fail=True)
    tracker = Tracker(TrackingConfig(close_timeout_s=0), tmp_path, enabled=True)
    t0 = time.perf_counter()
    assert tracker.settle(5)
    assert time.perf_counter() - t0 < 2 and not tracker.active
    tracker.close()


def test_settle_is_not_an_mlflow_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Failures in a row still end tracking with a settle between them."""
    _slow_start(monkeypatch, 0.0)
    tracker = Tracker(TrackingConfig(close_timeout_s=0), tmp_path, enabled=True)
    assert tracker.settle(5)

    def broken() -> None:
        raise ConnectionError("no server")

    for _ in range(2):
        tracker._submit("log_metrics", broken)
    assert tracker.settle(5) and tracker.active
    tracker._submit("log_metrics", broken)
    assert tracker.settle(5)
    assert not tracker.active, "the third failure in a row ends tracking"
    tracker.close()
