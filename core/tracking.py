"""MLflow tracking on rank 0; a tracking failure warns and training goes on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrackingConfig:
    """MLflow run settings (rank 0 only)."""

    enabled: bool = True
    experiment: str = "frozen-vivit"
    run_name: str | None = None
    """None: the run directory's name."""
    uri: str | None = None
    """None: `$MLFLOW_TRACKING_URI` if set, else a local store `<out_dir>/../mlruns`."""
