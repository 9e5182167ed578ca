"""One owner for turning worker jobs into decoded views (`data.job_decode`), shared by the
training batcher and the cache build: every way a job is decoded gives its views in order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.dali_decode import DaliClipDecoder
from data.dali_pool import DaliDecoderPool
from data.job_decode import decode_jobs
from data.jobs import ClipJob
from data.pyav_decode import decode_views
from data.transcode import encode_frames

SIZE = 16
BOX_A, BOX_B = (0.0, 0.0, 1.0, 1.0), (0.25, 0.25, 0.5, 0.5)
# an evaluation video's views: two temporal clips under each of two crops, as eval_boxes gives
FIRST, SECOND = np.array([1, 5, 9]), np.array([2, 9, 20])
VIEWS = [(FIRST, BOX_A), (FIRST, BOX_B), (SECOND, BOX_A), (SECOND, BOX_B)]


def _noise_video() -> bytes:
    """Blocky random frames: every frame and crop differs, so any wrong one shows."""
    blocks = np.random.default_rng(0).integers(0, 255, (24, 4, 4, 3)).astype(np.uint8)
    return encode_frames(np.repeat(np.repeat(blocks, 8, 1), 8, 2), fps=8.0, lossless=True)


class Refusing:
    """A DALI decoder that refuses the items of one video object (as NVDEC refuses some)."""

    def __init__(self, inner: DaliClipDecoder, refused: bytes):
        self.inner, self.refused = inner, refused

    def decode(self, items):
        kept = [i for i, item in enumerate(items) if item[0] is not self.refused]
        decoded, bad = self.inner.decode([items[i] for i in kept])
        refused = [i for i in range(len(items)) if i not in kept]
        return decoded, sorted(refused + [kept[b] for b in bad])


def _alone(data: bytes) -> torch.Tensor:
    """Each view decoded as a DALI item of its own: the reference."""
    dec = DaliClipDecoder(max_batch=4, size=SIZE, device=torch.device("cpu"), num_threads=1)
    decoded, bad = dec.decode([(data, idx, box) for idx, box in VIEWS])
    assert bad == []
    return decoded


def test_every_way_a_job_is_decoded_gives_its_views_in_order() -> None:
    data = _noise_video()
    want = _alone(data)
    refused = bytes(bytearray(data))  # the same video, a distinct object the decoder refuses
    jobs = [
        ClipJob(VIEWS, (0,), data=data),  # by crop box: views 0 and 2 from one item, 1 and 3
        ClipJob(VIEWS, (1,), frames=want.numpy()),  # decoded in the worker
        ClipJob(VIEWS, (2,), data=b"\x1aE\xdf\xa3garbage" * 8),  # neither decoder reads it
        ClipJob(VIEWS, (3,), data=refused),  # DALI refuses, PyAV decodes
    ]
    dec = DaliClipDecoder(max_batch=8, size=SIZE, device=torch.device("cpu"), num_threads=1)
    got = decode_jobs(jobs, Refusing(dec, refused), SIZE)
    assert [g.cpu_retry for g in got] == [False, False, False, True]
    assert torch.equal(got[0].views, want)
    assert torch.equal(got[1].views, want)
    assert got[2].views is None
    assert torch.equal(got[3].views, decode_views(data, VIEWS, SIZE))
    (one,) = decode_jobs([ClipJob(VIEWS[:1], (4,), data=data)], dec, SIZE)  # as decoded
    assert torch.equal(one.views, want[:1])


def test_one_item_jobs_give_the_same_views_as_each_view_alone() -> None:
    """The cache build's way (and repeated sampling's): all V views in one DALI item."""
    data = _noise_video()
    dec = DaliClipDecoder(
        max_batch=2, size=SIZE, device=torch.device("cpu"), num_threads=1, views=len(VIEWS)
    )
    jobs = [ClipJob(VIEWS, (0,), data=data), ClipJob(VIEWS, (0, 1, 2), data=data)]
    got = decode_jobs(jobs, dec, SIZE, one_item=True)
    want = _alone(data)
    assert all(torch.equal(g.views, want) and not g.cpu_retry for g in got)


def test_a_batch_of_items_asking_for_different_frame_counts_is_refused_by_name() -> None:
    """One batch of clips is one tensor: items of 3 and 6 frames cannot share it. Before, the
    batch failed inside DALI, each item then decoded alone, and joining them failed."""
    data = _noise_video()
    items = [(data, FIRST, BOX_A), (data, np.concatenate([FIRST, SECOND]), BOX_B)]
    dec = DaliClipDecoder(max_batch=2, size=SIZE, device=torch.device("cpu"), num_threads=1)
    with pytest.raises(ValueError, match=r"same number of frames, got \[3, 6\]"):
        dec.decode(items)
    pool = DaliDecoderPool(
        max_batch=2, size=SIZE, device=torch.device("cpu"), num_threads=1, pipelines=2
    )
    with pytest.raises(ValueError, match="same number of frames"):
        pool.decode(items)  # one item per pipeline: each share alone is uniform
    pool.close()
