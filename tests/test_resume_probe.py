"""Issue 11 item 8, probed through the real loader: a run stopped after its step-2 checkpoint
and resumed must log the same losses for steps 3-4 as an uninterrupted run.

Known open: the training stream is re-seeded from the resume step, so the resumed run sees
other clips. The fix (the data position in the checkpoint) belongs to the seeding and
data-path work; this probe is expected to fail until it lands, and then reports XPASS.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.data_helpers import write_shard_set
from tests.test_train_faults import CLASSES, _records, _run

STEPS = ("train.steps=4", "train.ckpt_every=2")


class _Killed(Exception):
    """Stands in for SIGKILL right after a checkpoint is complete."""


def _losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.xfail(reason="issue 11 item 8: exact resume is not implemented yet", strict=False)
def test_resume_through_the_loader_is_exact(tmp_path: Path, monkeypatch) -> None:
    root = write_shard_set(
        tmp_path / "d", {"train": [_records(16)], "val": [_records(4, "v")]}, CLASSES
    )
    reference = _losses(_run_ok(root, tmp_path / "ref"))

    import core.fit

    save = core.fit._save

    def save_then_die(cfg, trainer, run_dir, rank):
        path = save(cfg, trainer, run_dir, rank)
        if trainer.step == 2:
            raise _Killed
        return path

    monkeypatch.setattr(core.fit, "_save", save_then_die)
    with pytest.raises(_Killed):
        _run(root, tmp_path / "run", *STEPS)
    monkeypatch.setattr(core.fit, "_save", save)
    resumed = _losses(_run_ok(root, tmp_path / "run"))
    assert [resumed[s] for s in (3, 4)] == pytest.approx([reference[s] for s in (3, 4)], abs=1e-6)


def _run_ok(root: Path, out: Path) -> Path:
    assert _run(root, out, *STEPS)["steps"] == 4
    return out
