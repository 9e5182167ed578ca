"""What the user can fix is one line on stderr and exit code 2, never a traceback: malformed
YAML, a shard directory without a manifest, a missing spatial weights file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.distributed

from launch import evaluate as eval_cli
from launch import train as train_cli
from tests.data_helpers import write_shard_set
from tests.test_train_faults import CLASSES, _records

TINY = ("data.synthetic=false", "tracking.enabled=false", "train.progress=false")


def _one_line_error(capsys: pytest.CaptureFixture, code: int, *needles: str) -> str:
    out, err = capsys.readouterr()
    assert code == 2, f"exit code {code}; stderr:\n{err}"
    assert "Traceback" not in err + out and '  File "' not in err
    # log lines (e.g. torch's CUDA notice) may come first; the error is one `vivit ...:` line
    lines = [line for line in err.splitlines() if line.startswith("vivit ")]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.mark.parametrize("cli", [train_cli, eval_cli])
def test_malformed_yaml(cli, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: frozen\nspatial: [img_size: 32\ntrain:\n  steps: 2\n")
    extra = ["checkpoint=/nowhere"] if cli is eval_cli else []
    code = cli.main([str(bad), *extra])
    _one_line_error(capsys, code, f"{bad}:", "not valid YAML")


def test_missing_manifest(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "shards"
    empty.mkdir()
    code = train_cli.main(
        ["configs/tiny.yaml", f"data.root={empty}", f"out_dir={tmp_path / 'run'}", *TINY]
    )
    _one_line_error(capsys, code, "vivit train:", "no manifest.json", str(empty))


def test_missing_weights_file(tmp_path: Path, capsys) -> None:
    root = write_shard_set(tmp_path / "d", {"train": [_records(2)], "val": [_records(2)]}, CLASSES)
    missing = tmp_path / "vit.safetensors"
    code = train_cli.main(
        [
            "configs/tiny.yaml",
            f"data.root={root}",
            f"out_dir={tmp_path / 'run'}",
            f"spatial.weights={missing}",
            *TINY,
        ]
    )
    _one_line_error(capsys, code, "spatial weights file not found", str(missing))


def test_missing_checkpoint_for_eval(tmp_path: Path, capsys) -> None:
    root = write_shard_set(tmp_path / "d", {"val": [_records(2)]}, CLASSES)
    code = eval_cli.main(
        ["configs/tiny.yaml", f"checkpoint={tmp_path / 'nope'}", f"data.root={root}", *TINY]
    )
    _one_line_error(capsys, code, "no complete checkpoint", str(tmp_path / "nope"))


def test_zero_steps_is_refused(tmp_path: Path, capsys) -> None:
    """`train.steps=0` used to train nothing and print NaN in its JSON line."""
    root = write_shard_set(tmp_path / "d", {"train": [_records(2)], "val": [_records(2)]}, CLASSES)
    code = train_cli.main(
        ["configs/tiny.yaml", f"data.root={root}", f"out_dir={tmp_path / 'run'}", "train.steps=0"]
        + list(TINY)
    )
    _one_line_error(capsys, code, "train.steps must be >= 1, got 0", "vivit eval")
    assert not (tmp_path / "run").exists()


def test_unreadable_weights_file(tmp_path: Path, capsys) -> None:
    root = write_shard_set(tmp_path / "d", {"train": [_records(2)], "val": [_records(2)]}, CLASSES)
    junk = tmp_path / "vit.safetensors"
    junk.write_text("not a weights file")
    args = ["configs/tiny.yaml", f"data.root={root}", f"out_dir={tmp_path / 'run'}"]
    code = train_cli.main([*args, f"spatial.weights={junk}", *TINY])
    _one_line_error(capsys, code, "not a readable weights file", str(junk))


def test_invalid_manifest_json(tmp_path: Path, capsys) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "manifest.json").write_text('{"classes": ["a", "b"], "splits": {')
    code = train_cli.main(
        ["configs/tiny.yaml", f"data.root={root}", f"out_dir={tmp_path / 'run'}", *TINY]
    )
    _one_line_error(capsys, code, "manifest.json: not valid JSON")


def test_out_dir_is_a_file(tmp_path: Path, capsys) -> None:
    root = write_shard_set(tmp_path / "d", {"train": [_records(2)], "val": [_records(2)]}, CLASSES)
    blocker = tmp_path / "run"
    blocker.write_text("a file")
    code = train_cli.main(["configs/tiny.yaml", f"data.root={root}", f"out_dir={blocker}", *TINY])
    _one_line_error(capsys, code, str(blocker))
    # the run had joined its (1-rank) group before the error: it leaves it on the way out
    assert not torch.distributed.is_initialized()


def test_malformed_override_value(capsys) -> None:
    code = train_cli.main(["configs/tiny.yaml", "optim.betas=[0.9,", *TINY])
    _one_line_error(capsys, code, "optim.betas=[0.9,", "not valid YAML")
