"""Public entry points: training and evaluation batch sources over a shard directory.

Pipeline: DataLoader workers stream records (`data.stream`), choose frame indices
(`data.sampling`) and crop boxes (`data.augment`); the main process decodes them with DALI
(`data.dali_decode`) into `B×T×C×H×W` on the target device. Clips DALI cannot decode on this
device (H.264 etc. on CPU), and everything when `decoder='pyav'`, are decoded with PyAV inside
the workers instead.

Flip policy (`DataConfig.flip`): `never` - no flips; `auto` - flip only when the manifest says
the class set is `flip_safe` (the synthetic set is not: its left/right classes would swap);
`always` - flip, and relabel through the manifest's `flip_pairs` so a flipped "moves left"
is trained as "moves right". `auto` never relabels: relabelling is only correct when the pair
list is complete, which a user-built manifest cannot promise.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from common.seeding import numpy_rng
from data.augment import crop_resize_normalise, eval_boxes, mirror, random_resized_crop
from data.config import DataConfig
from data.dali_decode import CPU_CODECS, MIXED_CODECS, DaliClipDecoder, dali_available
from data.manifest import MANIFEST, VIDEO_EXTS, read_manifest, split_shards
from data.pyav_decode import decode_frames
from data.sampling import eval_indices, train_indices
from data.stream import ShardStream

__all__ = [
    "ensure_dataset",
    "open_eval_batches",
    "open_train_batches",
    "read_manifest",
]

log = logging.getLogger(__name__)


def flip_policy(flip: str, manifest: dict) -> tuple[bool, list[int]]:
    """(may flip, label after a flip) for `DataConfig.flip` and this manifest."""
    n = len(manifest["classes"])
    identity = list(range(n))
    if flip == "never" or (flip == "auto" and not manifest.get("flip_safe", True)):
        return False, identity
    if flip == "always":
        for a, b in manifest.get("flip_pairs", []):
            identity[a], identity[b] = b, a
    return True, identity


class _ClipJobs(torch.utils.data.IterableDataset):
    """Worker side: records -> label + views (frame indices, crop box) + bytes or decoded frames."""

    def __init__(
        self,
        stream: ShardStream,
        *,
        train: bool,
        frames: int,
        sampling: str,
        stride: int,
        size: int,
        mean: tuple,
        std: tuple,
        min_scale: float,
        flip: tuple[bool, list[int]],
        eval_clips: int,
        eval_crops: int,
        dali_codecs: frozenset[str] | None,
        seed: int,
        start_step: int,
    ):
        self.stream, self.train = stream, train
        self.frames, self.sampling, self.stride, self.size = frames, sampling, stride, size
        self.mean, self.std, self.min_scale = mean, std, min_scale
        self.may_flip, self.flip_label = flip
        self.eval_clips, self.eval_crops = eval_clips, eval_crops
        self.dali_codecs = dali_codecs
        self.seed, self.start_step = seed, start_step

    def _views(self, meta: dict, rng: np.random.Generator, label: int):
        n, h, w = int(meta["frames"]), int(meta["height"]), int(meta["width"])
        if self.train:
            idx = train_indices(n, self.frames, self.sampling, self.stride, rng)
            box = random_resized_crop(h, w, self.min_scale, rng)
            if self.may_flip and rng.random() < 0.5:
                box, label = mirror(box), self.flip_label[label]
            return [(idx, box)], label
        views = [
            (idx, box)
            for idx in eval_indices(n, self.frames, self.sampling, self.stride, self.eval_clips)
            for box in eval_boxes(h, w, self.eval_crops)
        ]
        return views, label

    def _job(self, sample: dict, rng: np.random.Generator) -> dict:
        ext = next(e for e in VIDEO_EXTS if e in sample)
        label = int(sample["cls"])
        meta = json.loads(sample["json"])
        views, label = self._views(meta, rng, label)
        data = bytes(sample[ext])
        codec = meta.get("codec", "?")
        if self.dali_codecs is not None and codec in self.dali_codecs:
            return {"label": label, "data": data, "views": views}
        mean, std = torch.tensor(self.mean), torch.tensor(self.std)
        all_idx = np.concatenate([idx for idx, _ in views])
        decoded = torch.from_numpy(decode_frames(data, all_idx))
        clips, t = [], self.frames
        for v, (_, box) in enumerate(views):
            clips.append(
                crop_resize_normalise(decoded[v * t : (v + 1) * t], box, self.size, mean, std)
            )
        return {
            "label": label,
            "frames": torch.stack(clips),
            "fallback": self.dali_codecs is not None,
        }

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        rng = numpy_rng(
            self.seed, "augment", self.stream.rank, self.stream.world, wid, nw, self.start_step
        )
        for sample in self.stream:
            if "__corrupt__" in sample:
                yield sample
                continue
            try:
                yield self._job(sample, rng)
            except Exception as e:  # a bad record is skipped and counted, never a crash
                log.debug("skipping record %s: %s", sample.get("__key__"), e)
                yield {"__corrupt__": 1}


class _Batcher:
    """Main-process side: groups jobs into batches, decodes the DALI ones, moves to device."""

    def __init__(
        self,
        loader: torch.utils.data.DataLoader,
        decoder: DaliClipDecoder | None,
        batch_size: int,
        device: torch.device,
        dtype: torch.dtype,
        counters: dict,
    ):
        self.loader, self.decoder, self.batch_size = loader, decoder, batch_size
        self.device, self.dtype, self.counters = device, dtype, counters
        self._warned = False

    def _decode(self, jobs: list[dict]) -> list[tuple[torch.Tensor, int]]:
        """(V×T×C×S×S clip, label) for every job that decodes; bad ones are counted."""
        flat = [(j["data"], idx, box) for j in jobs if "data" in j for idx, box in j["views"]]
        decoded, bad_views = (None, [])
        if flat:
            assert self.decoder is not None
            decoded, bad_views = self.decoder.decode(flat)
        bad = sorted(bad_views)
        out, pos = [], 0
        for job in jobs:
            if "frames" in job:
                if job.get("fallback") and not self._warned:
                    log.warning(
                        "DALI cannot decode this codec on %s; decoding with PyAV", self.device
                    )
                    self._warned = True
                out.append((job["frames"], job["label"]))
                continue
            start, v = pos, len(job["views"])
            pos += v
            if any(start <= b < start + v for b in bad):
                self.counters["corrupt_skipped"] += 1
                continue
            row = start - sum(1 for b in bad if b < start)  # DALI returns only the good views
            out.append((decoded[row : row + v], job["label"]))
        return out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ready: list[tuple[torch.Tensor, int]] = []
        pending: list[dict] = []
        it = iter(self.loader)
        t0 = time.perf_counter()
        while True:
            try:
                job = next(it)
            except StopIteration:
                break
            if "__corrupt__" in job:
                self.counters["corrupt_skipped"] += int(job["__corrupt__"])
                continue
            pending.append(job)
            if len(pending) + len(ready) >= self.batch_size:
                ready += self._decode(pending)
                pending = []
            if len(ready) >= self.batch_size:
                yield self._emit(ready[: self.batch_size], t0)
                ready = ready[self.batch_size :]
                t0 = time.perf_counter()
        ready += self._decode(pending)
        while ready:
            yield self._emit(ready[: self.batch_size], t0)
            ready = ready[self.batch_size :]
            t0 = time.perf_counter()

    def _emit(self, items: list[tuple[torch.Tensor, int]], t0: float):
        self.counters["data_wait_s"] += time.perf_counter() - t0
        self.counters["clips"] += len(items)
        frames = torch.stack([f for f, _ in items]).to(self.device, self.dtype, non_blocking=True)
        labels = torch.tensor([lab for _, lab in items], dtype=torch.long, device=self.device)
        return frames, labels


def _decoder_choice(cfg: DataConfig, device: torch.device) -> frozenset[str] | None:
    """Codecs DALI decodes here, or None for the pure PyAV path."""
    if cfg.decoder == "pyav":
        return None
    if not dali_available():
        if cfg.decoder == "dali":
            raise RuntimeError("data.decoder='dali' but nvidia-dali is not importable")
        return None
    return MIXED_CODECS if device.type == "cuda" else CPU_CODECS


def _dataloader(jobs: _ClipJobs, workers: int) -> torch.utils.data.DataLoader:
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
        self.shards = split_shards(self.manifest, self.root, split)
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
        self.counters = {"corrupt_skipped": 0, "data_wait_s": 0.0, "clips": 0}

    def stats(self) -> dict[str, float]:
        return dict(self.counters)

    def close(self) -> None:
        self._dali = None

    def _decoded(self, stream: ShardStream, **job_options) -> _Batcher:
        """Clip jobs from `stream` (sampling, crop boxes) decoded and batched on the device."""
        cfg = self.cfg
        jobs = _ClipJobs(
            stream,
            frames=cfg.frames,
            sampling=cfg.sampling,
            stride=cfg.stride,
            size=self.img_size,
            mean=self.mean,
            std=self.std,
            dali_codecs=self.dali_codecs,
            **job_options,
        )
        return _Batcher(
            _dataloader(jobs, cfg.workers),
            self._dali,
            self.batch_size,
            self.device,
            self.dtype,
            self.counters,
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


def ensure_dataset(cfg: DataConfig, seed: int) -> Path:
    """The shard directory, building the synthetic set there first when asked and absent.

    Ranks race here: a lock file serialises them and the set is built in a temporary
    directory and moved into place, so no rank ever sees half a dataset.
    """
    if cfg.root is None:
        raise ValueError("data.root is not set")
    root = Path(cfg.root)
    if (root / MANIFEST).is_file():
        return root
    if not cfg.synthetic:
        raise FileNotFoundError(
            f"no {MANIFEST} in {root}: build shards with `vivit shards build` or set data.synthetic=true"
        )
    from data.synthetic import make_synthetic

    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / f".{root.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / MANIFEST).is_file():
            return root
        tmp = root.parent / f".{root.name}.building-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        make_synthetic(
            tmp,
            clips=cfg.synth_clips,
            val_clips=max(1, cfg.synth_clips // 4),
            frames=max(16, cfg.frames),
            size=cfg.synth_size,
            seed=seed,
        )
        if root.exists():
            for child in tmp.iterdir():
                if child.name != MANIFEST:
                    os.replace(child, root / child.name)
            os.replace(tmp / MANIFEST, root / MANIFEST)  # last: marks the set complete
            tmp.rmdir()
        else:
            os.replace(tmp, root)
    return root
