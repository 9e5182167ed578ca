"""Training and evaluation batch sources over a shard directory (what `data.loader` exports).

Pipeline: DataLoader workers stream records (`data.stream`) and turn them into jobs
(`data.jobs`: frame indices, crop boxes); the main process decodes them with DALI
(`data.dali_decode`) into `B×T×C×H×W` on the target device (`data.batcher`). Clips DALI cannot
decode on this device (H.264 etc. on CPU), and everything when `decoder='pyav'`, are decoded
with PyAV inside the workers instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch

from data.batcher import Batcher
from data.config import DataConfig
from data.dali_decode import CPU_CODECS, MIXED_CODECS, DaliClipDecoder, dali_available
from data.jobs import ClipJobs, flip_policy
from data.manifest import read_manifest, split_shards
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


def _dataloader(jobs: ClipJobs, workers: int) -> torch.utils.data.DataLoader:
    kw = {"prefetch_factor": 4, "persistent_workers": False} if workers > 0 else {}
    return torch.utils.data.DataLoader(jobs, batch_size=None, num_workers=workers, **kw)


class StreamingBatches:
    """Common state of the train and eval batch sources."""

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
    ):
        if cfg.root is None:
            raise ValueError("data.root is not set")
        self.cfg, self.root = cfg, Path(cfg.root)
        self.manifest = read_manifest(self.root)
        self.shards = shards_with_samples(
            split_shards(self.manifest, self.root, split), f"split '{split}' of {self.root}"
        )
        self.num_classes = len(self.manifest["classes"])
        self.device, self.dtype, self.batch_size = device, dtype, batch_size
        self.img_size, self.mean, self.std = img_size, tuple(mean), tuple(std)
        self.dali_codecs = _decoder_choice(cfg, device)
        self._dali: DaliClipDecoder | None = None
        if self.dali_codecs is not None:
            self._dali = DaliClipDecoder(
                max_batch=batch_size * views,
                size=img_size,
                mean=mean,
                std=std,
                device=device,
                num_threads=max(1, min(4, (os.cpu_count() or 2))),
            )
        self.decoder = self._dali.name if self._dali else "pyav"
        self.counters = {
            "corrupt_skipped": 0,
            "bad_label_skipped": 0,
            "bad_meta_skipped": 0,
            "data_wait_s": 0.0,
            "clips": 0,
        }

    def stats(self) -> dict[str, float]:
        return dict(self.counters)

    def close(self) -> None:
        self._dali = None

    def _decoded(self, stream: ShardStream, **job_options) -> Batcher:
        """Clip jobs from `stream` (sampling, crop boxes) decoded and batched on the device."""
        cfg = self.cfg
        jobs = ClipJobs(
            stream,
            frames=cfg.frames,
            sampling=cfg.sampling,
            stride=cfg.stride,
            size=self.img_size,
            mean=self.mean,
            std=self.std,
            dali_codecs=self.dali_codecs,
            num_classes=self.num_classes,
            **job_options,
        )
        return Batcher(
            _dataloader(jobs, cfg.workers),
            self._dali,
            self.batch_size,
            self.device,
            self.dtype,
            self.counters,
            max_skipped=max(1000, sum(count for _, count in self.shards)),
        )


class TrainBatchSource(StreamingBatches):
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
        super().__init__(cfg, cfg.train_split, device, dtype, batch_size, 1, img_size, mean, std)
        self.rank, self.world, self.seed, self.resample = rank, world_size, seed, resample
        self.flip = flip_policy(cfg.flip, self.manifest)

    def batches(self, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cfg = self.cfg
        stream = ShardStream(
            self.shards,
            rank=self.rank,
            world=self.world,
            seed=self.seed,
            start_step=start_step,
            resample=self.resample,
            shuffle_buffer=cfg.shuffle_buffer,
        )
        batcher = self._decoded(
            stream,
            train=True,
            min_scale=cfg.min_scale,
            flip=self.flip,
            eval_clips=1,
            eval_crops=1,
            seed=self.seed,
            start_step=start_step,
        )
        for frames, labels in batcher:
            yield frames[:, 0], labels


class EvalBatchSource(StreamingBatches):
    """One exact pass over this rank's share of the val split, `(B×V×T×C×H×W, B)`."""

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

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cfg = self.cfg
        stream = ShardStream(
            self.shards,
            rank=self.rank,
            world=self.world,
            resample=False,
            epochs=1,
            limit=self.max_videos,
        )
        yield from self._decoded(
            stream,
            train=False,
            min_scale=1.0,
            flip=(False, []),
            eval_clips=cfg.eval_clips,
            eval_crops=cfg.eval_crops,
            seed=0,
            start_step=0,
        )


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
