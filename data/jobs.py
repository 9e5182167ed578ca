"""Worker side of the input pipeline: a WebDataset record -> label + views (frame indices and a
crop box each) + the encoded bytes for DALI, or the views decoded by PyAV right here.

Flip policy (`DataConfig.flip`): `never` - no flips; `auto` - flip only when the manifest says
the class set is `flip_safe` (the synthetic set is not: its left/right classes would swap);
`always` - flip, and relabel through the manifest's `flip_pairs` so a flipped "moves left"
is trained as "moves right". `auto` never relabels: relabelling is only correct when the pair
list is complete, which a user-built manifest cannot promise.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from common.seeding import numpy_rng
from data.augment import Box, eval_boxes, mirror, random_resized_crop
from data.dali_decode import gpu_decodable
from data.fork import ChunkedWorkerItems
from data.gop_trim import View, views_for_decoder
from data.manifest import VIDEO_EXTS
from data.pyav_decode import decode_views
from data.records import BadRecord, record_label, record_meta
from data.sampling import eval_indices, train_indices
from data.stream import ShardStream

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


@dataclass(frozen=True)
class ClipJob:
    """One video's work for the batcher (`data.batcher.Batcher`), made in a worker.

    Either `data` (the encoded video, cut to what its views need where `data.gop_trim` allows,
    for DALI in the main process) or `frames` (the views already decoded by PyAV here, a uint8
    `V×T×C×S×S` array: arrays cross to the main process cheaply, `data/fork.py`) is set.
    """

    views: list[View]
    """(frame indices, crop box) per view."""
    labels: tuple[int, ...]
    """One label per clip the job gives: one for a training clip or an evaluation video (its
    views are one clip's), k for repeated sampling (each view a clip of its own)."""
    data: bytes | None = None
    frames: np.ndarray | None = None
    fallback: str | None = None
    """Why a codec DALI handles here was decoded by PyAV instead (logged once)."""

    def __post_init__(self) -> None:
        if (self.data is None) == (self.frames is None):
            raise ValueError("a ClipJob holds either the encoded video or its decoded views")

    @property
    def repeated(self) -> bool:
        """Each view is a clip of its own (`data.repeat_aug` > 1)."""
        return len(self.labels) > 1

    @property
    def clips(self) -> int:
        return len(self.labels)


SKIPPED = "__skipped__"
"""Key of the marker a worker yields for an item it replays without producing (`ClipJobs.skip`)."""


def train_view(
    meta: dict,
    label: int,
    rng: np.random.Generator,
    *,
    frames: int,
    sampling: str,
    stride: int,
    min_scale: float,
    flip: tuple[bool, list[int]],
) -> tuple[np.ndarray, Box, int]:
    """One training view: frame indices, crop box, label (flipped with the box). The one
    training policy: `ClipJobs` draws it per pass, the token cache per stored view."""
    may_flip, flip_label = flip
    idx = train_indices(meta["frames"], frames, sampling, stride, rng)
    box = random_resized_crop(meta["height"], meta["width"], min_scale, rng)
    if may_flip and rng.random() < 0.5:
        box, label = mirror(box), flip_label[label]
    return idx, box, label


class ClipJobs(ChunkedWorkerItems):
    """Worker side: records -> `ClipJob`s (labels + views + bytes or decoded frames).

    One item per stream item: a job, or a `__bad__` / `__corrupt__` / `SKIPPED` marker dict,
    handed over in lists of `chunk` items (`data.fork.ChunkedWorkerItems`). A resumed stream's
    replayed items (`skip`) run the shard stream, its shuffle and the view draws, so every
    random stream is where it was, but yield only `{SKIPPED: 1}`, without copying or decoding
    the video.
    """

    def __init__(
        self,
        stream: ShardStream,
        *,
        train: bool,
        frames: int,
        sampling: str,
        stride: int,
        size: int,
        min_scale: float,
        flip: tuple[bool, list[int]],
        eval_clips: int,
        eval_crops: int,
        dali_codecs: frozenset[str] | None,
        gpu: bool,
        seed: int,
        start_step: int,
        num_classes: int,
        skip: int = 0,
        gop_trim: bool = False,
        repeats: int = 1,
        chunk: int = 1,
    ):
        super().__init__(skip=skip, chunk=chunk)
        self.stream, self.train = stream, train
        self.num_classes = num_classes
        self.frames, self.sampling, self.stride, self.size = frames, sampling, stride, size
        self.min_scale = min_scale
        self.may_flip, self.flip_label = flip
        self.eval_clips, self.eval_crops = eval_clips, eval_crops
        self.dali_codecs, self.gpu = dali_codecs, gpu
        self.seed, self.start_step = seed, start_step
        self.gop_trim = gop_trim
        self.repeats = repeats

    def _views(
        self, meta: dict, rng: np.random.Generator, label: int
    ) -> tuple[list[View], tuple[int, ...]]:
        """(views, labels): one training view, or `repeats` of them with a label each (every
        view becomes a clip of its own), or the evaluation views of one clip."""
        n, h, w = meta["frames"], meta["height"], meta["width"]  # checked by record_meta
        if self.train:
            drawn = [
                train_view(
                    meta,
                    label,
                    rng,
                    frames=self.frames,
                    sampling=self.sampling,
                    stride=self.stride,
                    min_scale=self.min_scale,
                    flip=(self.may_flip, self.flip_label),
                )
                for _ in range(self.repeats)
            ]
            return [(idx, box) for idx, box, _ in drawn], tuple(lab for _, _, lab in drawn)
        views = [
            (idx, box)
            for idx in eval_indices(n, self.frames, self.sampling, self.stride, self.eval_clips)
            for box in eval_boxes(h, w, self.eval_crops)
        ]
        return views, (label,)

    def _plan(
        self, sample: dict, rng: np.random.Generator
    ) -> tuple[str, tuple[int, ...], dict, list[View]]:
        """(video extension, labels, metadata, views): every random draw a record costs."""
        ext = next(e for e in VIDEO_EXTS if e in sample)
        label = record_label(sample["cls"], self.num_classes)
        meta = record_meta(sample["json"])
        views, labels = self._views(meta, rng, label)
        return ext, labels, meta, views

    def _job(self, sample: dict, rng: np.random.Generator) -> ClipJob:
        ext, labels, meta, views = self._plan(sample, rng)
        data = bytes(sample[ext])
        codec = meta.get("codec", "?")
        if self.dali_codecs is not None and codec in self.dali_codecs:
            if not self.gpu or gpu_decodable(codec, meta["width"], meta["height"]):
                data, views = views_for_decoder(data, views, codec, self.gop_trim)
                return ClipJob(views, labels, data=data)
            fallback = f"{codec} at {meta['width']}x{meta['height']} is below NVDEC's minimum"
        else:
            fallback = None if self.dali_codecs is None else f"DALI cannot decode {codec} here"
        frames = decode_views(data, views, self.size).numpy()
        return ClipJob(views, labels, frames=frames, fallback=fallback)

    def _worker_items(self, worker: int, workers: int, replay: int) -> Iterator[ClipJob | dict]:
        rank, world = self.stream.rank, self.stream.world
        rng = numpy_rng(self.seed, "augment", rank, world, worker, workers, self.start_step)
        return self._items(rng, replay)

    def _items(self, rng: np.random.Generator, replay: int) -> Iterator[ClipJob | dict]:
        for n, sample in enumerate(self.stream):
            if n < replay:
                self._replay(sample, rng)
                yield {SKIPPED: 1}
                continue
            if "__corrupt__" in sample:
                yield sample
                continue
            try:
                yield self._job(sample, rng)
            except BadRecord as e:
                where = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
                yield {"__bad__": e.kind, "detail": f"record {where}: {e}"}
            except Exception as e:  # a bad record is skipped and counted, never a crash
                log.debug("skipping record %s: %s", sample.get("__key__"), e)
                yield {"__corrupt__": 1}

    def _replay(self, sample: dict, rng: np.random.Generator) -> None:
        """Draw what `_job` would draw for this record, and nothing more: no copy, no decode."""
        if "__corrupt__" in sample:
            return
        # a record that fails here fails the same way in `_job`, after the same draws
        with contextlib.suppress(Exception):
            self._plan(sample, rng)
