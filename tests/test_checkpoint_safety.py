"""Loading a checkpoint never runs code from it.

A pickle whose `__reduce__` would create a file is planted in each file of a saved checkpoint.
Resume refuses it by name, first because the file no longer matches `sha256.json`, and, when
the manifest is rewritten to match (a checkpoint crafted whole), because every file is read as
JSON, safetensors or `torch.load(weights_only=True)`. The marker file never appears.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from core.checkpoint import read_data_position, resume_checkpoint, save_checkpoint
from core.ckpt_manifest import MANIFEST_FILE, write_manifest
from core.init import read_checkpoint_weights
from tests.engine_helpers import NUM_CLASSES, tiny_trainer
from tests.tensor_batches import TensorBatches


class _Payload:
    """Unpickling this calls `open(marker, "w")`: code execution that leaves a trace."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory):
    trainer = tiny_trainer("mode=frozen", "engine.zero_stage=2")
    trainer.train_step(*next(TensorBatches(NUM_CLASSES, 4, 4, 32, seed=3).batches(0)))
    run = tmp_path_factory.mktemp("run")
    meta = {"mode": "frozen", "spatial_weights": None}
    position = {"items": 3, "counters": {"clips": 4}}  # every file a real checkpoint holds
    ckpt = save_checkpoint(
        trainer.engine, run, trainer.step, meta, rank=0, keep=2, data_position=position
    )
    return trainer, ckpt


def _resume(trainer, ckpt: Path) -> None:
    """What a resumed run reads: the engine's files and RNG states, then its data position."""
    resume_checkpoint(trainer.engine, ckpt, rank=0)
    read_data_position(ckpt, rank=0)


def _planted(saved_ckpt: Path, name: str, tmp: Path, refresh_manifest: bool) -> tuple[Path, Path]:
    copy = tmp / f"copy-{name.replace('/', '_')}-{refresh_manifest}"
    shutil.copytree(saved_ckpt, copy)
    marker = tmp / f"pwned-{name.replace('/', '_')}"
    torch.save({"state": _Payload(marker)}, copy / name)
    if refresh_manifest:
        write_manifest(copy)
    return copy, marker


def _files(ckpt: Path) -> list[str]:
    return sorted(
        p.relative_to(ckpt).as_posix()
        for p in ckpt.rglob("*")
        if p.is_file() and p.name != MANIFEST_FILE
    )


def test_checkpoint_holds_no_pickle_of_ours(saved) -> None:
    _, ckpt = saved
    assert (ckpt / MANIFEST_FILE).is_file()
    assert not list(ckpt.glob("rng_rank*.pt")), "RNG state must not be a pickle"


def test_changed_file_is_refused_by_its_digest(saved, tmp_path: Path) -> None:
    trainer, ckpt = saved
    for name in _files(ckpt):
        copy, marker = _planted(ckpt, name, tmp_path, refresh_manifest=False)
        with pytest.raises(ValueError, match="sha256") as err:
            _resume(trainer, copy)
        assert str(copy / name) in str(err.value)
        assert not marker.exists(), f"code in {name} ran"


def test_unlisted_file_is_refused(saved, tmp_path: Path) -> None:
    trainer, ckpt = saved
    copy = tmp_path / "copy"
    shutil.copytree(ckpt, copy)
    (copy / "ds" / "extra.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="not listed"):
        resume_checkpoint(trainer.engine, copy, rank=0)


def test_crafted_checkpoint_runs_no_code(saved, tmp_path: Path) -> None:
    """The manifest matches (crafted whole): the loaders themselves refuse the pickle."""
    trainer, ckpt = saved
    loaded = [n for n in _files(ckpt) if n.endswith((".pt", ".json"))]
    assert {"rng_rank0.json", "data_rank0.json", "meta.json"} <= set(loaded)
    assert any(n.startswith("ds/") and "optim_states" in n for n in loaded)
    assert any(n.startswith("ds/") and "model_states" in n for n in loaded)
    for name in loaded:
        copy, marker = _planted(ckpt, name, tmp_path, refresh_manifest=True)
        with pytest.raises(ValueError) as err:
            _resume(trainer, copy)
        assert str(copy / name) in str(err.value)
        assert not marker.exists(), f"code in {name} ran"


@pytest.mark.parametrize("refresh_manifest", [False, True])
def test_eval_and_init_read_no_pickle(saved, tmp_path: Path, refresh_manifest: bool) -> None:
    _, ckpt = saved
    for name in ("model.safetensors", "meta.json"):
        copy, marker = _planted(ckpt, name, tmp_path, refresh_manifest)
        with pytest.raises(ValueError) as err:
            read_checkpoint_weights(copy)
        assert str(copy / name) in str(err.value)
        assert not marker.exists()


def test_rng_state_round_trips_through_json(tmp_path: Path) -> None:
    import random

    import numpy as np

    from core.checkpoint import _rng_state, _set_rng_state

    path = tmp_path / "rng.json"
    path.write_text(__import__("json").dumps(_rng_state()))
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    _set_rng_state(path)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
