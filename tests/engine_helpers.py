"""Tiny-config trainers for engine tests (real DeepSpeed engine on CPU, gloo, one rank)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.config import ExperimentConfig, load_config
from core.trainer import Trainer

NUM_CLASSES = 4


def tiny_config(*overrides: str) -> ExperimentConfig:
    return load_config(
        "configs/tiny.yaml",
        [
            "tracking.enabled=false",
            "train.steps=20",
            "optim.warmup_steps=2",
            "train.micro_batch_size=4",
            "data.frames=4",
            # fp32 everywhere: these tests assert fp32 semantics (e.g. every weight moves after a
            # few steps, below bf16's resolution); GPU tests ask for `engine.precision=auto`.
            "engine.precision=fp32",
            *overrides,
        ],
    )


def tiny_trainer(*overrides: str) -> Trainer:
    return Trainer(tiny_config(*overrides), num_classes=NUM_CLASSES)


def metrics_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of a run's `metrics.jsonl`; a line that is not JSON fails the test."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
