"""Save at step k, resume in a fresh engine: the next losses equal an uninterrupted run's."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.checkpoint import latest_checkpoint, resume_checkpoint, save_checkpoint
from tests.engine_helpers import NUM_CLASSES, tiny_trainer
from tests.tensor_batches import TensorBatches

TOTAL, SPLIT = 6, 3


def _losses(trainer, start: int, stop: int, accum: int) -> list[float]:
    source = TensorBatches(NUM_CLASSES, 4, 4, 32, grad_accum=accum, seed=3)
    stream = source.batches(start)
    out = []
    while trainer.step < stop:
        out.append(float(trainer.train_step(*next(stream))))
    return out


@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_resume_continues_exactly(tmp_path: Path, mode: str) -> None:
    overrides = (
        f"mode={mode}",
        "adapter.kind=attn",
        "train.grad_accum=2",
        f"train.steps={TOTAL}",
        "engine.zero_stage=2",
    )
    reference = _losses(tiny_trainer(*overrides), 0, TOTAL, 2)

    first = tiny_trainer(*overrides)
    head = _losses(first, 0, SPLIT, 2)
    meta = {"mode": mode, "spatial_weights": None}
    saved = save_checkpoint(first.engine, tmp_path, first.step, meta, rank=0, keep=2)
    assert latest_checkpoint(tmp_path) == saved
    assert not list((tmp_path / "checkpoints").glob("*.tmp")), "temporary folder left behind"

    second = tiny_trainer(*overrides)
    second.step = resume_checkpoint(second.engine, saved, rank=0)
    assert second.step == SPLIT
    tail = _losses(second, SPLIT, TOTAL, 2)

    assert head == reference[: len(head)]
    assert tail == pytest.approx(reference[len(head) :], rel=0, abs=1e-6)


def test_frozen_checkpoint_holds_only_trainable_weights(tmp_path: Path) -> None:
    from safetensors import safe_open

    trainer = tiny_trainer("mode=frozen")
    _losses(trainer, 0, 1, 1)
    saved = save_checkpoint(
        trainer.engine, tmp_path, 1, {"mode": "frozen", "spatial_weights": None}, 0, 2
    )
    with safe_open(str(saved / "model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    assert keys and all(k.startswith("temporal_head.") for k in keys)


def test_incomplete_checkpoint_is_ignored(tmp_path: Path) -> None:
    trainer = tiny_trainer("mode=frozen")
    _losses(trainer, 0, 1, 1)
    good = save_checkpoint(
        trainer.engine, tmp_path, 1, {"mode": "frozen", "spatial_weights": None}, 0, 2
    )
    crashed = tmp_path / "checkpoints" / "step_0000002.tmp"
    crashed.mkdir()
    (crashed / "model.safetensors").write_bytes(b"half")
    assert latest_checkpoint(tmp_path) == good
