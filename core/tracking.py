"""MLflow tracking on rank 0; a tracking failure warns and training goes on."""

from __future__ import annotations

import logging
import os
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


log = logging.getLogger(__name__)


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
    """MLflow run of one training run; every call is best-effort (a failure warns once per kind).

    Only rank 0 creates one; other ranks get a disabled tracker. A resumed run continues the
    MLflow run whose id was stored in the run directory.
    """

    def __init__(self, cfg: TrackingConfig, run_dir: Path, enabled: bool) -> None:
        self._mlflow: Any = None
        self._warned: set[str] = set()
        if not (cfg.enabled and enabled):
            return
        self._guard("start", lambda: self._start(cfg, run_dir))

    @property
    def active(self) -> bool:
        return self._mlflow is not None

    def _start(self, cfg: TrackingConfig, run_dir: Path) -> None:
        import mlflow

        uri = cfg.uri or default_uri(run_dir)
        mlflow.set_tracking_uri(uri)
        if mlflow.get_experiment_by_name(cfg.experiment) is None:
            mlflow.create_experiment(cfg.experiment, artifact_location=_artifact_root(uri, run_dir))
        mlflow.set_experiment(cfg.experiment)
        id_file = run_dir / "mlflow_run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        run = mlflow.start_run(
            run_id=run_id, run_name=None if run_id else (cfg.run_name or run_dir.name)
        )
        id_file.write_text(run.info.run_id)
        self._mlflow = mlflow

    def _guard(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as err:  # tracking must never stop training
            if what not in self._warned:
                log.warning("MLflow %s failed (training goes on): %s", what, err)
                self._warned.add(what)
            if what == "start":
                self._mlflow = None

    def log_params(self, params: dict[str, Any]) -> None:
        if self.active:
            clean = {k: str(v)[:500] for k, v in params.items()}
            self._guard("log_params", lambda: self._mlflow.log_params(clean))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.active:
            finite = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            self._guard("log_metrics", lambda: self._mlflow.log_metrics(finite, step=step))

    def log_artifact(self, path: Path) -> None:
        if self.active and path.exists():
            self._guard("log_artifact", lambda: self._mlflow.log_artifact(str(path)))

    def close(self, status: str = "FINISHED") -> None:
        if self.active:
            self._guard("end", lambda: self._mlflow.end_run(status=status))
            self._mlflow = None
