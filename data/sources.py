"""Training and evaluation batch sources over a shard directory (what `data.loader` exports).

Pipeline: DataLoader workers stream records (`data.stream`) and turn them into jobs
(`data.jobs`: frame indices, crop boxes); the main process decodes them with DALI
(`data.dali_decode`) into `B×T×C×H×W` on the target device (`data.batcher`). Clips DALI cannot
decode on this device (H.264 etc. on CPU), and everything when `decoder='pyav'`, are decoded
with PyAV inside the workers instead.

Exact resume: every training batch leaves the stream at a `StreamPosition` (DataLoader items
pulled so far). `TrainBatchSource.position()` is that of the last batch handed to the trainer,
which the checkpoint keeps; `batches(start_step, position)` rebuilds the stream as it was at
step 0 and replays it to there (`ClipJobs.skip`), so the resumed run sees the same clips, crops
and flips as an uninterrupted one, with any number of workers and any prefetch depth.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from common.seeding import torch_generator
from data.batcher import Batcher, StreamPosition
from data.config import DataConfig
from data.dali_decode import CPU_CODECS, MIXED_CODECS, dali_available
from data.dali_pool import AnyDaliDecoder, dali_decoder
from data.fork import worker_loader
from data.jobs import ClipJobs, flip_policy
from data.manifest import read_manifest, split_shards
from data.prefetch import PrefetchedPasses, Prefetcher
from data.records import skip_limit
from data.replay import ReplayableStream
from data.shard_check import shards_with_samples
from data.stream import ShardStream


def _decoder_choice(cfg: DataConfig, device: torch.device) -> frozenset[str] | None:
    """Codecs DALI decodes here, or None for the pure PyAV path."""
    if cfg.decoder == "pyav":
        return None
    if not dali_available():
        if cfg.decoder == "dali":
            raise RuntimeError("data.decoder='dali' but nvidia-dali is not importable")
        return None
    return MIXED_CODECS if device.type == "cuda" else CPU_CODECS


def _dataloader(
    jobs: ClipJobs, cfg: DataConfig, persistent: bool, generator: torch.Generator
) -> torch.utils.data.DataLoader:
    """Items in a fixed order: one chunk from each worker in turn (what `ClipJobs.skip` relies
    on, through `data.fork.own_share`).

    `generator` gives the loader's base seed, which otherwise comes from the global torch RNG:
    making an iterator would then move the RNG dropout uses, and a resumed run (whose RNG is
    restored from the checkpoint) would draw other dropout masks than an uninterrupted one.
    """
    # two chunks (batches) ahead per worker, as a batched DataLoader's default: items decoded
    # by PyAV in the worker are whole clips (4.8 MB at 32 x 224 px), a chunk a batch of them
    return worker_loader(
        jobs,
        cfg.resolved_workers(),
        prefetch_factor=2,
        persistent=persistent,
        generator=generator,
        nice=cfg.loader_nice,
    )


class StreamingBatches(PrefetchedPasses):
    """Common state of the train and eval batch sources: shards, decoder, counters, prefetch."""

    def __init__(
        self,
        cfg: DataConfig,
        split: str,
        device: torch.device,
        dtype: torch.dtype,
        batch_size: int,
        views: int,
        img_size: int,
        mean: tuple,
        std: tuple,
        repeats: int = 1,
    ):
        if cfg.root is None:
            raise ValueError("data.root is not set")
        self.cfg, self.root = cfg, Path(cfg.root)
        self.manifest = read_manifest(self.root)
        self.shards = shards_with_samples(
            split_shards(self.manifest, self.root, split), f"split '{split}' of {self.root}"
        )
        self.num_classes = len(self.manifest["classes"])
        if batch_size % repeats:
            raise ValueError(
                f"a batch of {batch_size} clips cannot hold {repeats} clips per video "
                "(data.repeat_aug must divide the micro-batch size)"
            )
        self.device, self.dtype, self.batch_size = device, dtype, batch_size
        self.repeats = repeats
        self.img_size, self.mean, self.std = img_size, tuple(mean), tuple(std)
        self.dali_codecs = _decoder_choice(cfg, device)
        self._dali: AnyDaliDecoder | None = None
        if self.dali_codecs is not None:
            self._dali = dali_decoder(
                max_batch=batch_size * views // repeats,  # items: videos, not clips
                size=img_size,
                device=device,
                num_threads=cfg.resolved_dali_threads(),
                pipelines=cfg.dali_pipelines,
                views=repeats,
            )
        self.decoder = self._dali.name if self._dali else "pyav"
        self.counters = {
            "corrupt_skipped": 0,
            "bad_label_skipped": 0,
            "bad_meta_skipped": 0,
            "cpu_fallback_clips": 0,
            "clips": 0,
        }
        super().__init__()

    def close(self) -> None:
        """Stop prefetch threads and release the DALI pipeline; safe to call twice."""
        super().close()
        if self._dali is not None:
            self._dali.close()
        self._dali = None

    def _jobs(self, stream: ShardStream, **job_options) -> ClipJobs:
        cfg = self.cfg
        return ClipJobs(
            stream,
            frames=cfg.frames,
            sampling=cfg.sampling,
            stride=cfg.stride,
            size=self.img_size,
            dali_codecs=self.dali_codecs,
            gpu=self.device.type == "cuda",
            num_classes=self.num_classes,
            gop_trim=cfg.gop_trim,
            repeats=self.repeats,
            # one loader item per batch (`data.fork.chunked`): items one by one cost the
            # consumer's thread a pipe read and profiler hooks each, under the step's GIL
            chunk=max(1, self.batch_size // self.repeats),
            **job_options,
        )

    def _batched(self, loader: torch.utils.data.DataLoader, skip: int = 0) -> Prefetcher:
        """Decoded batches of `loader`'s jobs, `data.prefetch` batches ahead of the consumer:
        `(frames, labels, StreamPosition)`; the first `skip` items are replay markers."""
        jobs = self._start_workers(loader)
        prefetcher = Prefetcher(
            lambda: iter(
                Batcher(
                    jobs,
                    self._dali,
                    batch_size=self.batch_size,
                    size=self.img_size,
                    device=self.device,
                    dtype=self.dtype,
                    mean=self.mean,
                    std=self.std,
                    counters=self.counters,
                    max_skipped=skip_limit(self.shards),
                    skip=skip,
                )
            ),
            depth=self.cfg.prefetch,
            device=self.device,
            nice=self.cfg.loader_nice,
        )
        return self._started(prefetcher)


class TrainBatchSource(StreamingBatches, ReplayableStream):
    """Endless training micro-batches `(B×T×C×H×W, B)`; see `open_train_batches`."""

    def __init__(
        self,
        cfg,
        *,
        batch_size,
        img_size,
        mean,
        std,
        rank,
        world_size,
        seed,
        device,
        dtype,
        resample: bool = True,
    ):
        super().__init__(
            cfg,
            cfg.train_split,
            device,
            dtype,
            batch_size,
            1,
            img_size,
            mean,
            std,
            repeats=cfg.repeat_aug,
        )
        self.rank, self.world, self.seed, self.resample = rank, world_size, seed, resample
        self.flip = flip_policy(cfg.flip, self.manifest)
        self._position = StreamPosition(0, dict(self.counters))

    def batches(
        self, start_step: int = 0, position: dict[str, Any] | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Micro-batches from optimiser step `start_step` on.

        `position` (what `position()` returned when a checkpoint was saved) continues the
        stream exactly where that run left it. Without one (a fresh run, or a checkpoint of an
        older version), or when it does not fit this stream (other worker count, world size or
        shards), the stream is seeded for `start_step`: new clips, not the ones the run would
        have seen.
        """
        cfg = self.cfg
        skip = self._replay_items(position, start_step)
        seed_step = 0 if skip is not None else start_step
        self._position = StreamPosition(skip or 0, dict(self.counters))
        stream = ShardStream(
            self.shards,
            rank=self.rank,
            world=self.world,
            seed=self.seed,
            start_step=seed_step,
            resample=self.resample,
            shuffle_buffer=cfg.shuffle_buffer,
        )
        jobs = self._jobs(
            stream,
            train=True,
            min_scale=cfg.min_scale,
            flip=self.flip,
            eval_clips=1,
            eval_crops=1,
            seed=self.seed,
            start_step=seed_step,
            skip=skip or 0,
        )
        generator = torch_generator(self.seed, "dataloader", self.rank, self.world, seed_step)
        loader = _dataloader(jobs, cfg, persistent=False, generator=generator)
        batched = self._batched(loader, skip or 0)  # workers and decoding start now
        return self._handed_out(batched, lambda frames: frames[:, 0])  # one view per clip


class EvalBatchSource(StreamingBatches):
    """One exact pass over this rank's share of the val split per iteration, `(B×V×T×C×H×W, B)`.

    Build it once per run and iterate it at every evaluation: the DALI pipeline and the
    DataLoader's worker processes are kept between passes.
    """

    def __init__(
        self,
        cfg,
        *,
        batch_size,
        img_size,
        mean,
        std,
        rank,
        world_size,
        device,
        dtype,
        max_videos: int | None = None,
    ):
        views = cfg.eval_clips * cfg.eval_crops
        super().__init__(cfg, cfg.val_split, device, dtype, batch_size, views, img_size, mean, std)
        self.rank, self.world, self.max_videos = rank, world_size, max_videos
        stream = ShardStream(
            self.shards,
            rank=self.rank,
            world=self.world,
            resample=False,
            epochs=1,
            limit=self.max_videos,
        )
        jobs = self._jobs(
            stream,
            train=False,
            min_scale=1.0,
            flip=(False, []),
            eval_clips=cfg.eval_clips,
            eval_crops=cfg.eval_crops,
            seed=0,
            start_step=0,
        )
        generator = torch_generator(0, "dataloader-eval", rank, world_size)
        self._loader = _dataloader(jobs, cfg, persistent=True, generator=generator)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._loader is None:
            raise RuntimeError("this eval source is closed")
        for frames, labels, _ in self._batched(self._loader):
            yield frames, labels

    def close(self) -> None:
        """Also drop the loader: its persistent workers were ended by `super().close()`."""
        super().close()
        self._loader = None


def open_train_batches(
    cfg: DataConfig,
    *,
    batch_size: int,
    img_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    rank: int,
    world_size: int,
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
) -> TrainBatchSource:
    """Training stream: resampled shards, shuffle buffer, random crops; deterministic given
    (seed, rank, start_step). `.decoder` names the decoder in use."""
    return TrainBatchSource(
        cfg,
        batch_size=batch_size,
        img_size=img_size,
        mean=mean,
        std=std,
        rank=rank,
        world_size=world_size,
        seed=seed,
        device=device,
        dtype=dtype,
    )


def open_eval_batches(
    cfg: DataConfig,
    *,
    batch_size: int,
    img_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    rank: int,
    world_size: int,
    device: torch.device,
    dtype: torch.dtype,
    max_videos: int | None = None,
) -> EvalBatchSource:
    """Evaluation pass: every val video (of the first `max_videos`) on exactly one rank."""
    return EvalBatchSource(
        cfg,
        batch_size=batch_size,
        img_size=img_size,
        mean=mean,
        std=std,
        rank=rank,
        world_size=world_size,
        device=device,
        dtype=dtype,
        max_videos=max_videos,
    )
