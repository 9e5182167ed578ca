"""Training batches from a token cache (`data.cache=DIR`): no decoding, no spatial forward.

The cache's view shards are streamed like video shards (`data.stream.ShardStream`, resampled,
through the shuffle buffer): each draw picks one (source shard, view) tar at random, so a
pass over the split's S source shards sees every clip once on average, in one of its K views
chosen at random. The stream is a pure function of (seed, rank, worker, start_step), as the
video stream is, and a resumed run continues it exactly (`data.replay`: the checkpoint's
position is replayed, the replayed records read but not decoded). Batches are `((frame embeddings B x T x D, patches B x T x N x D), labels B)`
on the device, tokens in the cache's half precision (the model casts them to its own).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.seeding import torch_generator
from data.batcher import StreamPosition, replayed
from data.cache_format import (
    EMBED,
    PATCHES,
    CacheError,
    check_spec,
    decode_array,
    read_cache_manifest,
    split_view_shards,
)
from data.config import DataConfig
from data.fork import ChunkedWorkerItems, worker_loader
from data.jobs import SKIPPED
from data.prefetch import PrefetchedPasses, Prefetcher
from data.records import BadRecord, SkipGuard, record_label, skip_limit
from data.replay import ReplayableStream
from data.shard_check import shards_with_samples
from data.stream import ShardStream

Tokens = tuple[torch.Tensor, torch.Tensor]


class _TokenRecords(ChunkedWorkerItems):
    """Worker side: cache records -> (embed T x D, patches T x N x D, label) as numpy arrays.

    Arrays, not tensors: a tensor crosses from a worker as a shared-memory file per tensor
    (two per clip), which cost more than the training step it feeds; an array is pickled into
    the worker's pipe in one copy.
    """

    def __init__(
        self,
        stream: ShardStream,
        num_classes: int,
        frames: int,
        patches: int,
        dim: int,
        skip: int = 0,
        chunk: int = 1,
    ):
        # a resumed run's replayed items are read and answered with a marker, not decoded
        super().__init__(skip=skip, chunk=chunk)
        self.stream, self.num_classes = stream, num_classes
        self.frames, self.patches, self.dim = frames, patches, dim

    def _record(self, sample: dict) -> tuple[np.ndarray, np.ndarray, int]:
        label = record_label(sample["cls"], self.num_classes)
        embed = decode_array(sample[EMBED])
        if PATCHES in sample:
            patches = decode_array(sample[PATCHES])
        else:
            patches = np.zeros((self.frames, 0, self.dim), embed.dtype)
        if embed.shape != (self.frames, self.dim) or patches.shape != (
            self.frames,
            self.patches,
            self.dim,
        ):
            raise BadRecord("meta", f"token shapes {embed.shape}, {patches.shape}")
        return embed, patches, label

    def _worker_items(self, worker: int, workers: int, replay: int) -> Iterator[Any]:
        for n, sample in enumerate(self.stream):
            if n < replay:
                yield {SKIPPED: 1}
                continue
            if "__corrupt__" in sample:
                yield sample
                continue
            try:
                yield self._record(sample)
            except BadRecord as e:
                yield {"__bad__": e.kind}
            except Exception:  # a truncated or foreign member: skipped and counted
                yield {"__corrupt__": 1}


class CachedTrainBatches(PrefetchedPasses, ReplayableStream):
    """Endless training micro-batches of cached tokens; see the module docstring.

    Implements the trainer's `TrainBatches` protocol (`core.batches`) with token batches in
    place of frames. Opening it checks the cache against the run: `expect` (the run's pinned
    fields, `core.cache_spec`) and the class list of the shards evaluation reads.
    """

    def __init__(
        self,
        cfg: DataConfig,
        *,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        device: torch.device,
        expect: dict[str, Any],
        classes: list[str],
    ):
        if cfg.cache is None:
            raise ValueError("data.cache is not set")
        self.cfg, self.root = cfg, Path(cfg.cache)
        self.manifest = read_cache_manifest(self.root)
        check_spec(self.manifest, expect, self.root)
        if list(self.manifest["classes"]) != list(classes):
            raise CacheError(
                f"token cache {self.root} was built from shards with classes "
                f"{self.manifest['classes'][:5]}... ({len(self.manifest['classes'])}), "
                f"data.root has {classes[:5]}... ({len(classes)}): evaluation would score "
                "other labels"
            )
        self.num_classes = len(classes)
        split = self.manifest["splits"].get(cfg.train_split)
        self.shards = shards_with_samples(
            split_view_shards(self.manifest, self.root, cfg.train_split),
            f"split '{cfg.train_split}' of token cache {self.root}",
        )
        self.views = int(split["views"])
        spec = self.manifest["spec"]
        self.frames = int(spec["data.frames"])
        self.patches, self.dim = int(spec["tokens"]["patches"]), int(spec["tokens"]["dim"])
        self.batch_size, self.rank, self.world, self.seed = batch_size, rank, world_size, seed
        self.device = device
        self.decoder = "token-cache"
        self.counters = {"corrupt_skipped": 0, "bad_label_skipped": 0, "bad_meta_skipped": 0}
        self.counters["clips"] = 0
        super().__init__()

    def batches(
        self, start_step: int = 0, position: dict[str, Any] | None = None
    ) -> Iterator[tuple[Tokens, torch.Tensor]]:
        """Micro-batches from optimiser step `start_step` on; `position` (what `position()`
        returned at a checkpoint) continues the stream exactly where that run left it, as the
        video source does (`data.replay`); without a fitting one the stream is seeded anew."""
        skip = self._replay_items(position, start_step)
        seed_step = 0 if skip is not None else start_step
        self._position = StreamPosition(skip or 0, dict(self.counters))
        stream = ShardStream(
            self.shards,
            rank=self.rank,
            world=self.world,
            seed=self.seed,
            start_step=seed_step,
            resample=True,
            shuffle_buffer=self.cfg.shuffle_buffer,
        )
        # one loader item per micro-batch: items one by one cost the step more than it took
        records = _TokenRecords(
            stream,
            self.num_classes,
            self.frames,
            self.patches,
            self.dim,
            skip=skip or 0,
            chunk=self.batch_size,
        )
        # the loader's base seed from the run's seed, not the global RNG dropout draws from
        generator = torch_generator(self.seed, "dataloader", self.rank, self.world, seed_step)
        # two micro-batches ahead per worker, as a batched DataLoader's default
        loader = worker_loader(
            records,
            self.cfg.resolved_workers(),
            prefetch_factor=2,
            generator=generator,
            nice=self.cfg.loader_nice,
        )
        items = self._start_workers(loader)
        prefetcher = Prefetcher(
            lambda: self._batched(items, skip or 0),
            depth=self.cfg.prefetch,
            device=self.device,
            nice=self.cfg.loader_nice,
        )
        return self._handed_out(self._started(prefetcher))  # reading starts now

    def _batched(
        self, items: Iterator[Any], skip: int
    ) -> Iterator[tuple[Tokens, torch.Tensor, StreamPosition]]:
        ready: list[tuple[np.ndarray, np.ndarray, int]] = []
        guard = SkipGuard(skip_limit(self.shards), self.counters, f" from token cache {self.root}")
        pulled, t0 = 0, time.perf_counter()
        for item in items:
            pulled += 1
            if pulled <= skip:
                replayed(item, pulled, skip, t0)
                continue
            if isinstance(item, dict):
                kind = "corrupt" if "__corrupt__" in item else f"bad_{item['__bad__']}"
                self.counters[f"{kind}_skipped"] += int(item.get("__corrupt__", 1))
                guard.skipped(1)
                continue
            guard.good()
            ready.append(item)
            if len(ready) == self.batch_size:
                tokens, labels = self._emit(ready)
                yield tokens, labels, StreamPosition(pulled, dict(self.counters))
                ready = []

    def _emit(self, items: list[tuple[np.ndarray, np.ndarray, int]]):
        self.counters["clips"] += len(items)
        embed = torch.from_numpy(np.stack([e for e, _, _ in items]))
        patches = torch.from_numpy(np.stack([p for _, p, _ in items]))
        labels = torch.tensor([y for _, _, y in items], dtype=torch.long)
        if self.device.type == "cuda":
            embed, patches, labels = embed.pin_memory(), patches.pin_memory(), labels.pin_memory()
        move = {"device": self.device, "non_blocking": True}
        return (embed.to(**move), patches.to(**move)), labels.to(**move)


def open_cached_train_batches(
    cfg: DataConfig,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    device: torch.device,
    expect: dict[str, Any],
    classes: list[str],
) -> CachedTrainBatches:
    """Training stream from `cfg.cache`, refused unless its pinned fields equal `expect`."""
    return CachedTrainBatches(
        cfg,
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        seed=seed,
        device=device,
        expect=expect,
        classes=classes,
    )
