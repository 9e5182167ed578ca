"""Start worker processes by `fork` without inheriting garbage that cannot be freed there.

A DALI pipeline left for the garbage collector (they sit in reference cycles) owns threads and
condition variables. Forked into a DataLoader or Pool worker, the child's collector frees it
and its destructor blocks forever in `pthread_cond_destroy` on a condition whose threads were
never copied: the worker hangs and so does its parent. This hung CI in a DataLoader started
after an earlier DALI source had been dropped.

So before forking: collect garbage here (where the pipelines' threads still exist), then
freeze every surviving object so the child's collector never walks what it inherited (the
recipe `gc.freeze`'s documentation gives for fork without exec). Unfrozen again once forked.

Every DataLoader of the data path is made by `worker_loader`, which hands a worker's items
over as they are: numpy arrays stay arrays (see `keep_arrays`).
"""

from __future__ import annotations

import abc
import ctypes
import functools
import gc
import itertools
import multiprocessing
import multiprocessing.pool
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from data.priority import lower_thread_priority


@contextmanager
def forking() -> Iterator[None]:
    """Wrap the call that forks workers: `iter(dataloader)`, `multiprocessing.Pool(...)`."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def process_pool(workers: int) -> Iterator[multiprocessing.pool.Pool]:
    """A fork Pool that ends by letting its workers finish (`close` + `join`).

    `with Pool(...)` ends with `terminate()`, which can deadlock when a worker is blocked on
    the task queue's lock (seen as an intermittent hang of the demo's synthetic-data build);
    `terminate()` is kept for the error path only.
    """
    with forking():
        pool = multiprocessing.get_context("fork").Pool(workers)
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


def keep_arrays(item: Any) -> Any:
    """DataLoader collate that leaves a worker's item as it is.

    The default one turns every numpy array into a tensor, and a tensor crosses from a worker
    as a shared-memory file of its own, handed over through a socket with an authentication
    handshake: milliseconds per tensor, a few per clip. Loading the demo's stage-1 batches
    alone (T=2, batch 16, 2-core CPU) took ~51 ms per batch that way, ~30 ms with arrays (the
    training step itself did not change: its batches were already ready). An array is pickled
    into the worker's pipe in one copy; the consumer wraps it with `torch.from_numpy`.
    """
    return item


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """A worker's items in lists of `size` (the last may be shorter), for `unchunked`.

    Each loader item costs the consumer's thread its own pipe read, unpickling and profiler
    hooks (~0.2 ms on the 2-core CPU), and those hold the interpreter lock the training step
    needs: 16 cached-token clips a step, handed over one by one, made the demo's cached step
    ~1.5x slower than the same step fed from a list. Resumes count the items a worker sends
    with `own_share(..., chunk=size)`.
    """
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def unchunked(chunks: Iterator[list[Any]]) -> Iterator[Any]:
    """The consumer's side of `chunked`: the items again, one by one, in order."""
    for chunk in chunks:
        yield from chunk


def own_share(items: int, worker: int, workers: int, chunk: int = 1) -> int:
    """How many of the DataLoader's first `items` items come from `worker`: the loader takes
    one loader item from each worker in turn, and a worker that hands its items over in
    chunks of `chunk` (`chunked`) makes item i worker (i // chunk) % workers's."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    rounds, rest = divmod(items, chunk * workers)
    return rounds * chunk + min(chunk, max(0, rest - worker * chunk))


class ChunkedWorkerItems(torch.utils.data.IterableDataset):
    """A resumable item stream split over DataLoader workers and handed over in `chunk`-item
    lists (`chunked`; the consumer reads it with `unchunked`).

    `skip=N` resumes the loader's item stream at item N: each worker replays its `own_share`
    of the first N items. Subclasses yield one worker's items from `_worker_items`.
    """

    def __init__(self, *, skip: int = 0, chunk: int = 1):
        self.skip = skip  # items of the whole stream a resumed run replays
        self.chunk = chunk  # items per loader item

    @abc.abstractmethod  # IterableDataset's metaclass is ABCMeta: a subclass must define it
    def _worker_items(self, worker: int, workers: int, replay: int) -> Iterator[Any]:
        """Worker `worker`'s items; the first `replay` of them only replayed (markers)."""

    def __iter__(self) -> Iterator[list[Any]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        replay = own_share(self.skip, wid, nw, self.chunk)
        return chunked(self._worker_items(wid, nw, replay), self.chunk)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def end_with_parent(_worker_id: int, parent: int) -> None:
    """DataLoader `worker_init_fn`: the worker gets SIGKILL when the trainer that forked it
    dies (Linux `PR_SET_PDEATHSIG`; elsewhere a no-op).

    A trainer killed with SIGKILL (the OOM killer, a preemption, `kill -9`) cannot stop its
    workers. torch's watchdog notices and the worker leaves its loop, but its exit then joins
    the result queue's feeder thread, which is blocked for good writing into the pipe nobody
    reads once more than the pipe's 64 kB are in flight: the worker never ended, kept its
    memory and the trainer's stdout and stderr (`subprocess.run` of the trainer never returned).
    The signal follows the thread that forked the worker, which is why `start_workers` forks
    in the consumer's thread.
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        return  # not allowed here: the old behaviour, nothing worse
    if os.getppid() != parent:  # the trainer died before the request took effect
        os._exit(1)


def _init_worker(worker_id: int, parent: int, nice: int) -> None:
    """DataLoader `worker_init_fn`: ends with its trainer, runs `nice` below its priority."""
    end_with_parent(worker_id, parent)
    lower_thread_priority(nice)  # the feeder thread the worker starts later inherits it


def worker_loader(
    items: torch.utils.data.IterableDataset,
    workers: int,
    *,
    prefetch_factor: int,
    persistent: bool = False,
    generator: torch.Generator | None = None,
    nice: int = 0,
) -> torch.utils.data.DataLoader:
    """A DataLoader over an iterable of ready items (`batch_size=None`), arrays kept as arrays.

    Make its iterator with `start_workers`: that is when the workers fork. The workers run
    `nice` steps below the trainer's CPU priority (`data.priority`).
    """
    kw: dict[str, Any] = {}
    if workers > 0:
        kw = {
            "prefetch_factor": prefetch_factor,
            "persistent_workers": persistent,
            "worker_init_fn": functools.partial(_init_worker, parent=os.getpid(), nice=nice),
        }
    return torch.utils.data.DataLoader(
        items,
        batch_size=None,
        num_workers=workers,
        collate_fn=keep_arrays,
        generator=generator,
        **kw,
    )


def start_workers(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    """`iter(loader)` inside `forking()`: its workers fork now, in the caller's thread (never
    a prefetch thread's), without DALI garbage. End them with `stop_workers`."""
    with forking():
        return iter(loader)


def stop_workers(iterator: Iterator[Any]) -> None:
    """End the worker processes of a DataLoader iterator now; safe twice, a no-op without workers.

    An endless stream's iterator is never exhausted, so nothing ends its workers before the
    garbage collector does, and that happened only at interpreter exit (from DALI's exit
    hook): the workers did not get torch's stop message there, and each exit sat out torch's
    5 s join timeout before killing them (py-spy: `_shutdown_workers` -> `join` in the parent,
    the worker waiting on its index queue).
    """
    shutdown = getattr(iterator, "_shutdown_workers", None)  # torch's own clean shutdown
    if shutdown is not None:
        shutdown()
