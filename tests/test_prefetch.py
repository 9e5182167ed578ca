"""Decoding overlapped with the step: the prefetching source yields exactly the synchronous
source's batches, and a failure in the background thread surfaces, never hangs."""

from __future__ import annotations

import gc
import multiprocessing
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

import data.prefetch
from data.config import DataConfig
from data.dali_decode import dali_available
from data.prefetch import Prefetcher
from tests.data_helpers import (
    cpu_eval_batches,
    cpu_train_batches,
    level,
    video_record,
    write_shard_set,
)

MEAN, STD = (0.45, 0.5, 0.55), (0.2, 0.25, 0.3)


def _shards(tmp_path, n: int = 12):
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n):
        frames = np.repeat(rng.integers(0, 255, (8, 8, 8, 3), dtype=np.uint8), 4, axis=1)
        recs.append((f"c{i}", video_record(np.repeat(frames, 4, axis=2), i % 4, "vp9")))
    return write_shard_set(
        tmp_path, {"train": [recs[: n // 2], recs[n // 2 :]], "val": [recs[:4]]}, list("abcd")
    )


def _train(root, prefetch: int, **kw):
    return cpu_train_batches(
        DataConfig(root=str(root), frames=4, shuffle_buffer=4, workers=2, prefetch=prefetch, **kw),
        batch_size=3,
        seed=3,
        mean=MEAN,
        std=STD,
    )


def _eval(root):
    return cpu_eval_batches(
        DataConfig(root=str(root), frames=4, workers=2, eval_clips=2),
        batch_size=2,
        mean=MEAN,
        std=STD,
    )


@pytest.mark.parametrize("decoder", ["auto", "pyav"])
def test_prefetched_batches_equal_the_synchronous_ones(tmp_path, decoder) -> None:
    root = _shards(tmp_path)
    got = {}
    for depth in (0, 3):
        src = _train(root, depth, decoder=decoder)
        it = src.batches(0)
        got[depth] = [next(it) for _ in range(6)]
        src.close()
    for (fa, la), (fb, lb) in zip(got[0], got[3], strict=True):
        assert torch.equal(la, lb) and torch.equal(fa, fb)


def test_eval_source_is_reused_and_exact_on_every_pass(tmp_path) -> None:
    root = _shards(tmp_path)
    src = _eval(root)
    passes = [[(f.clone(), y.clone()) for f, y in src] for _ in range(3)]
    assert sum(len(y) for _, y in passes[0]) == 4
    for other in passes[1:]:
        assert all(
            torch.equal(a, c) and torch.equal(b, d)
            for (a, b), (c, d) in zip(passes[0], other, strict=True)
        )
    src.close()


def test_uint8_leaves_the_decoder_and_is_normalised_on_the_device(tmp_path) -> None:
    recs = [
        (f"c{i}", video_record(np.full((6, 32, 32, 3), level(i), np.uint8), i, "vp9"))
        for i in range(4)
    ]
    root = write_shard_set(tmp_path, {"train": [recs]}, list("abcd"))
    src = _train(root, 2)
    frames, labels = next(src.batches(0))
    for clip, y in zip(frames, labels.tolist(), strict=True):
        expected = (level(y) / 255.0 - torch.tensor(MEAN)) / torch.tensor(STD)
        assert torch.allclose(clip.mean(dim=(0, 2, 3)), expected, atol=0.02)
    src.close()


@pytest.mark.parametrize("kind", ["train", "eval"])
def test_close_ends_the_dataloader_workers(tmp_path, kind) -> None:
    """An endless stream's workers (and the eval source's persistent ones) end in `close()`,
    not at interpreter exit, where each process exit sat out torch's 5 s join timeout."""
    root = _shards(tmp_path)
    before = {p.pid for p in multiprocessing.active_children()}
    if kind == "train":
        src = _train(root, 2)
        next(src.batches(0))  # the generator stays suspended, as the trainer leaves it
    else:
        src = _eval(root)
        assert sum(len(y) for _, y in src) == 4
    workers = [p for p in multiprocessing.active_children() if p.pid not in before]
    assert len(workers) == 2
    t0 = time.perf_counter()
    src.close()
    assert not any(p.is_alive() for p in workers)
    assert time.perf_counter() - t0 < 4  # torch's join timeout is 5 s


def _prefetching(ignore: frozenset[threading.Thread] = frozenset()) -> bool:
    """Whether a prefetch thread runs (other than those in `ignore`)."""
    return any(
        t.name == "vivit-prefetch" and t.is_alive() and t not in ignore
        for t in threading.enumerate()
    )


def test_a_training_stream_starts_decoding_before_its_first_batch_is_asked_for(tmp_path) -> None:
    """`batches()` starts the workers and the producer at once, so a run's first batches decode
    while it starts up (MLflow, logs), not inside its first step's time."""
    root = _shards(tmp_path)
    before = {p.pid for p in multiprocessing.active_children()}
    earlier = frozenset(threading.enumerate())  # another test's leftovers are not this one's
    src = _train(root, 2)
    assert not _prefetching(earlier)
    stream = src.batches(0)  # nothing asked for yet
    workers = [p for p in multiprocessing.active_children() if p.pid not in before]
    assert len(workers) == 2 and _prefetching(earlier)
    deadline = time.monotonic() + 60
    while src.stats()["clips"] < 6 and time.monotonic() < deadline:  # two batches decoded
        time.sleep(0.05)
    assert src.stats()["clips"] >= 6
    frames, labels = next(stream)
    assert frames.shape[0] == 3 and src.stats()["data_wait_total_s"] < 0.5
    src.close()
    assert not _prefetching(earlier)


def test_close_stops_a_stream_that_was_never_read(tmp_path) -> None:
    """A stream asked for and dropped before its first batch (its producer already running)
    is still stopped by the source's `close()`, also after a newer stream replaced it."""
    earlier = frozenset(threading.enumerate())
    src = _train(_shards(tmp_path), 2)
    src.batches(0)  # never read
    stream = src.batches(0)
    assert next(stream)[0].shape[0] == 3
    src.close()
    deadline = time.monotonic() + 5
    while _prefetching(earlier) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _prefetching(earlier)


@pytest.mark.skipif(not dali_available(), reason="nvidia-dali is not installed")
def test_a_newer_stream_stops_the_earlier_ones_producer_first(tmp_path, monkeypatch) -> None:
    """The streams of one source share its DALI pipeline, which is not thread-safe: with two
    producers decoding at once one of them hung for good (its `close()` sat out the 30 s join
    and the thread stayed). The earlier producer is stopped before the newer stream's workers
    fork, and reading the earlier stream then says it was closed."""
    earlier = frozenset(threading.enumerate())
    src = _train(_shards(tmp_path), 2, decoder="dali")
    producing_at_fork = []

    def start_workers(loader):
        producing_at_fork.append(_prefetching(earlier))
        return fork_start_workers(loader)

    fork_start_workers = data.prefetch.start_workers
    monkeypatch.setattr(data.prefetch, "start_workers", start_workers)
    try:
        first = src.batches(0)
        deadline = time.monotonic() + 60
        while src.stats()["clips"] < 3 and time.monotonic() < deadline:  # it is decoding
            time.sleep(0.02)
        second = src.batches(0)
        assert producing_at_fork == [False, False]
        producers = [
            t for t in threading.enumerate() if t.name == "vivit-prefetch" and t not in earlier
        ]
        assert len([t for t in producers if t.is_alive()]) == 1
        assert next(second)[0].shape[0] == 3
        with pytest.raises(RuntimeError, match="this pass was closed"):
            next(first)
    finally:
        src.close()
    assert not _prefetching(earlier)


def test_a_source_dropped_without_close_does_not_delay_the_exit(tmp_path) -> None:
    """A caller that drops its source without `close()` (as the bench worker once did): its
    workers end with the process at once. Before, DALI's exit hook reached them first and
    each sat out torch's 5 s join (11 s for this script's two workers, 1 s after)."""
    root = _shards(tmp_path)
    script = f"""
import time
from tests.test_prefetch import _train
def run():
    src = _train({str(root)!r}, 2)  # decoder auto: DALI on the CPU
    it = src.batches(0)
    for _ in range(3):
        next(it)
run()
print("exiting", time.time(), flush=True)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    end = time.time()
    assert proc.returncode == 0, proc.stderr[-2000:]
    started = float(proc.stdout.split("exiting")[1].split()[0])
    assert end - started < 4, f"exit took {end - started:.1f} s"


def test_a_failure_in_the_producer_surfaces_in_the_consumer() -> None:
    def broken():
        yield 1
        raise ValueError("decoder exploded")

    got = []
    with pytest.raises(ValueError, match="decoder exploded"):
        for x in Prefetcher(broken, depth=2, device=torch.device("cpu")):
            got.append(x)
    assert got == [1]


def test_a_producer_that_dies_silently_is_reported_not_waited_for(monkeypatch) -> None:
    p = Prefetcher(lambda: iter(range(10)), depth=2, device=torch.device("cpu"), poll_s=0.05)
    monkeypatch.setattr(p, "_produce", lambda: None)  # a thread that ends with nothing queued
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="producer thread died"):
        list(p)
    assert time.perf_counter() - t0 < 5


def test_close_stops_a_blocked_producer() -> None:
    p = Prefetcher(lambda: iter(range(10**9)), depth=2, device=torch.device("cpu"), poll_s=0.05)
    it = iter(p)
    assert next(it) == 0
    it.close()  # the consumer walks away: generator exit closes the prefetcher
    time.sleep(0.3)
    assert not any(t.name == "vivit-prefetch" and t.is_alive() for t in threading.enumerate())


def test_the_decoder_runs_ahead_of_the_consumer() -> None:
    """With depth 2 the producer works while the consumer is busy: total time ~ max, not sum."""

    def slow():
        for i in range(6):
            time.sleep(0.1)  # "decoding"
            yield i

    gc.collect()  # no finaliser of an earlier test's loader inside the timed region
    t0 = time.perf_counter()
    for _ in Prefetcher(slow, depth=2, device=torch.device("cpu")):
        time.sleep(0.1)  # "the step"
    overlapped = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in Prefetcher(slow, depth=0, device=torch.device("cpu")):
        time.sleep(0.1)
    serial = time.perf_counter() - t0
    assert overlapped < 0.8 * serial, (overlapped, serial)


def test_dataloaders_made_after_a_prefetching_source_do_not_hang(tmp_path) -> None:
    """Regression: workers forked from the prefetch thread left the next DataLoader of the
    process waiting forever for its workers (seen as a hung test_data_stream)."""
    root = _shards(tmp_path)
    script = f"""
import torch
from tests.test_prefetch import _train
src = _train({str(root)!r}, 2)
it = src.batches(0)
for _ in range(3):
    next(it)
src.close()
class Numbers(torch.utils.data.IterableDataset):
    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        yield from range(info.id, 20, info.num_workers)
got = sorted(torch.utils.data.DataLoader(Numbers(), batch_size=None, num_workers=2))
assert got == list(range(20)), got
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
