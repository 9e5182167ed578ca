"""The experiment config: composes each component's own dataclass; YAML in, YAML out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from core.adapter import AdapterConfig
from core.configtools import ConfigError, apply_overrides, from_dict, load_yaml
from core.engine import EngineConfig
from core.optim import OptimConfig
from core.shipped import CONFIGS, shipped_names, shipped_path
from core.spatial import SpatialConfig
from core.temporal import TemporalConfig
from core.tracking import TrackingConfig
from core.train_config import TrainConfig
from data.config import DataConfig


@dataclass
class ExperimentConfig:
    """Everything one `vivit train` run needs."""

    mode: Literal["full", "frozen"] = "frozen"
    """`full`: fine-tune everything (ViViT-FE baseline); `frozen`: freeze the spatial transformer."""
    seed: int = 0
    """Seeds weight init (same on every rank), the data order and the synthetic set."""
    out_dir: str = "runs/default"
    """Run directory: config.yaml, metrics.jsonl, summary.json, checkpoints/."""
    resume: str | None = "auto"
    """`auto`: newest complete checkpoint in out_dir if any; a checkpoint path; or none."""
    spatial: SpatialConfig = field(default_factory=SpatialConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if self.temporal.init == "image" and self.temporal.width not in (None,):
            raise ValueError(
                "temporal.init=image copies spatial blocks: leave temporal.width unset"
            )
        if self.resume is not None and self.resume.lower() == "none":
            self.resume = None
        if self.data.cache and self.mode != "frozen":
            raise ValueError(
                f"data.cache holds tokens of a frozen spatial transformer: it needs mode=frozen "
                f"(mode is {self.mode})"
            )
        if self.data.cache and self.data.repeat_aug > 1:
            raise ValueError(
                "data.repeat_aug draws clips from decoded videos; data.cache trains from stored "
                f"views: set data.repeat_aug=1 (it is {self.data.repeat_aug})"
            )
        if self.train.micro_batch_size % self.data.repeat_aug:
            raise ValueError(
                f"train.micro_batch_size ({self.train.micro_batch_size}) must be a multiple of "
                f"data.repeat_aug ({self.data.repeat_aug}): each video gives that many clips"
            )
        if self.adapter.kind == "attn" and self.spatial.patch_tokens == "none":
            raise ValueError(
                "adapter.kind=attn attends over patch tokens: spatial.patch_tokens=none leaves "
                "it none (use whole or pooled, or adapter.kind none/mlp)"
            )


def resolve_config_path(path: str | Path) -> Path:
    """An experiment YAML as given (cwd first), else the packaged `configs/` copy."""
    found = shipped_path(path, CONFIGS)
    if found is None:
        known = ", ".join(f"configs/{n}" for n in shipped_names(CONFIGS, ".yaml"))
        raise ConfigError(f"config file not found: {path} (shipped: {known})")
    return found


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read YAML (or start from defaults), apply `a.b=value` overrides, validate."""
    data = load_yaml(resolve_config_path(path)) if path is not None else {}
    apply_overrides(data, list(overrides or []), ExperimentConfig)
    return from_dict(ExperimentConfig, data)


__all__ = ["ConfigError", "ExperimentConfig", "load_config"]
