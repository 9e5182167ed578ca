"""Exact resume of the training stream (issue 11 item 8), below the trainer.

A stream resumed at position N (DataLoader items consumed by trained batches) yields exactly
what the uninterrupted stream yields from item N on: the workers replay their share of the
first N items (shard draws, shuffle, view draws) without producing them.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import pytest
import torch

from core.checkpoint import read_data_position, save_checkpoint
from core.ckpt_manifest import CheckpointError
from core.rundir import MetricsLog
from data.config import DataConfig
from data.dali_decode import CPU_CODECS
from data.fork import (
    ChunkedWorkerItems,
    chunked,
    own_share,
    start_workers,
    stop_workers,
    unchunked,
    worker_loader,
)
from data.jobs import SKIPPED, ClipJob, ClipJobs
from data.manifest import read_manifest, split_shards
from data.prefetch import PrefetchedPasses
from data.stream import ShardStream
from tests.data_helpers import (
    cpu_train_batches,
    index_frames,
    video_record,
    write_shard_set,
    write_truncated,
)

CLASSES = list("abc")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shards with good VP9 and H.264 clips, a bad label, a record without metadata and a
    truncated H.264 video (decoded in the worker by PyAV, which fails on it)."""
    root = tmp_path_factory.mktemp("resume-data")
    recs = [(f"c{i}", video_record(index_frames(6 + i % 3), i % 3)) for i in range(8)]
    recs += [(f"h{i}", video_record(index_frames(6), i % 3, "h264")) for i in range(2)]
    recs[2][1]["cls"] = b"7"
    del recs[5][1]["json"]
    cut = write_truncated(root / "cut.mp4", index_frames(8))
    recs.append(("t0", {**video_record(index_frames(8), 1, "h264"), "mp4": cut.read_bytes()}))
    return write_shard_set(root / "set", {"train": [recs[:6], recs[6:]]}, CLASSES)


def _jobs(root: Path, skip: int, workers: int) -> list:
    shards = split_shards(read_manifest(root), root, "train")
    stream = ShardStream(shards, rank=1, world=2, seed=4, shuffle_buffer=3)
    jobs = ClipJobs(
        stream,
        train=True,
        frames=4,
        sampling="uniform",
        stride=2,
        size=16,
        min_scale=0.35,
        flip=(True, [1, 0, 2]),
        eval_clips=1,
        eval_crops=1,
        dali_codecs=CPU_CODECS,
        gpu=False,
        seed=4,
        start_step=0,
        num_classes=len(CLASSES),
        skip=skip,
        chunk=3,  # resumes at 4 and 10 (below) fall inside a chunk of one worker
    )
    loader = worker_loader(jobs, workers, prefetch_factor=4)  # as data/sources.py makes it
    items = start_workers(loader)  # as data/ forks its workers: no DALI garbage in them
    try:
        return [_comparable(item) for item in itertools.islice(unchunked(items), 30)]
    finally:
        stop_workers(items)


def _comparable(item: ClipJob | dict) -> tuple:
    if not isinstance(item, ClipJob):
        return ("marker", sorted((k, str(v)) for k, v in item.items()))
    if item.frames is not None:  # decoded by PyAV in the worker: the crop and frames are in them
        return ("job", item.labels, None, item.frames.tobytes())
    views = [(idx.tolist(), tuple(box)) for idx, box in item.views]
    return ("job", item.labels, views, item.data)


def test_own_share_counts_each_item_once() -> None:
    for items, workers in itertools.product(range(12), (1, 2, 3)):
        shares = [own_share(items, w, workers) for w in range(workers)]
        assert shares == [len(range(w, items, workers)) for w in range(workers)]


def test_own_share_of_chunked_workers_counts_each_item_once() -> None:
    for items, workers, chunk in itertools.product(range(30), (1, 2, 3), (1, 2, 4)):
        owners = [(i // chunk) % workers for i in range(items)]
        shares = [own_share(items, w, workers, chunk) for w in range(workers)]
        assert shares == [owners.count(w) for w in range(workers)], (items, workers, chunk)
    with pytest.raises(ValueError, match="chunk"):
        own_share(3, 0, 1, chunk=0)


def test_chunked_items_come_back_in_order() -> None:
    assert list(chunked(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(unchunked(chunked(range(7), 3))) == list(range(7))
    assert list(chunked([], 3)) == []
    with pytest.raises(ValueError, match="chunk size"):
        next(chunked(range(3), 0))


class _Numbered(ChunkedWorkerItems):
    """Worker w's n-th item is (w, n); its share of the first `skip` items are replay markers."""

    def _worker_items(self, worker: int, workers: int, replay: int):
        return ({SKIPPED: 1} if n < replay else (worker, n) for n in range(40))


@pytest.mark.parametrize("workers", [0, 2])
def test_chunked_workers_resume_mid_chunk_with_the_same_items(workers: int) -> None:
    """A resume position need not end a chunk (skipped records count as items): the workers'
    chunk-aware replay shares still continue the stream item for item."""

    def stream(skip: int) -> list:
        loader = worker_loader(_Numbered(skip=skip, chunk=4), workers, prefetch_factor=2)
        items = start_workers(loader)
        try:
            return list(itertools.islice(unchunked(items), 30))
        finally:
            stop_workers(items)

    whole = stream(0)
    if workers == 2:  # chunks alternate between the workers
        assert [w for w, _ in whole[:12]] == [0] * 4 + [1] * 4 + [0] * 4
    for skip in (5, 8, 13):
        resumed = stream(skip)
        assert resumed[:skip] == [{SKIPPED: 1}] * skip
        assert resumed[skip:] == whole[skip:], f"items after {skip} differ"


@pytest.mark.parametrize("workers", [0, 2])
def test_replayed_stream_continues_with_the_same_items(shards: Path, workers: int) -> None:
    whole = _jobs(shards, 0, workers)
    markers = {key for kind, *rest in whole if kind == "marker" for key, _ in rest[0]}
    assert markers == {"__bad__", "detail", "__corrupt__"}, "every kind of item is in the stream"
    assert sum(kind == "job" for kind, *_ in whole) > 15
    for n in (4, 10):  # with 2 workers, shares the unchunked count would get wrong
        resumed = _jobs(shards, n, workers)
        assert resumed[:n] == [("marker", [(SKIPPED, "1")])] * n
        assert resumed[n:] == whole[n:], f"items after {n} differ"


def _source(root: Path, workers: int, prefetch: int, repeats: int = 1):
    cfg = DataConfig(
        repeat_aug=repeats,
        root=str(root),
        frames=4,
        shuffle_buffer=3,
        workers=workers,
        prefetch=prefetch,
        decoder="dali",
        flip="always",
    )
    return cpu_train_batches(cfg, batch_size=3 * repeats, seed=2)


def _take(source, count: int, start_step: int = 0, position=None, at: int | None = None):
    """`count` batches; with `at`, also the position after the first `at` of them."""
    stream = source.batches(start_step, position)
    batches, saved = [], None
    try:
        for i in range(count):
            batches.append(next(stream))
            if at is not None and i + 1 == at:
                saved = json.loads(json.dumps(source.position()))  # through a checkpoint file
    finally:
        stream.close()
        source.close()
    return batches, saved


@pytest.mark.parametrize("workers,prefetch", [(0, 0), (0, 2), (2, 0), (2, 2)])
def test_batches_resumed_at_a_position_equal_the_uninterrupted_ones(
    shards: Path, workers: int, prefetch: int
) -> None:
    whole, saved = _take(_source(shards, workers, prefetch), 7, at=3)
    assert saved["items"] >= 9 and saved["workers"] == workers
    assert saved["counters"]["clips"] == 9
    source = _source(shards, workers, prefetch)
    resumed, _ = _take(source, 4, start_step=3, position=saved)
    for (a, la), (b, lb) in zip(whole[3:], resumed, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
    after = source.position()
    assert after["items"] > saved["items"]
    assert after["counters"]["clips"] == 9 + 4 * 3, "counters continue from the saved ones"


@pytest.mark.parametrize("workers", [0, 2])
def test_repeated_clips_resume_exactly(shards: Path, workers: int) -> None:
    """`data.repeat_aug=2`: a batch holds whole videos' groups, so a position still cuts the
    stream exactly, PyAV-decoded (H.264) and skipped records included."""
    whole, saved = _take(_source(shards, workers, 2, repeats=2), 5, at=2)
    assert saved["counters"]["clips"] == 12
    source = _source(shards, workers, 2, repeats=2)
    resumed, _ = _take(source, 3, start_step=2, position=saved)
    for (a, la), (b, lb) in zip(whole[2:], resumed, strict=True):
        assert a.shape[0] == 6 and torch.equal(a, b) and torch.equal(la, lb)
    assert source.position()["counters"]["clips"] == 12 + 3 * 6


def test_position_of_another_stream_starts_anew_with_a_warning(
    shards: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, saved = _take(_source(shards, 2, 0), 2, at=2)
    with caplog.at_level(logging.WARNING, logger="data.replay"):
        batches, _ = _take(_source(shards, 0, 0), 1, start_step=2, position=saved)
    assert len(batches) == 1
    assert "does not fit this stream (workers 2 -> 0)" in caplog.text


def test_metrics_log_truncated_to_the_resumed_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path, enabled=True)
    for step in (1, 2, 2, 3, 4):
        log.write({"step": step, "loss": float(step)})
    with path.open("a") as fh:
        fh.write('{"step": 5, "lo')  # a line a kill -9 cut short
    assert log.truncate_after(2) == 3
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 2]
    log.write({"step": 3, "loss": 3.0})
    assert path.read_text().splitlines()[-1] == '{"step": 3, "loss": 3.0}'
    assert MetricsLog(tmp_path / "none.jsonl", enabled=True).truncate_after(0) == 0


def test_data_position_is_in_the_checkpoint_and_its_manifest(tmp_path: Path) -> None:
    from tests.engine_helpers import NUM_CLASSES, tiny_trainer
    from tests.tensor_batches import TensorBatches

    trainer = tiny_trainer("mode=frozen")
    source = TensorBatches(NUM_CLASSES, 4, 4, 32)
    trainer.train_step(*next(source.batches(0)))
    meta = {"mode": "frozen", "spatial_weights": None}
    ckpt = save_checkpoint(
        trainer.engine, tmp_path, 1, meta, rank=0, keep=2, data_position=source.position()
    )
    digests = json.loads((ckpt / "sha256.json").read_text())
    assert "data_rank0.json" in digests
    assert read_data_position(ckpt, rank=0) == {"index": 1}
    assert read_data_position(ckpt, rank=1) is None  # saved by fewer ranks: no position
    (ckpt / "data_rank0.json").write_text(json.dumps({"index": 0}))
    with pytest.raises(CheckpointError, match="sha256"):
        read_data_position(ckpt, rank=0)


def test_skipped_items_are_not_decoded(shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import data.jobs

    calls = []
    real = data.jobs.decode_views

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(data.jobs, "decode_views", counted)
    shards_list = split_shards(read_manifest(shards), shards, "train")
    kw = dict(
        train=True,
        frames=4,
        sampling="uniform",
        stride=2,
        size=16,
        min_scale=0.35,
        flip=(False, [0, 1, 2]),
        eval_clips=1,
        eval_crops=1,
        dali_codecs=None,  # every job decoded by PyAV here
        gpu=False,
        seed=0,
        start_step=0,
        num_classes=len(CLASSES),
    )
    stream = ShardStream(shards_list, rank=0, world=1, shuffle_buffer=3)
    items = list(itertools.islice(unchunked(iter(ClipJobs(stream, skip=20, **kw))), 20))
    assert all(SKIPPED in item for item in items) and not calls


def test_a_batch_source_refuses_a_loader_whose_items_are_not_chunked() -> None:
    """The consumer side unchunks what it reads: a loader over plain items would hand it
    items where it expects lists."""
    with pytest.raises(TypeError, match="_worker_items"):
        ChunkedWorkerItems()  # a stream that says nothing about its items
    passes = PrefetchedPasses()
    with pytest.raises(TypeError, match="ChunkedWorkerItems"):
        passes._start_workers(worker_loader(_Plain(), 0, prefetch_factor=2))
    items = passes._start_workers(worker_loader(_Numbered(chunk=3), 0, prefetch_factor=2))
    assert list(itertools.islice(items, 4)) == [(0, 0), (0, 1), (0, 2), (0, 3)]


class _Plain(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(range(3))
