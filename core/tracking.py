"""MLflow tracking on rank 0, off the step loop: a tracking outage warns and training goes on.

Every MLflow call runs on one background thread fed by a bounded queue, so the step loop only
enqueues. A remote server gets short HTTP timeouts and one retry (MLflow's defaults, 120 s and
7 retries with backoff, held a dead server for minutes). The tracker gives up for the rest of
the run when the start fails or 3 calls in a row fail, and the end of the run waits at most
`tracking.close_timeout_s` for what is queued. `metrics.jsonl` in the run directory holds
every logged number whatever MLflow does.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class TrackingConfig:
    """MLflow run settings (rank 0 only)."""

    enabled: bool = True
    """Log params, metrics and artifacts to MLflow."""
    experiment: str = "frozen-vivit"
    """MLflow experiment name."""
    run_name: str | None = None
    """None: the run directory's name."""
    uri: str | None = None
    """None: `$MLFLOW_TRACKING_URI` if set, else SQLite `<out_dir>/../mlflow.db`."""
    timeout_s: int = 10
    """HTTP timeout per request to a tracking server (unless `$MLFLOW_HTTP_REQUEST_TIMEOUT`)."""
    max_retries: int = 1
    """HTTP retries per request (unless `$MLFLOW_HTTP_REQUEST_MAX_RETRIES`)."""
    close_timeout_s: float = 60.0
    """How long the end of a run waits for queued tracking calls before dropping them."""

    def __post_init__(self) -> None:
        if self.timeout_s < 1:
            raise ValueError(f"tracking.timeout_s must be >= 1, got {self.timeout_s}")
        if self.max_retries < 0:
            raise ValueError(f"tracking.max_retries must be >= 0, got {self.max_retries}")
        if self.close_timeout_s < 0:
            raise ValueError(f"tracking.close_timeout_s must be >= 0, got {self.close_timeout_s}")


log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000
"""Calls waiting for MLflow; beyond this they are dropped (with a warning) rather than block."""
MAX_FAILURES = 3
"""Consecutive failed calls after which tracking is off for the rest of the run."""
_SETTLE = "settle"
"""A marker call: runs even after tracking gave up (so `settle` never waits for nothing) and
does not count as an MLflow call that succeeded."""


def default_uri(run_dir: Path) -> str:
    """`$MLFLOW_TRACKING_URI`, else a SQLite store beside the run directory (shared by sibling
    runs, so `mlflow ui --backend-store-uri sqlite:///<parent>/mlflow.db` shows them together).

    MLflow 3 refuses new plain-file stores unless told otherwise; SQLite needs no server.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{run_dir.resolve().parent / 'mlflow.db'}"


def _artifact_root(uri: str, run_dir: Path) -> str | None:
    """Artifacts of a local SQLite store live beside it (MLflow's default is relative to cwd)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


class Tracker:
    """MLflow run of one training run; every call is queued and best-effort.

    Only rank 0 creates one; other ranks get a disabled tracker. A resumed run continues the
    MLflow run whose id was stored in the run directory.
    """

    def __init__(self, cfg: TrackingConfig, run_dir: Path, enabled: bool) -> None:
        self._queue: queue.Queue | None = None
        self._warned: set[str] = set()
        self._client: Any = None
        self._run_id: str | None = None
        self._failures = 0
        self._dead = False
        self._closing = threading.Event()
        self._close_timeout = cfg.close_timeout_s
        if not (cfg.enabled and enabled):
            return
        import mlflow.entities  # noqa: F401 (on this thread: a concurrent first import races)
        import mlflow.tracking.context  # noqa: F401

        # MLflow reads these per request; a user's own setting wins.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(cfg.timeout_s))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(cfg.max_retries))
        self._queue = queue.Queue(maxsize=QUEUE_SIZE)
        # The worker keeps its own reference: close() drops `self._queue` while a slow
        # worker may still be draining it.
        self._thread = threading.Thread(
            target=self._work, args=(self._queue,), name="mlflow-tracker", daemon=True
        )
        self._submit("start", lambda: self._start(cfg, run_dir))
        self._thread.start()

    @property
    def active(self) -> bool:
        """True while calls are still accepted (not disabled, not given up, not closed)."""
        return self._queue is not None and not self._dead and not self._closing.is_set()

    def _start(self, cfg: TrackingConfig, run_dir: Path) -> None:
        from mlflow import MlflowClient
        from mlflow.tracking.context import registry

        uri = cfg.uri or default_uri(run_dir)
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(cfg.experiment)
        if experiment is None:
            experiment_id = client.create_experiment(
                cfg.experiment, artifact_location=_artifact_root(uri, run_dir)
            )
        else:
            experiment_id = experiment.experiment_id
        id_file = run_dir / "mlflow_run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        if run_id:
            client.update_run(run_id, status="RUNNING")
        else:
            tags = registry.resolve_tags({})
            run = client.create_run(experiment_id, run_name=cfg.run_name or run_dir.name, tags=tags)
            run_id = run.info.run_id
            id_file.write_text(run_id)
        self._client, self._run_id = client, run_id

    def _warn_once(self, what: str, message: str, *args: Any) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(message, *args)

    def _submit(self, what: str, fn: Callable[[], None]) -> None:
        if not self.active:
            return
        try:
            self._queue.put_nowait((what, fn))
        except queue.Full:
            self._warn_once("full", "MLflow is not keeping up: dropping tracking calls (%s)", what)

    def _work(self, calls: queue.Queue) -> None:
        while True:
            try:
                what, fn = calls.get(timeout=0.2)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            if what == _SETTLE:  # not an MLflow call: neither skipped nor a success
                fn()
                continue
            if self._dead:
                continue
            try:
                fn()
                self._failures = 0
            except Exception as err:  # tracking must never stop training
                self._failures += 1
                self._warn_once(what, "MLflow %s failed (training goes on): %s", what, err)
                if what == "start" or self._failures >= MAX_FAILURES:
                    self._dead = True
                    log.warning("MLflow tracking is off for the rest of this run")

    def settle(self, timeout_s: float) -> bool:
        """Wait, at most `timeout_s`, until every call queued so far has run or failed; True
        if it did in time.

        For the start of a run: MLflow's start (SQLite schema checks, creating the run) is
        about a second of Python holding the GIL, and left in the background it runs inside
        the first training steps and is counted as training time.
        """
        if not self.active:
            return True
        done = threading.Event()
        self._submit(_SETTLE, done.set)
        return done.wait(timeout_s)

    def log_params(self, params: dict[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import Param

        clean = [Param(k, str(v)[:500]) for k, v in params.items()]
        self._submit("log_params", lambda: self._client.log_batch(self._run_id, params=clean))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.active:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        self._submit("log_metrics", lambda: self._client.log_batch(self._run_id, metrics=rows))

    def log_artifact(self, path: Path) -> None:
        if path.exists():
            self._submit("log_artifact", lambda: self._client.log_artifact(self._run_id, str(path)))

    def close(self, status: str = "FINISHED") -> None:
        """End the MLflow run; waits at most `close_timeout_s`, then drops what is left."""
        if self._queue is None:
            return
        self._submit("end", lambda: self._client.set_terminated(self._run_id, status=status))
        self._closing.set()
        self._thread.join(self._close_timeout)
        if self._thread.is_alive():
            log.warning(
                "MLflow did not answer within %.0f s: %d tracking call(s) dropped "
                "(metrics.jsonl in the run directory has every logged number)",
                self._close_timeout,
                self._queue.qsize() + 1,
            )
        self._queue = None
