"""The time-to-accuracy curve's x axis: an evaluation's `train_time_s` is the training time
before it, so the time an evaluation takes is in no point of the curve."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from core.config import load_config
from core.fit import _train_loop
from core.rundir import MetricsLog
from core.tracking import Tracker

STEP_S, EVAL_S = 0.02, 0.3


class _Trainer:
    rank, world_size, device, lr = 0, 1, torch.device("cpu"), 1e-3

    def __init__(self) -> None:
        self.step = 0

    def train_step(self, frames, labels) -> torch.Tensor:
        time.sleep(STEP_S)
        self.step += 1
        return torch.ones(())


class _Source:
    def batches(self, start_step: int = 0):
        while True:
            yield torch.zeros(1), torch.zeros(1, dtype=torch.long)

    def stats(self) -> dict:
        return {}


def test_eval_points_exclude_the_evaluations_own_time(tmp_path: Path) -> None:
    cfg = load_config(
        "configs/tiny.yaml",
        [
            f"out_dir={tmp_path}",
            "train.steps=6",
            "train.log_every=1",
            "train.eval_every=2",
            "train.ckpt_every=0",
            "train.progress=false",
            "train.grad_accum=1",
        ],
    )
    metrics = MetricsLog(tmp_path / "metrics.jsonl", enabled=True)
    tracker = Tracker(cfg.tracking, tmp_path, enabled=False)
    evals = []

    def evaluator() -> dict:
        evals.append(1)
        time.sleep(EVAL_S)  # slower than all the training steps together
        return {"top1": 1.0}

    _, result = _train_loop(cfg, _Trainer(), _Source(), 0, metrics, tracker, evaluator)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    points = [r["train_time_s"] for r in records if r.get("event") == "eval"]
    assert len(evals) == len(points) == 2  # steps 2 and 4 (the last step's eval is fit's)
    times = [*points, result["train_time_s"]]
    assert times == sorted(times), times
    assert result["train_time_s"] < 6 * STEP_S + EVAL_S  # no evaluation inside
    assert points[0] < 2 * STEP_S + EVAL_S / 2 and points[1] < 4 * STEP_S + EVAL_S / 2
