"""The training time a run reports excludes evaluation, at every eval point and at the end."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from core.fit import fit
from core.tracking import Tracker
from core.trainer import Trainer
from tests.engine_helpers import NUM_CLASSES, metrics_rows, tiny_config
from tests.tensor_batches import TensorBatches

EVAL_SLEEP_S = 3.0


class SlowEval:
    """One tiny multi-view batch, after a pause far longer than the training steps."""

    num_classes = NUM_CLASSES

    def __iter__(self):
        time.sleep(EVAL_SLEEP_S)
        yield torch.zeros(2, 1, 4, 3, 32, 32), torch.tensor([0, 1])

    def stats(self) -> dict[str, float]:
        return {}


def test_eval_time_is_not_training_time(tmp_path: Path) -> None:
    # eval at step 2 falls inside a logging window (log_every=3): the case that counted the
    # evaluation as training time and made the time-to-accuracy curve run backwards
    cfg = tiny_config(
        "train.steps=6", "train.eval_every=2", "train.log_every=3", f"out_dir={tmp_path}"
    )
    trainer = Trainer(cfg, num_classes=NUM_CLASSES)
    source = TensorBatches(NUM_CLASSES, 4, 4, 32, seed=0)
    summary = fit(cfg, trainer, source, SlowEval)
    records = metrics_rows(tmp_path)
    evals = [r for r in records if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [2, 4, 6]  # 6: the final evaluation
    times = [r["train_time_s"] for r in evals] + [summary["train_time_s"]]
    assert times == sorted(times), times
    assert summary["train_time_s"] < EVAL_SLEEP_S, summary["train_time_s"]


DATA_SLEEP_S = 0.05


class SlowData(TensorBatches):
    """In-memory batches that each take `DATA_SLEEP_S` to arrive, and a source counter named
    like the trainer's own per-step figure (as the prefetching sources once had)."""

    def batches(self, start_step, position=None):
        for batch in super().batches(start_step, position):
            time.sleep(DATA_SLEEP_S)
            yield batch

    def stats(self) -> dict[str, float]:
        return {"data_wait_s": 1e6, "batches_served": float(self.served)}


def test_logged_data_wait_is_the_step_s_own(tmp_path: Path) -> None:
    cfg = tiny_config("train.steps=4", "train.log_every=2", f"out_dir={tmp_path}")
    trainer = Trainer(cfg, num_classes=NUM_CLASSES)
    fit(cfg, trainer, SlowData(NUM_CLASSES, 4, 4, 32, seed=0), SlowEval)
    records = metrics_rows(tmp_path)
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [2, 4]
    for r in steps:  # per step: at least the sleep, never more than the whole step
        assert DATA_SLEEP_S * 0.9 <= r["data_wait_s"] <= r["step_time_s"], r
        assert r["batches_served"] >= r["step"], r  # the source's counters are still logged


def test_the_training_stream_starts_before_mlflow_is_waited_for(tmp_path, monkeypatch) -> None:
    """The source is asked for its stream before the run waits for MLflow to start, so its
    first batches are prepared during start-up, not inside the first step's time."""
    events: list[str] = []

    class Recording(TensorBatches):
        def batches(self, start_step, position=None):
            events.append("batches")
            return super().batches(start_step, position)

    settle = Tracker.settle

    def recording_settle(self, timeout_s):
        events.append("settle")
        return settle(self, timeout_s)

    monkeypatch.setattr(Tracker, "settle", recording_settle)
    cfg = tiny_config("train.steps=2", f"out_dir={tmp_path}")
    fit(
        cfg,
        Trainer(cfg, num_classes=NUM_CLASSES),
        Recording(NUM_CLASSES, 4, 4, 32, seed=0),
        SlowEval,
    )
    assert events == ["batches", "settle"]
