"""Repeated sampling (`data.repeat_aug`): one decoded video gives k training clips, each with its
own frames and crop, on both decoders; batches hold whole groups, and bad settings are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import load_config
from data.batcher import Batcher
from data.config import DataConfig
from data.jobs import ClipJob
from data.transcode import encode_frames
from tests.data_helpers import (
    HALF,
    cpu_train_batches,
    decoded_index,
    index_frames,
    video_record,
    write_shard_set,
)

VIDEOS = 8


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight 8-frame VP9 videos, each its own class, so a label names its video."""
    root = tmp_path_factory.mktemp("repeat-aug")
    recs = [(f"v{i}", video_record(index_frames(8), i)) for i in range(VIDEOS)]
    classes = [f"c{i}" for i in range(VIDEOS)]
    return write_shard_set(root / "set", {"train": [recs[:4], recs[4:]]}, classes)


def _batches(root: Path, decoder: str, repeats: int, count: int = 4) -> list[tuple]:
    cfg = DataConfig(
        root=str(root),
        frames=2,
        repeat_aug=repeats,
        flip="never",
        decoder=decoder,
        workers=0,
        shuffle_buffer=4,
    )
    source = cpu_train_batches(cfg, batch_size=8, seed=3, img_size=16)
    stream = source.batches(0)
    try:
        out = []
        for _ in range(count):
            frames, labels = next(stream)
            pixels = (frames * HALF[0] + HALF[0]) * 255  # undo the normalisation
            index = [[decoded_index(f.numpy()) for f in clip] for clip in pixels]
            out.append((frames.shape, labels.tolist(), index, source.position()["counters"]))
        return out
    finally:
        stream.close()
        source.close()


@pytest.mark.parametrize("decoder", ["dali", "pyav"])
def test_each_video_gives_k_clips_of_its_own_frames(shards: Path, decoder: str) -> None:
    batches = _batches(shards, decoder, repeats=4)
    differ = 0
    for n, (shape, labels, index, counters) in enumerate(batches):
        assert tuple(shape) == (8, 2, 3, 16, 16), "B clips of T frames, not B/k of kT"
        groups = [labels[:4], labels[4:]]
        assert all(len(set(g)) == 1 for g in groups) and groups[0][0] != groups[1][0]
        for clip in index:  # uniform sampling: one frame from each half of the video
            assert 0 <= clip[0] < 4 <= clip[1] < 8
        differ += sum(len({tuple(c) for c in (index[:4], index[4:])[g]}) > 1 for g in (0, 1))
        assert counters["clips"] == 8 * (n + 1)
    assert differ >= 6, "the k clips of a video draw their own frames"


def test_both_decoders_give_the_same_clips(shards: Path) -> None:
    dali, pyav = _batches(shards, "dali", 4, 2), _batches(shards, "pyav", 4, 2)
    assert [(b[1], b[2]) for b in dali] == [(b[1], b[2]) for b in pyav]


def test_bad_repeat_settings_are_named() -> None:
    with pytest.raises(ValueError, match="data.repeat_aug must be >= 1"):
        DataConfig(repeat_aug=0)
    with pytest.raises(ValueError, match=r"micro_batch_size \(6\).*data.repeat_aug \(4\)"):
        load_config(None, ["train.micro_batch_size=6", "data.repeat_aug=4"])
    with pytest.raises(ValueError, match="data.repeat_aug draws clips from decoded videos"):
        load_config(None, ["mode=frozen", "data.cache=somewhere", "data.repeat_aug=2"])
    load_config(None, ["train.micro_batch_size=8", "data.repeat_aug=4"])


def test_a_source_refuses_a_batch_that_splits_a_video(shards: Path) -> None:
    cfg = DataConfig(root=str(shards), frames=2, repeat_aug=3, decoder="dali", workers=0)
    with pytest.raises(ValueError, match="cannot hold 3 clips per video"):
        cpu_train_batches(cfg, batch_size=8, seed=0)


class Refuses:
    """A DALI decoder that refuses every item, so the batcher retries each video on PyAV."""

    def decode(self, items):
        return None, list(range(len(items)))


def _batcher(jobs, counters: dict, max_skipped: int) -> Batcher:
    return Batcher(
        jobs,
        Refuses(),  # type: ignore[arg-type]
        batch_size=8,
        size=16,
        device=torch.device("cpu"),
        dtype=torch.float32,
        mean=HALF,
        std=HALF,
        counters=counters,
        max_skipped=max_skipped,
    )


def test_clips_decoded_on_the_cpu_after_dali_refused_are_counted_as_clips() -> None:
    data = encode_frames(index_frames(8), fps=8.0, codec="vp9", gop=4, lossless=True)
    views = [(np.array([v, v + 4]), (0.0, 0.0, 1.0, 1.0)) for v in range(4)]
    jobs = iter([ClipJob(views, (1,) * 4, data=data)] * 2)
    counters = {"corrupt_skipped": 0, "cpu_fallback_clips": 0, "clips": 0}
    frames, labels, _ = next(iter(_batcher(jobs, counters, 5)))
    assert frames.shape == (8, 1, 2, 3, 16, 16) and labels.tolist() == [1] * 8
    assert counters["cpu_fallback_clips"] == 8 and counters["corrupt_skipped"] == 0


def test_a_bad_video_counts_once_toward_the_skip_limit_whatever_its_clips() -> None:
    """The skip guard counts records in a row that give nothing: a video of k repeated clips
    that no decoder reads is one record, not k."""
    garbage = b"\x1aE\xdf\xa3garbage" * 8
    views = [(np.array([0, 1]), (0.0, 0.0, 1.0, 1.0))] * 4
    jobs = (ClipJob(views, (0,) * 4, data=garbage) for _ in range(50))
    counters = {"corrupt_skipped": 0, "cpu_fallback_clips": 0, "clips": 0}
    batcher = _batcher(jobs, counters, 5)
    with pytest.raises(RuntimeError, match="no usable record in the last 6 read"):
        next(iter(batcher))
    assert counters["corrupt_skipped"] == 6  # 3 decodes of 2 videos (8 clips) each


def test_a_clip_job_holds_either_the_video_or_its_decoded_views() -> None:
    views = [(np.array([0, 1]), (0.0, 0.0, 1.0, 1.0))]
    with pytest.raises(ValueError, match="either"):
        ClipJob(views, (0,))
    with pytest.raises(ValueError, match="either"):
        ClipJob(views, (0,), data=b"x", frames=np.zeros((1, 2, 3, 4, 4), np.uint8))
    one = ClipJob(views, (0,), data=b"x")
    assert one.clips == 1 and not one.repeated
    three = ClipJob(views * 3, (0, 1, 2), frames=np.zeros((3, 2, 3, 4, 4), np.uint8))
    assert three.clips == 3 and three.repeated
