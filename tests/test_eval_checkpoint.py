"""`vivit eval` of a checkpoint reproduces the training-time evaluation, and refuses a shard
set with another class set (naming both) instead of reporting a score."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.ckpt_manifest import write_manifest
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


def test_eval_on_another_class_count_is_an_error(trained, tmp_path: Path, capsys) -> None:
    _, out, _ = trained
    other = write_shard_set(tmp_path / "three", {"val": [_records(3, "v")]}, ["x", "y", "z"])
    code, result, err = _eval(capsys, other, out)
    assert code == 2 and result is None
    assert "trained on 4 classes" in err and "has 3 classes (x, y, z)" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_eval_on_other_class_names_is_an_error(trained, tmp_path: Path, capsys) -> None:
    """Same count, other names: an error once the checkpoint records its class names."""
    root, out, _ = trained
    ckpt = tmp_path / "ckpt"
    shutil.copytree(sorted((out / "checkpoints").glob("step_*"))[-1], ckpt)
    meta = json.loads((ckpt / "meta.json").read_text())
    (ckpt / "meta.json").write_text(json.dumps({**meta, "classes": ["p", "q", "r", "s"]}))
    write_manifest(ckpt)
    code, _, err = _eval(capsys, root, ckpt)
    assert code == 2
    assert "4 other classes (p, q, r, s)" in err and "has 4 classes (a, b, c, d)" in err


def test_eval_of_stage2_uses_stage1_spatial_weights(tmp_path: Path, capsys) -> None:
    """Stage 2 takes its frozen backbone from stage 1 (`temporal.load_spatial=true`), not from
    `spatial.weights`: its checkpoint must pin stage 1's weights, or `vivit eval` and `vivit
    predict` score another model than the one trained (the image weights)."""
    from safetensors.torch import save_file

    from core.config import load_config
    from core.model import build_model

    root = write_shard_set(
        tmp_path / "d", {"train": [_records(8)], "val": [_records(6, "v")]}, CLASSES
    )
    image = tmp_path / "image.safetensors"
    vit = build_model(load_config("configs/tiny.yaml", []), len(CLASSES)).spatial.vit
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(image))
    stage1, stage2 = tmp_path / "s1", tmp_path / "s2"
    # a high backbone learning rate, so stage 1's spatial weights are far from the image ones
    _run(root, stage1, "mode=full", f"spatial.weights={image}", "optim.lr=0.05")
    summary = _run(
        root,
        stage2,
        "mode=frozen",
        f"spatial.weights={image}",
        "temporal.init=checkpoint",
        f"temporal.checkpoint={stage1}",
        "temporal.load_spatial=true",
    )
    last = sorted((stage2 / "checkpoints").glob("step_*"))[-1]
    meta = json.loads((last / "meta.json").read_text())
    pinned = Path(meta["spatial_weights"]["path"])
    assert pinned.is_relative_to(stage1.resolve()), meta["spatial_weights"]
    code, result, err = _eval(capsys, root, stage2)
    assert code == 0, err
    assert result["val_loss"] == pytest.approx(summary["val_loss"], rel=0, abs=1e-5)
