"""Checkpoint saves that fail: a full disk is named as such (folder and free space), the partial
save is removed, and `.tmp` folders of killed saves go at the next save or resume."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from core.checkpoint import CheckpointSaveError, latest_checkpoint, save_checkpoint
from core.fit import _resume
from tests.engine_helpers import tiny_trainer

META = {"mode": "frozen", "spatial_weights": None}


@pytest.fixture(scope="module")
def trainer():
    return tiny_trainer("mode=frozen")


def _killed_save(run: Path, step: int) -> Path:
    stale = run / "checkpoints" / f"step_{step:07d}.tmp"
    (stale / "ds").mkdir(parents=True)
    (stale / "ds" / "mp_rank_00_model_states.pt").write_bytes(b"half a file")
    return stale


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _torch_zip_writer_full(*args, **kwargs):
    # What torch.save raises when the disk fills up mid-write (no errno in it).
    raise RuntimeError(
        "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
        "data/0: file write failed"
    )


def _assert_disk_full(err: pytest.ExceptionInfo, run: Path) -> None:
    text = str(err.value)
    assert "disk is full" in text and "free there" in text and "MiB" in text
    assert str(run / "checkpoints") in text
    assert not list((run / "checkpoints").glob("*.tmp")), "the partial save must be removed"
    assert latest_checkpoint(run) is None


def test_disk_full_in_weights_writer_is_named(
    trainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("core.checkpoint.save_file", _no_space)
    with pytest.raises(CheckpointSaveError) as err:
        save_checkpoint(trainer.engine, tmp_path, 1, META, rank=0, keep=2)
    _assert_disk_full(err, tmp_path)


def test_disk_full_in_torch_zip_writer_is_named(
    trainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trainer.engine, "save_checkpoint", _torch_zip_writer_full)
    with pytest.raises(CheckpointSaveError) as err:
        save_checkpoint(trainer.engine, tmp_path, 1, META, rank=0, keep=2)
    _assert_disk_full(err, tmp_path)


def test_stale_tmp_is_removed_at_next_save(trainer, tmp_path: Path) -> None:
    stale = _killed_save(tmp_path, 1)
    saved = save_checkpoint(trainer.engine, tmp_path, 2, META, rank=0, keep=2)
    assert not stale.exists()
    assert latest_checkpoint(tmp_path) == saved


def test_stale_tmp_is_removed_at_resume(trainer, tmp_path: Path) -> None:
    stale = _killed_save(tmp_path, 3)
    assert _resume(trainer.cfg, trainer, tmp_path, rank=0) == (0, None)  # nothing to resume
    assert not stale.exists()
