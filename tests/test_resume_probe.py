"""Issue 11 item 8, probed through the real loader: a run stopped after its step-2 checkpoint
and resumed logs the same losses for steps 3-4 as an uninterrupted run, bit for bit, and ends
with bitwise the same weights (CPU, fp32).

What makes it exact: the checkpoint keeps each rank's data position (`data_rank{R}.json`) and
RNG states, and the resumed loader replays its stream to that position instead of re-seeding
it from the resume step. `tests/test_resume_exact.py` does the same with SIGKILL under the real
`vivit train` and the `deepspeed` launcher.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.data_helpers import write_shard_set
from tests.engine_helpers import metrics_rows
from tests.test_train_faults import CLASSES, _records, _run

STEPS = ("train.steps=4", "train.ckpt_every=2")


class _Killed(Exception):
    """Stands in for SIGKILL right after a checkpoint is complete."""


def _losses(run: Path) -> dict[int, float]:
    rows = metrics_rows(run)
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _token_cache(root: Path, out: Path) -> Path:
    """`vivit cache build` of the probe's shards, 2 views per clip (the probe's own config)."""
    from tests.test_train_cli import vivit

    args = [f"data.root={root}", "data.synthetic=false", "data.frames=4", "data.workers=0"]
    args.append("--no-progress")
    vivit("cache", "build", "configs/tiny.yaml", "--out", str(out), "--views", "2", *args)
    return out


@pytest.mark.parametrize(
    "extra",
    [(), ("train.eval_every=2", "train.precise_bn_batches=3"), ("token-cache",)],
    ids=["plain", "precise-bn", "token-cache"],
)
def test_resume_through_the_loader_is_exact(
    tmp_path: Path, monkeypatch, extra: tuple[str, ...]
) -> None:
    """With precise BN the step-2 evaluation looks 3 batches ahead before the step-2
    checkpoint: the checkpoint must hold the position training reached, not the peek's.
    From a token cache (`data.cache`) the stream is the cache reader's, replayed the same way."""
    root = write_shard_set(
        tmp_path / "d", {"train": [_records(16)], "val": [_records(4, "v")]}, CLASSES
    )
    if extra == ("token-cache",):
        extra = (f"data.cache={_token_cache(root, tmp_path / 'cache')}",)
    steps = (*STEPS, *extra)
    ref_summary = _run_ok(root, tmp_path / "ref", steps)
    reference = _losses(tmp_path / "ref")

    import core.fit

    save = core.fit._save

    def save_then_die(cfg, trainer, *args, **kwargs):
        path = save(cfg, trainer, *args, **kwargs)
        if trainer.step == 2:
            raise _Killed
        return path

    monkeypatch.setattr(core.fit, "_save", save_then_die)
    with pytest.raises(_Killed):
        _run(root, tmp_path / "run", *steps)
    monkeypatch.setattr(core.fit, "_save", save)
    assert sorted(_losses(tmp_path / "run")) == [1, 2]
    assert (tmp_path / "run" / "checkpoints" / "step_0000002" / "data_rank0.json").is_file()
    summary = _run_ok(root, tmp_path / "run", steps)
    assert (summary["val_loss"], summary["top1"]) == (ref_summary["val_loss"], ref_summary["top1"])
    resumed = _losses(tmp_path / "run")
    assert resumed == reference  # steps 1-2 from the first run, 3-4 after the resume: exact
    ref_weights, weights = _final_weights(tmp_path / "ref"), _final_weights(tmp_path / "run")
    assert ref_weights.keys() == weights.keys()
    for name, tensor in ref_weights.items():
        assert torch.equal(tensor, weights[name]), f"{name} differs after the resume"


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "checkpoints" / "step_0000004" / "model.safetensors")


def _run_ok(root: Path, out: Path, steps: tuple[str, ...]) -> dict:
    summary = _run(root, out, *steps)
    assert summary["steps"] == 4
    return summary
