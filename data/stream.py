"""Stream records from WebDataset shards, split by node (rank/world) and DataLoader worker.

Two modes:
- resampled (training): each (rank, worker) draws shards at random with replacement, forever,
  through a shuffle buffer; the stream is a pure function of (seed, rank, worker, start_step).
- exact (evaluation, and epoch-based checks): every sample goes to exactly one (rank, worker)
  slot per pass. With at least as many shards as slots whole shards are dealt out; otherwise
  every slot reads all shards and keeps samples whose global index falls on it, which stays
  exact however few shards there are.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from webdataset.tariterators import tarfile_samples

from common.seeding import int_seed, python_rng


@dataclass(frozen=True)
class Slot:
    """Which share of the data this reader owns: rank × DataLoader worker."""

    rank: int
    world: int
    worker: int
    workers: int

    @property
    def index(self) -> int:
        return self.rank * self.workers + self.worker

    @property
    def total(self) -> int:
        return self.world * self.workers


def current_slot(rank: int, world: int) -> Slot:
    info = torch.utils.data.get_worker_info()
    if info is None:
        return Slot(rank, world, 0, 1)
    return Slot(rank, world, info.id, info.num_workers)


class _Corrupt(Exception):
    pass


def _count_errors(counter: list[int]) -> Callable[[Exception], bool]:
    def handler(exc: Exception) -> bool:
        counter[0] += 1
        return True  # keep going

    return handler


def tar_samples(url: str, errors: list[int]) -> Iterator[dict]:
    """Samples of one tar (`__key__`, extension -> bytes); unreadable parts are counted, skipped."""
    source = iter([{"url": url}])
    yield from tarfile_samples(source, handler=_count_errors(errors))


def shuffled(items: Iterator, buffer: int, rng: random.Random) -> Iterator:
    """Reservoir shuffle: hold `buffer` items, emit a random one as each new one arrives."""
    if buffer <= 1:
        yield from items
        return
    pool: list = []
    for item in items:
        if len(pool) < buffer:
            pool.append(item)
            continue
        j = rng.randrange(len(pool))
        pool[j], item = item, pool[j]
        yield item
    rng.shuffle(pool)
    yield from pool


def exact_pass(
    shards: list[tuple[str, int]], slot: Slot, errors: list[int], epoch_seed: int | None = None
) -> Iterator[dict]:
    """This slot's share of one pass; `epoch_seed` shuffles shard order (the same for all slots)."""
    order = list(range(len(shards)))
    if epoch_seed is not None:
        random.Random(epoch_seed).shuffle(order)
    offsets, total = [], 0
    for _, count in shards:
        offsets.append(total)
        total += count
    if len(shards) >= slot.total:
        for pos in order[slot.index :: slot.total]:
            for i, sample in enumerate(tar_samples(shards[pos][0], errors)):
                yield {**sample, "__index__": offsets[pos] + i}
        return
    for pos in order:
        for i, sample in enumerate(tar_samples(shards[pos][0], errors)):
            if (offsets[pos] + i) % slot.total == slot.index:
                yield {**sample, "__index__": offsets[pos] + i}


def resampled(
    shards: list[tuple[str, int]], slot: Slot, errors: list[int], seed: int, start_step: int
) -> Iterator[dict]:
    """Endless shard draws with replacement; deterministic given seed, slot and start_step."""
    rng = python_rng(
        seed, "shard-draw", slot.rank, slot.world, slot.worker, slot.workers, start_step
    )
    while True:
        url = shards[rng.randrange(len(shards))][0]
        yield from tar_samples(url, errors)


class ShardStream(torch.utils.data.IterableDataset):
    """Raw WebDataset samples for this rank and DataLoader worker.

    Read errors inside tars are counted and surface as `{"__corrupt__": n}` markers, so the
    count can travel from worker processes to the batch source's `.stats()`.
    """

    def __init__(
        self,
        shards: list[tuple[str, int]],
        *,
        rank: int,
        world: int,
        seed: int = 0,
        start_step: int = 0,
        resample: bool = True,
        shuffle_buffer: int = 0,
        epochs: int | None = None,
        limit: int | None = None,
    ):
        if not shards:
            raise ValueError("no shards to read")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world size {world}")
        self.shards, self.rank, self.world = shards, rank, world
        self.seed, self.start_step = seed, start_step
        self.resample, self.shuffle_buffer = resample, shuffle_buffer
        self.epochs, self.limit = epochs, limit

    def _source(self, slot: Slot, errors: list[int]) -> Iterator[dict]:
        if self.resample:
            yield from resampled(self.shards, slot, errors, self.seed, self.start_step)
            return
        epoch = 0
        while self.epochs is None or epoch < self.epochs:
            shuffle = (
                None if self.shuffle_buffer <= 1 else int_seed(self.seed, "epoch-order", epoch)
            )
            for sample in exact_pass(self.shards, slot, errors, shuffle):
                if self.limit is None or sample.get("__index__", 0) < self.limit:
                    yield sample
            epoch += 1

    def __iter__(self) -> Iterator[dict]:
        slot = current_slot(self.rank, self.world)
        errors = [0]
        reported = 0
        rng = python_rng(self.seed, "shuffle", slot.index, slot.total, self.start_step)
        for sample in shuffled(self._source(slot, errors), self.shuffle_buffer, rng):
            if errors[0] > reported:
                yield {"__corrupt__": errors[0] - reported}
                reported = errors[0]
            yield sample
        if errors[0] > reported:
            yield {"__corrupt__": errors[0] - reported}
