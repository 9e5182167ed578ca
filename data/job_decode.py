"""Worker jobs (`data.jobs.ClipJob`) -> their decoded views, in the main process.

One owner for DALI-then-PyAV decoding, shared by the training batcher (`data.batcher`) and the
token-cache build (`data.cache_build`): the jobs' DALI items are decoded as one batch, a video
DALI refuses (NVDEC rejects some sizes and profiles the CPU decodes) is tried once more with
PyAV, and each job's views come back as one uint8 `V×T×C×S×S` tensor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from data.augment import Box
from data.dali_decode import views_item
from data.dali_pool import AnyDaliDecoder
from data.jobs import ClipJob
from data.pyav_decode import decode_views

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodedJob:
    """A job's views, and how they were decoded."""

    views: torch.Tensor | None
    """uint8 `V×T×C×S×S`; None when neither DALI nor PyAV could read the video."""
    cpu_retry: bool = False
    """DALI refused the video and PyAV decoded it."""


def decode_jobs(
    jobs: Sequence[ClipJob],
    decoder: AnyDaliDecoder | None,
    size: int,
    *,
    one_item: bool = False,
) -> list[DecodedJob]:
    """Each job's views, in order. Jobs PyAV decoded in the worker (`frames`) pass through.

    A job is one DALI item holding all its views when it is repeated sampling or `one_item`
    (the decoder was built with `views=V`: it decodes their union once and crops each view
    under its own box); otherwise it is one item per distinct crop box (`_decode_plan`), so an
    evaluation video of C temporal clips is decoded once, not C times, and each view is
    gathered from it.
    """
    plans = [
        (_one_item_plan(j.views) if one_item or j.repeated else _decode_plan(j.views))
        if j.data is not None
        else []
        for j in jobs
    ]
    flat = [
        (j.data, item.frames, item.box)
        for j, plan in zip(jobs, plans, strict=True)
        for item in plan
    ]
    decoded, bad_items = (None, [])
    if flat:
        if decoder is None:
            raise RuntimeError("jobs hold encoded videos for DALI but no DALI decoder was given")
        decoded, bad_items = decoder.decode(flat)
    bad = sorted(bad_items)
    out: list[DecodedJob] = []
    pos = 0
    for job, plan in zip(jobs, plans, strict=True):
        if job.frames is not None:  # decoded by PyAV in the worker
            out.append(DecodedJob(torch.from_numpy(job.frames)))
            continue
        start, n = pos, len(plan)
        pos += n
        if any(start <= b < start + n for b in bad):
            out.append(_retry_on_cpu(job, size))
            continue
        assert decoded is not None
        row = start - sum(1 for b in bad if b < start)  # DALI returns only the good items
        out.append(DecodedJob(_assemble(plan, decoded[row : row + n], len(job.views))))
    return out


def _retry_on_cpu(job: ClipJob, size: int) -> DecodedJob:
    assert job.data is not None
    try:
        return DecodedJob(decode_views(job.data, job.views, size), cpu_retry=True)
    except Exception as e:  # truly corrupt: counted by the caller
        log.debug("PyAV could not decode a clip DALI refused either: %s", e)
        return DecodedJob(None)


def _assemble(plan: list[_DecodeItem], clips: torch.Tensor, views: int) -> torch.Tensor:
    """A job's `V×T×C×S×S` views from its decoded DALI items."""
    if plan[0].gathers is None:  # one item, view v in its v-th T rows: no copy
        return clips[0].unflatten(0, (views, -1))
    out: list[torch.Tensor] = [clips[0][:0]] * views
    for item, clip in zip(plan, clips, strict=True):
        for v, gather in zip(item.views, item.gathers, strict=True):
            out[v] = clip[torch.from_numpy(gather)]
    return torch.stack(out)


@dataclass(frozen=True)
class _DecodeItem:
    """One DALI item of a job: the frames to decode under one crop box, and how its views
    (`views`, positions in the job) are gathered from them (None: the item's rows are the
    views' frames in turn, as decoded)."""

    box: Box | np.ndarray
    """The crop box; for a one-item job, a `V×4` array, one per view."""
    frames: np.ndarray
    views: list[int]
    gathers: list[np.ndarray] | None


def _one_item_plan(views: list[tuple[np.ndarray, Box]]) -> list[_DecodeItem]:
    """One item for all V views (`DaliClipDecoder(views=V)`)."""
    frames, boxes = views_item(views)
    return [_DecodeItem(boxes, frames, list(range(len(views))), None)]


def _decode_plan(views: list[tuple[np.ndarray, Box]]) -> list[_DecodeItem]:
    """The job's views grouped by crop box, in first-seen order, each group one DALI item.

    A group decodes the sorted union of its views' frame indices, padded with its last index
    to (views x T) frames so that every item of a batch has the same length; each view is
    gathered back by position.
    """
    groups: dict[tuple[float, ...], tuple[Box, list[int]]] = {}
    for v, (_, box) in enumerate(views):
        groups.setdefault(tuple(float(x) for x in box), (box, []))[1].append(v)
    plan = []
    for box, members in groups.values():
        if len(views) == 1:
            plan.append(_DecodeItem(box, np.asarray(views[0][0]), members, None))
            continue
        wanted = [np.asarray(views[v][0]) for v in members]
        union = np.unique(np.concatenate(wanted))
        size = sum(len(w) for w in wanted)
        frames = np.concatenate([union, np.full(size - len(union), union[-1])])
        gathers = [np.searchsorted(union, w) for w in wanted]
        plan.append(_DecodeItem(box, frames, members, gathers))
    return plan
