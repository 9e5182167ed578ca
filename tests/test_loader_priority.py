"""`data.loader_nice`: the loader's threads and worker processes (DALI's threads included) run
below the training step's CPU priority, and the step's own thread keeps its priority."""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data.config import DataConfig
from data.dali_decode import dali_available
from data.fork import start_workers, stop_workers, worker_loader
from data.prefetch import Prefetcher
from data.priority import thread_nice
from tests.data_helpers import cpu_train_batches, video_record, write_shard_set

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux's")

CPU = torch.device("cpu")


def _task_nice(tid: int | str) -> tuple[str, int]:
    """(name, nice) of one of this process's threads, from /proc."""
    task = Path(f"/proc/self/task/{tid}")
    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
    return (task / "comm").read_text().strip(), int(fields[16])


def test_the_producer_thread_runs_below_its_consumer() -> None:
    base = thread_nice()
    seen = list(Prefetcher(lambda: (thread_nice() for _ in range(3)), depth=2, device=CPU, nice=3))
    assert seen == [min(19, base + 3)] * 3
    assert thread_nice() == base


def test_a_synchronous_pass_leaves_the_callers_priority_alone() -> None:
    """`data.prefetch=0` decodes in the step's own thread: lowering it would slow the step."""
    base = thread_nice()
    seen = list(Prefetcher(lambda: (thread_nice() for _ in range(2)), depth=0, device=CPU, nice=3))
    assert seen == [base, base] and thread_nice() == base


class _Nices(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield from (np.array(thread_nice()) for _ in range(2))


def test_dataloader_workers_run_below_the_trainer() -> None:
    base = thread_nice()
    items = start_workers(worker_loader(_Nices(), 2, prefetch_factor=2, nice=4))
    try:
        assert [int(x) for x in items] == [min(19, base + 4)] * 4
    finally:
        stop_workers(items)
    assert thread_nice() == base


def test_config_refuses_a_nice_value_outside_what_linux_takes() -> None:
    for bad in (-1, 20):
        with pytest.raises(ValueError, match=rf"data.loader_nice must be in \[0, 19\], got {bad}"):
            DataConfig(loader_nice=bad)


@pytest.mark.skipif(not dali_available(), reason="nvidia-dali is not installed")
def test_a_training_source_decodes_below_the_step(tmp_path) -> None:
    """The real source: DALI's own threads (started by the producer thread) and the workers
    run 5 below the caller; nothing of the caller's changes."""
    rng = np.random.default_rng(0)
    recs = [
        (f"c{i}", video_record(rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8), i % 2))
        for i in range(6)
    ]
    root = write_shard_set(tmp_path, {"train": [recs]}, ["a", "b"])
    base = thread_nice()
    before = {p.pid for p in multiprocessing.active_children()}
    threads_before = set(os.listdir("/proc/self/task"))
    cfg = DataConfig(root=str(root), frames=2, shuffle_buffer=2, workers=2, decoder="dali")
    assert cfg.loader_nice == 10  # the default
    cfg.loader_nice = 5
    src = cpu_train_batches(cfg, batch_size=2, seed=0)
    try:
        stream = src.batches(0)
        assert next(stream)[0].shape[0] == 2
        workers = [p.pid for p in multiprocessing.active_children() if p.pid not in before]
        assert len(workers) == 2
        assert all(os.getpriority(os.PRIO_PROCESS, pid) == min(19, base + 5) for pid in workers)
        new = [_task_nice(t) for t in set(os.listdir("/proc/self/task")) - threads_before]
        dali = [nice for name, nice in new if name.startswith("[DALI]")]
        assert dali and all(nice == min(19, base + 5) for nice in dali), new
        assert thread_nice() == base
    finally:
        src.close()
