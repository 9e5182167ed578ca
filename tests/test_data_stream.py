"""Node/worker splitting: every sample exactly once per pass; resampled stream is reproducible."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch

from data.config import DataConfig
from data.fork import start_workers
from data.manifest import read_manifest, split_shards
from data.stream import ShardStream
from tests.data_helpers import cpu_eval_batches, index_frames, video_record, write_shard_set


def _fake_set(root, shard_sizes):
    """Records with dummy payloads (the stream never decodes), keys unique per split."""
    n = itertools.count()
    shards = [
        [(f"k{next(n):04d}", {"cls": b"0", "json": b"{}", "webm": b"x"}) for _ in range(size)]
        for size in shard_sizes
    ]
    return write_shard_set(root, {"train": shards}, ["a"])


def _keys(root, rank, world, workers, **kw):
    shards = split_shards(read_manifest(root), root, "train")
    stream = ShardStream(shards, rank=rank, world=world, **kw)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
    return [s["__key__"] for s in start_workers(loader) if "__key__" in s]


@pytest.mark.parametrize(
    "shard_sizes", [[3, 4, 2, 5, 3], [6, 5]], ids=["shard-split", "sample-split"]
)
def test_two_ranks_two_workers_read_each_sample_once(tmp_path, shard_sizes):
    root = _fake_set(tmp_path, shard_sizes)
    per_rank = [_keys(root, r, 2, 2, resample=False, epochs=1, shuffle_buffer=4) for r in (0, 1)]
    seen = Counter(per_rank[0] + per_rank[1])
    assert set(seen) == {f"k{i:04d}" for i in range(sum(shard_sizes))}
    assert max(seen.values()) == 1 and all(per_rank)


def test_resampled_stream_is_deterministic_per_seed_rank_and_step(tmp_path):
    root = _fake_set(tmp_path, [4, 4, 4])
    kw = {"resample": True, "shuffle_buffer": 6}

    def first(rank, seed=0, step=0):
        shards = split_shards(read_manifest(root), root, "train")
        it = iter(ShardStream(shards, rank=rank, world=2, seed=seed, start_step=step, **kw))
        return [s["__key__"] for s in itertools.islice(it, 30)]

    assert first(0) == first(0)
    assert first(0) != first(1)
    assert first(0) != first(0, step=100)
    assert first(0) != first(0, seed=1)


def test_eval_batches_split_exactly_across_ranks(tmp_path):
    # 7 videos, unique labels, in 2 shards: fewer shards than ranks x workers
    recs = [(f"v{i}", video_record(index_frames(4), label=i)) for i in range(7)]
    root = write_shard_set(tmp_path, {"val": [recs[:4], recs[4:]]}, [str(i) for i in range(7)])
    cfg = DataConfig(root=str(root), frames=2, workers=2, eval_clips=2, eval_crops=3)
    labels = []
    for rank in (0, 1):
        src = cpu_eval_batches(cfg, batch_size=3, rank=rank, world_size=2)
        with src:
            for frames, y in src:
                assert frames.shape[1:] == (6, 2, 3, 16, 16)
                labels += y.tolist()
            assert src.num_classes == 7
    assert sorted(labels) == list(range(7))
