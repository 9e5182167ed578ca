"""Bad input on the data side is skipped and counted, or a clear error; never a crash or a hang.

Labels out of range, metadata that disagrees with the video or is out of bounds, empty shards
and splits with nothing usable. Cases that used to segfault or hang run in a subprocess with a
timeout, so a regression fails the test instead of taking pytest down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from data.config import DataConfig
from data.records import BadRecord, record_meta
from tests.data_helpers import (
    cpu_eval_batches,
    cpu_train_batches,
    level,
    video_record,
    write_shard_set,
)

REPO = Path(__file__).resolve().parent.parent
CLASSES = list("abcd")


def _flat(label: int) -> np.ndarray:
    return np.full((6, 32, 32, 3), level(label), np.uint8)


def _good(n: int = 4) -> list[tuple[str, dict[str, bytes]]]:
    return [(f"g{i}", video_record(_flat(i % 4), i % 4)) for i in range(n)]


def _with_meta(label: int, **meta: object) -> dict[str, bytes]:
    record = video_record(_flat(label), label)
    record["json"] = json.dumps({**json.loads(record["json"]), **meta}).encode()
    return record


def _train(root: Path, decoder: str = "dali", **cfg: object):
    return cpu_train_batches(
        DataConfig(root=str(root), frames=4, shuffle_buffer=4, workers=0, decoder=decoder, **cfg),
        batch_size=4,
        seed=0,
        std=(0.25,) * 3,
    )


def _first_batch(root: Path):
    with _train(root) as src:
        return next(src.batches(0))


def read_batches(root: str, batches: int, decoder: str = "dali") -> dict:
    """Labels seen in `batches` training batches and the loader's stats (used in subprocesses)."""
    with _train(Path(root), decoder) as src:
        it = src.batches(0)
        labels: set[int] = set()
        for _ in range(batches):
            frames, y = next(it)
            assert frames.shape == (4, 4, 3, 16, 16) and torch.isfinite(frames).all()
            labels |= set(y.tolist())
        return {"labels": sorted(labels), **src.stats()}


def _in_subprocess(root: Path, batches: int, decoder: str = "dali", timeout: int = 120):
    code = (
        "import json, sys; from tests.test_data_faults import read_batches; "
        f"print(json.dumps(read_batches({str(root)!r}, {batches}, {decoder!r})))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("bad", [b"999", b"-1", b"4", b"two"])
def test_out_of_range_labels_are_skipped_and_counted(tmp_path: Path, bad: bytes) -> None:
    wrong = video_record(_flat(1), 1)
    wrong["cls"] = bad
    # flip_safe=False as in the synthetic set: no flip relabelling that would trip on it first
    root = write_shard_set(tmp_path, {"train": [_good() + [("bad", wrong)]]}, CLASSES, False)
    seen = read_batches(str(root), 4)
    assert set(seen["labels"]) <= set(range(len(CLASSES)))
    assert seen["bad_label_skipped"] >= 1


def test_eval_skips_out_of_range_labels(tmp_path: Path) -> None:
    wrong = video_record(_flat(1), 1)
    wrong["cls"] = b"999"
    root = write_shard_set(tmp_path, {"val": [_good(3) + [("bad", wrong)]]}, CLASSES)
    src = cpu_eval_batches(
        DataConfig(root=str(root), frames=4, workers=0, decoder="dali", eval_clips=1),
        batch_size=2,
        std=(0.25,) * 3,
    )
    with src:
        labels = [y for _, batch in src for y in batch.tolist()]
        assert sorted(labels) == [0, 1, 2] and src.stats()["bad_label_skipped"] == 1


@pytest.mark.parametrize("decoder", ["dali", "pyav"])
def test_metadata_larger_than_the_video_does_not_crash(tmp_path: Path, decoder: str) -> None:
    """1920x1080 in .json for a 32x32 clip: the crop comes from the decoded frame (was SIGSEGV)."""
    liars = [(f"l{i}", _with_meta(i, width=1920, height=1080, frames=100)) for i in range(4)]
    root = write_shard_set(tmp_path, {"train": [liars]}, CLASSES)
    proc = _in_subprocess(root, 3, decoder)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["labels"] == [0, 1, 2, 3] and seen["bad_meta_skipped"] == 0


BAD_META = [
    {"frames": 1e12},
    {"frames": 0},
    {"frames": -8},
    {"frames": 2.5},
    {"width": -32},
    {"height": 0},
    {"width": 10**9},
    {"height": "tall"},
    {"frames": None},
]


@pytest.mark.parametrize("meta", BAD_META, ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
def test_metadata_bounds(meta: dict) -> None:
    record = _with_meta(3, **meta)
    with pytest.raises(BadRecord, match=next(iter(meta))):
        record_meta(record["json"])
    assert record_meta(video_record(_flat(0), 0)["json"])["frames"] == 6


def test_out_of_bounds_metadata_is_skipped_and_counted(tmp_path: Path) -> None:
    bad = [(f"bad{i}", _with_meta(3, **meta)) for i, meta in enumerate(BAD_META)]
    root = write_shard_set(tmp_path, {"train": [_good(3) + bad]}, CLASSES)
    proc = _in_subprocess(root, 3)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["labels"] == [0, 1, 2], "bad records (the only class 3) must not be trained on"
    assert seen["bad_meta_skipped"] >= len(BAD_META)


def _within(seconds: float, fn):
    """`fn()`'s result or exception, or a test failure if it is still running after `seconds`."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except Exception as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s (a hang)")
    return box


def _empty_tar(path: Path) -> None:
    with tarfile.open(path, "w"):
        pass


@pytest.mark.parametrize("kind", ["zero-bytes", "no-members", "no-samples"])
def test_empty_only_train_shard_fails_fast(tmp_path: Path, kind: str) -> None:
    root = write_shard_set(tmp_path, {"train": [[]]}, CLASSES)
    shard = root / "train-000000.tar"
    if kind == "zero-bytes":
        shard.write_bytes(b"")
    elif kind == "no-members":
        _empty_tar(shard)
    else:
        with tarfile.open(shard, "w") as tar:
            tar.add(__file__, arcname="README")
    box = _within(30, lambda: _first_batch(root))
    assert isinstance(box.get("error"), ValueError), box
    assert "no shard holds a sample" in str(box["error"]) and str(shard) in str(box["error"])


def test_empty_shard_beside_good_ones_is_skipped(tmp_path: Path, caplog) -> None:
    root = write_shard_set(tmp_path, {"train": [_good(), []]}, CLASSES)
    (root / "train-000001.tar").write_bytes(b"")
    with caplog.at_level("WARNING"):
        src = _train(root)
    assert len(src.shards) == 1
    assert "train-000001.tar" in caplog.text
    with src:
        _, labels = next(src.batches(0))
    assert len(labels) == 4


def test_split_with_nothing_usable_is_an_error_not_a_hang(tmp_path: Path) -> None:
    records = []
    for i in range(4):
        record = video_record(_flat(i), i)
        record["cls"] = b"999"
        records.append((f"b{i}", record))
    root = write_shard_set(tmp_path, {"train": [records]}, CLASSES, flip_safe=False)
    box = _within(60, lambda: _first_batch(root))
    assert isinstance(box.get("error"), RuntimeError), box
    assert "no usable record" in str(box["error"])
