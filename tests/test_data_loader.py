"""Train/eval batch sources end to end on CPU: DALI decoding, normalisation, corrupt records."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys

import numpy as np
import pytest
import torch

from data.config import DataConfig
from data.loader import ensure_dataset, flip_policy
from tests.data_helpers import cpu_train_batches, level, video_record, write_shard_set

MEAN, STD = (0.45, 0.5, 0.55), (0.2, 0.25, 0.3)


def _flat(label: int, frames: int = 6) -> np.ndarray:
    return np.full((frames, 32, 32, 3), level(label), np.uint8)


def _expected(label: int) -> torch.Tensor:
    return (level(label) / 255.0 - torch.tensor(MEAN)) / torch.tensor(STD)


def _open(root, **cfg):
    return cpu_train_batches(
        DataConfig(root=str(root), frames=4, shuffle_buffer=4, **cfg),
        batch_size=4,
        seed=0,
        mean=MEAN,
        std=STD,
    )


@pytest.mark.parametrize(
    "codec,decoder,name",
    [("vp9", "auto", "dali-cpu"), ("h264", "dali", "dali-cpu"), ("vp9", "pyav", "pyav")],
)
def test_train_batches_shape_and_normalisation(tmp_path, codec, decoder, name):
    recs = [(f"c{i}", video_record(_flat(i), i, codec)) for i in range(5)]
    root = write_shard_set(tmp_path, {"train": [recs[:3], recs[3:]]}, list("abcde"))
    src = _open(root, workers=1, decoder=decoder)
    assert src.decoder == name and src.num_classes == 5
    it = src.batches(0)
    for _ in range(3):
        frames, labels = next(it)
        assert frames.shape == (4, 4, 3, 16, 16) and frames.dtype == torch.float32
        for clip, y in zip(frames, labels.tolist(), strict=True):
            per_channel = clip.permute(1, 0, 2, 3).reshape(3, -1)
            tol = 0.02 if codec == "vp9" else 0.1  # lossless VP9 vs lossy H.264
            assert torch.allclose(
                per_channel, _expected(y)[:, None].expand_as(per_channel), atol=tol
            )
    src.close()


def test_corrupt_records_are_skipped_and_counted(tmp_path):
    good = [(f"g{i}", video_record(_flat(i), i)) for i in range(3)]
    garbage = video_record(_flat(3), 3)
    garbage["webm"] = garbage["webm"][:40]  # truncated: header only
    no_json = {"cls": b"3", "webm": video_record(_flat(3), 3)["webm"]}
    root = write_shard_set(
        tmp_path, {"train": [good + [("bad1", garbage), ("bad2", no_json)]]}, list("abcd")
    )
    with _open(root, workers=0, decoder="dali") as src:
        it = src.batches(0)
        seen = set()
        for _ in range(6):
            _, labels = next(it)
            seen |= set(labels.tolist())
        assert seen == {0, 1, 2}  # label 3 exists only in the corrupt records
        assert src.stats()["corrupt_skipped"] >= 2


def test_flip_policy():
    synth = {"classes": list("abcd"), "flip_safe": False, "flip_pairs": [[0, 1]]}
    assert flip_policy("auto", synth) == (False, [0, 1, 2, 3])
    assert flip_policy("always", synth) == (True, [1, 0, 2, 3])
    assert flip_policy("auto", {**synth, "flip_safe": True}) == (True, [0, 1, 2, 3])
    assert flip_policy("never", {**synth, "flip_safe": True})[0] is False


def test_train_stream_reproducible_from_start_step(tmp_path):
    recs = [(f"c{i}", video_record(_flat(i), i)) for i in range(6)]
    root = write_shard_set(tmp_path, {"train": [recs[:3], recs[3:]]}, list("abcdef"))

    def labels(step):
        with _open(root, workers=0, decoder="dali") as src:
            it = src.batches(step)
            return [next(it)[1].tolist() for _ in range(4)]

    assert labels(5) == labels(5)
    assert labels(5) != labels(6)


def _ensure(root: str, q) -> None:
    cfg = DataConfig(root=root, synthetic=True, synth_clips=16, frames=4)
    q.put(str(ensure_dataset(cfg, seed=3)))


def test_ensure_dataset_two_ranks_at_once(tmp_path):
    root = tmp_path / "synth"
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_ensure, args=(str(root), q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert q.get() == q.get() == str(root)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["splits"]["train"]["count"] == 16 and manifest["splits"]["val"]["count"] == 4
    assert not list(tmp_path.glob(".synth.building-*"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none")):
        ensure_dataset(DataConfig(root=str(tmp_path / "none")), seed=0)


def test_cli_entry_point_runs(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.shards",
            "synth",
            "--out",
            str(tmp_path / "s"),
            "--clips",
            "8",
            "--frames",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "s" / "manifest.json").is_file()
