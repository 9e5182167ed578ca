"""`vivit eval` of a checkpoint reproduces the training-time evaluation, and refuses a shard
set with another class set (naming both) instead of reporting a score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch import evaluate as eval_cli
from tests.data_helpers import write_shard_set
from tests.test_train_faults import CLASSES, _records, _run

EVAL_ARGS = ("data.synthetic=false", "data.frames=4", "data.eval_clips=1", "data.decoder=dali")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A frozen-mode run without `spatial.weights`: its backbone is a random init."""
    tmp = tmp_path_factory.mktemp("evalrun")
    root = write_shard_set(tmp / "d", {"train": [_records(8)], "val": [_records(6, "v")]}, CLASSES)
    out = tmp / "run"
    summary = _run(root, out, "mode=frozen", "spatial.weights=null")
    return root, out, summary


def _eval(capsys: pytest.CaptureFixture, root: Path, ckpt: Path) -> tuple[int, dict | None, str]:
    capsys.readouterr()
    code = eval_cli.main(
        ["configs/tiny.yaml", f"checkpoint={ckpt}", f"data.root={root}", *EVAL_ARGS]
    )
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    return code, json.loads(lines[-1]) if code == 0 and lines else None, err


def test_eval_reproduces_training_eval_without_weights_file(trained, capsys) -> None:
    root, out, summary = trained
    code, result, err = _eval(capsys, root, out)
    assert code == 0, err
    assert result["val_videos"] == summary["val_videos"] == 6
    assert result["val_loss"] == pytest.approx(summary["val_loss"], rel=0, abs=1e-5)
    assert result["top1"] == summary["top1"] and result["top5"] == summary["top5"]
