"""Produce batch k+1 while step k runs: a bounded background thread in front of any iterator.

DALI's `run()`, the DataLoader's queue reads and PyTorch's copies release the GIL, so one
producer thread overlaps decoding with the training step (nanoGPT and timm prefetch the same
way). The order of items is the producer's, so a prefetched stream yields exactly what the
synchronous one does. On a GPU the producer works on its own CUDA stream; the consumer waits
for that stream's event before it touches a batch.

Failure never hangs: an exception in the producer is re-raised in the consumer, a producer
that dies without a word is reported, and `close()` stops the thread.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch

from data.fork import ChunkedWorkerItems, start_workers, stop_workers, unchunked
from data.priority import lower_thread_priority

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def _tensors(item: Any) -> list[torch.Tensor]:
    if isinstance(item, torch.Tensor):
        return [item]
    if isinstance(item, (tuple, list)):
        return [t for x in item for t in _tensors(x)]
    return []


class Prefetcher:
    """Iterate `make_iter()` in a background thread, at most `depth` items ahead.

    `depth=0` runs it in the caller's thread (the synchronous reference). `wait_s` accumulates
    the time the consumer spent waiting for items: the input pipeline's cost to the step.
    The producer thread, and every thread it starts (DALI's, when it builds the pipeline), runs
    `nice` steps below the consumer's CPU priority (`data.priority`).
    """

    def __init__(
        self,
        make_iter: Callable[[], Iterator[Any]],
        *,
        depth: int,
        device: torch.device,
        name: str = "vivit-prefetch",
        poll_s: float = 0.2,
        nice: int = 0,
    ):
        if device.type == "cuda" and device.index is None:  # the thread must name its GPU
            device = torch.device("cuda", torch.cuda.current_device())
        self.make_iter, self.depth, self.device = make_iter, depth, device
        self.name, self.poll_s, self.nice = name, poll_s, nice
        self.wait_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))

    def start(self) -> Prefetcher:
        """Start producing now, before the first item is asked for (a training run's first
        batches then decode while it starts up); iterating starts it otherwise. No-op for
        `depth=0` and when started."""
        if self.depth > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._produce, name=self.name, daemon=True)
            self._thread.start()
        return self

    @property
    def producing(self) -> bool:
        """Whether the producer thread is running (started, not ended)."""
        return self._thread is not None and self._thread.is_alive()

    def __iter__(self) -> Iterator[Any]:
        if self.depth <= 0:
            yield from self._synchronous()
            return
        self.start()
        try:
            while True:
                t0 = time.perf_counter()
                item = self._get()
                self.wait_s += time.perf_counter() - t0
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                batch, event = item
                if event is not None:
                    stream = torch.cuda.current_stream(self.device)
                    stream.wait_event(event)
                    for t in _tensors(batch):  # keep the producer stream's memory alive here
                        if t.is_cuda:
                            t.record_stream(stream)
                yield batch
        finally:
            self.close()

    def _synchronous(self) -> Iterator[Any]:
        it = self.make_iter()
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                self.wait_s += time.perf_counter() - t0
            yield item

    def _get(self) -> Any:
        while True:
            try:
                return self._queue.get(timeout=self.poll_s)
            except queue.Empty:
                if self._thread is not None and not self._thread.is_alive():
                    try:  # it may have put its last item just before ending
                        return self._queue.get_nowait()
                    except queue.Empty:
                        if self._stop.is_set():
                            raise RuntimeError(
                                f"{self.name}: this pass was closed (its source was closed or "
                                "started a newer pass)"
                            ) from None
                        raise RuntimeError(f"{self.name}: the producer thread died") from None

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=self.poll_s)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        cuda = self.device.type == "cuda"
        side = torch.cuda.Stream(self.device) if cuda else None
        try:
            lower_thread_priority(self.nice)
            if cuda:
                torch.cuda.set_device(self.device)
            it = self.make_iter()
            while not self._stop.is_set():
                if side is not None:
                    with torch.cuda.stream(side):
                        batch = next(it, _DONE)
                    event = torch.cuda.Event()
                    event.record(side)
                else:
                    batch, event = next(it, _DONE), None
                if batch is _DONE:
                    self._put(_DONE)
                    return
                if not self._put((batch, event)):
                    return
        except BaseException as e:  # surfaces in the consumer, never a silent hang
            self._put(_Failure(e))

    def close(self) -> None:
        """Stop the producer (it finishes the item in hand) and drop what it queued."""
        self._stop.set()
        self._drain()  # frees a producer blocked on a full queue
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
            self._drain()  # what it put between the first drain and seeing the stop

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return


def _stop_all_workers(worker_iters: list[Iterator[Any]], pid: int) -> None:
    """End the DataLoader workers of every listed iterator; safe twice. Only in the process
    that started them: a forked child holds a copy of the list, not the workers."""
    if os.getpid() != pid:
        return
    for items in worker_iters:
        stop_workers(items)
    worker_iters.clear()


class PrefetchedPasses:
    """What every batch source built on `Prefetcher` shares: its counters plus the time the
    consumer waited (all passes), `close()` stopping every pass, and use as a `with` block.

    A source its caller drops without `close()` still ends its DataLoader workers, when it is
    collected or at the latest in `weakref.finalize`'s exit hook (which holds the workers, not
    the source). Without it, a DALI-decoding source dropped that way kept its workers until
    DALI's exit hook collected it, and each worker sat out torch's 5 s join there
    (tests/test_prefetch.py: 11 s at exit for two workers, about 1 s with the hook).
    """

    counters: dict[str, int]

    def __init__(self) -> None:
        self._prefetchers: list[Prefetcher] = []
        self._worker_iters: list[Iterator[Any]] = []
        weakref.finalize(self, _stop_all_workers, self._worker_iters, os.getpid())

    def _start_workers(self, loader: torch.utils.data.DataLoader) -> Iterator[Any]:
        """The items of `loader` (over a `ChunkedWorkerItems`) one by one; its workers start
        now (`data.fork.start_workers`) and `close()` ends them."""
        if not isinstance(loader.dataset, ChunkedWorkerItems):
            raise TypeError(f"expected a loader over ChunkedWorkerItems, got {loader.dataset!r}")
        self._stop_producing()  # the new pass's workers fork with no other pass decoding
        items = start_workers(loader)
        if all(items is not known for known in self._worker_iters):  # persistent: the same
            self._worker_iters.append(items)
        return unchunked(items)

    def _stop_producing(self) -> None:
        """A source runs one pass at a time: its passes share one decoder (a DALI pipeline is
        not thread-safe: two producers feeding and running it at once hung one of them for
        good), its counters and its persistent workers. So a pass still producing is stopped
        before the next one starts; reading it afterwards is an error. Stopped passes that
        never waited are dropped."""
        for earlier in self._prefetchers:
            if earlier.producing:
                earlier.close()
        self._prefetchers = [p for p in self._prefetchers if p.wait_s > 0]

    def _started(self, prefetcher: Prefetcher) -> Prefetcher:
        """Start this pass's producer now (earlier passes stopped first), count its waits in
        `stats()` and stop it in `close()`. A training stream's first batches then decode
        while the run starts up, not inside its first step's time (`core.batches`)."""
        self._stop_producing()
        self._prefetchers.append(prefetcher)
        return prefetcher.start()

    def stats(self) -> dict[str, float]:
        """Counters, and `data_wait_total_s`: time the consumer waited for batches, all passes
        together (the trainer logs its own per-step `data_wait_s`)."""
        total = sum(p.wait_s for p in self._prefetchers)
        return {**self.counters, "data_wait_total_s": total}

    def close(self) -> None:
        """Stop the prefetch threads, then the DataLoader workers they read; safe twice."""
        for p in self._prefetchers:
            p.close()
        _stop_all_workers(self._worker_iters, os.getpid())

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
