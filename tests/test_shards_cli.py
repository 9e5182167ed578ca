"""`vivit shards inspect` fails on decode failures; `vivit shards synth` refuses nonsense sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from launch.shards import main as shards_main
from tests.data_helpers import write_shard_set
from tests.test_train_faults import CLASSES, _records


def test_inspect_exits_nonzero_on_decode_failures(tmp_path: Path, capsys) -> None:
    records = _records(3)
    records[1][1]["webm"] = b"\x1a\x45\xdf\xa3 this is not a video" * 8
    root = write_shard_set(tmp_path / "d", {"train": [records]}, CLASSES)
    assert shards_main(["inspect", str(root)]) == 1
    out, err = capsys.readouterr()
    assert "decode failure: train" in out and "c1" in out
    assert "1 decode failure(s)" in err


def test_inspect_of_a_good_set_exits_zero(tmp_path: Path) -> None:
    root = write_shard_set(tmp_path / "d", {"train": [_records(2)]}, CLASSES)
    assert shards_main(["inspect", str(root)]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clips", "-5"], "clips and val_clips must be >= 1, got -5"),
        (["--clips", "4", "--val-clips", "0"], "got 4 and 0"),
        (["--frames", "0"], "frames must be >= 2"),
        (["--frames", "1"], "frames must be >= 2"),
    ],
)
def test_synth_refuses_nonsense(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    out = tmp_path / "synth"
    assert shards_main(["synth", "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists(), "nothing may be written for a refused request"
