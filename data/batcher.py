"""Main-process side of the input pipeline: worker jobs -> decoded batches on the device.

Clips stay uint8 until they are on the training device (a quarter of float32's bytes through
the host and the copy); `data.augment.normalise` then scales them there in the compute dtype.
On a GPU the host side of a batch sits in pinned memory so the copy does not block the host.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from data.augment import normalise
from data.dali_pool import AnyDaliDecoder
from data.job_decode import decode_jobs
from data.jobs import SKIPPED, ClipJob
from data.records import SkipGuard

log = logging.getLogger(__name__)


def replayed(item: object, pulled: int, skip: int, t0: float) -> None:
    """Check that stream item `pulled` (of the `skip` a resumed run replays) is a worker's
    replay marker (`SKIPPED`); log once the replay is done."""
    if not (isinstance(item, dict) and SKIPPED in item):
        raise RuntimeError(
            f"resuming at item {skip} of the data stream, item {pulled} is not a replay "
            "marker: the workers and the batcher disagree on the position"
        )
    if pulled == skip:
        log.info(
            "data stream replayed to item %d in %.1f s (read, not decoded)",
            pulled,
            time.perf_counter() - t0,
        )


@dataclass(frozen=True)
class StreamPosition:
    """Where a batch leaves the job stream: resuming at `items` continues right after it.

    Once the batcher emits a batch, every item it has pulled is used up (in that batch, or
    skipped as bad), so the count of pulled items is an exact cut of the stream.
    """

    items: int
    """DataLoader items (jobs and markers) pulled up to and including this batch."""
    counters: dict[str, int]
    """The source's counters (`corrupt_skipped`, `clips`...) once this batch was emitted."""


class Batcher:
    """Groups worker jobs into batches, decodes the DALI ones, moves and normalises each batch.

    Yields `(frames V-view B×V×T×C×H×W in dtype, labels B, StreamPosition)` on `device`. A clip
    DALI cannot decode is tried once more with PyAV (`data.job_decode`) before it is counted in
    `corrupt_skipped`. `skip=N` drops the first N items, which must be the workers' replay
    markers (`ClipJobs(skip=N)`).
    """

    def __init__(
        self,
        jobs: Iterator[ClipJob | dict],
        decoder: AnyDaliDecoder | None,
        *,
        batch_size: int,
        size: int,
        device: torch.device,
        dtype: torch.dtype,
        mean: Sequence[float],
        std: Sequence[float],
        counters: dict,
        max_skipped: int,
        skip: int = 0,
    ):
        self.jobs, self.decoder, self.batch_size = jobs, decoder, batch_size
        self.size, self.device, self.dtype = size, device, dtype
        self.mean, self.std = tuple(mean), tuple(std)
        self.counters = counters
        self.skip = skip
        self._warned: set[str] = set()
        self._guard = SkipGuard(max_skipped, counters)

    def _warn_once(self, reason: str) -> None:
        kind = reason.split(" at ")[0]
        if kind not in self._warned:
            log.warning("%s; decoding such clips with PyAV on the CPU (logged once)", reason)
            self._warned.add(kind)

    def _decode(self, jobs: list[ClipJob]) -> tuple[list[tuple[torch.Tensor, int]], int]:
        """(uint8 V×T×C×S×S clip, label) for every clip of the jobs that decode, and how many
        jobs (videos) neither decoder could read; those are counted in `corrupt_skipped`."""
        out, lost = [], 0
        for job, got in zip(jobs, decode_jobs(jobs, self.decoder, self.size), strict=True):
            if job.fallback:
                self._warn_once(job.fallback)
            if got.views is None:
                self.counters["corrupt_skipped"] += 1
                lost += 1
                continue
            if got.cpu_retry:
                self.counters["cpu_fallback_clips"] += job.clips
                self._warn_once("DALI could not decode a clip")
            out += _clips(job, got.views)
        return out, lost

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, StreamPosition]]:
        ready: list[tuple[torch.Tensor, int]] = []
        pending: list[ClipJob] = []
        pending_clips = 0  # clips the pending jobs will give (a running sum: this is per clip)
        pulled, t0 = 0, time.perf_counter()
        for job in self.jobs:
            pulled += 1
            if pulled <= self.skip:
                replayed(job, pulled, self.skip, t0)
                continue
            if not isinstance(job, ClipJob):  # a corrupt or bad record's marker
                self._skipped(job)
                continue
            pending.append(job)
            pending_clips += job.clips
            if pending_clips + len(ready) >= self.batch_size:
                decoded, lost = self._decode(pending)
                if decoded:
                    self._guard.good()
                self._guard.skipped(lost)  # records, not clips: a video gives k of them
                ready += decoded
                pending, pending_clips = [], 0
            if len(ready) >= self.batch_size:
                yield self._emit(ready[: self.batch_size], pulled)
                ready = ready[self.batch_size :]
        ready += self._decode(pending)[0]
        while ready:
            yield self._emit(ready[: self.batch_size], pulled)
            ready = ready[self.batch_size :]

    def _skipped(self, marker: dict) -> None:
        """Count a record a worker could not make a job of (`ClipJobs`' markers)."""
        if "__corrupt__" in marker:
            self.counters["corrupt_skipped"] += int(marker["__corrupt__"])
            self._guard.skipped(int(marker["__corrupt__"]))
        else:
            self._count_bad(marker["__bad__"], marker["detail"])
            self._guard.skipped(1)

    def _count_bad(self, kind: str, detail: str) -> None:
        key = f"bad_{kind}_skipped"
        if not self.counters[key]:
            log.warning("skipping %s (further ones are only counted: %s)", detail, key)
        self.counters[key] += 1

    def _emit(
        self, items: list[tuple[torch.Tensor, int]], pulled: int
    ) -> tuple[torch.Tensor, torch.Tensor, StreamPosition]:
        self.counters["clips"] += len(items)
        position = StreamPosition(pulled, dict(self.counters))
        frames = to_device([f for f, _ in items], self.device)
        labels = torch.tensor([lab for _, lab in items], dtype=torch.long)
        if self.device.type == "cuda":
            labels = labels.pin_memory()
        labels = labels.to(self.device, non_blocking=True)
        return normalise(frames, self.mean, self.std, self.dtype), labels, position


def _clips(job: ClipJob, views: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """A job's decoded `V×T×C×S×S` views as (clip, label) pairs: one V-view clip, or V
    one-view clips of repeated sampling."""
    if job.repeated:
        return [(views[v : v + 1], label) for v, label in enumerate(job.labels)]
    return [(views, job.labels[0])]


def to_device(clips: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Stack uint8 clips, some already on `device` (DALI mixed), some on the host (PyAV)."""
    host = [i for i, c in enumerate(clips) if c.device.type == "cpu"]
    if not host or (len(host) == len(clips) and device.type == "cpu"):
        return torch.stack(clips).to(device)  # by type: torch.device("cuda") != "cuda:0"
    out = torch.empty((len(clips), *clips[0].shape), dtype=torch.uint8, device=device)
    staged = torch.stack([clips[i] for i in host])
    if device.type == "cuda":
        staged = staged.pin_memory()
    out[host] = staged.to(device, non_blocking=True)
    on_device = [i for i in range(len(clips)) if i not in set(host)]
    if on_device:
        out[on_device] = torch.stack([clips[i] for i in on_device])
    return out
