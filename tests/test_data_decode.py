"""Frame selection is exact: requested indices (any order, repeats) come back, DALI and PyAV."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.augment import crop_resize_normalise, eval_boxes, normalise
from data.dali_decode import DaliClipDecoder
from data.jobs import ClipJob
from data.pyav_decode import decode_frames
from data.sampling import eval_indices, train_indices
from data.transcode import encode_frames
from tests.data_helpers import decoded_index, index_frames, level

REQUEST = [5, 0, 0, 7, 3, 3, 1, 6]


@pytest.mark.parametrize("codec", ["vp9", "h264"])
def test_pyav_returns_requested_frames(codec):
    data = encode_frames(index_frames(8), fps=8, codec=codec, gop=4, lossless=codec == "vp9")
    frames = decode_frames(data, REQUEST + [11])  # 11 is past the end: last frame repeats
    assert [decoded_index(f) for f in frames] == REQUEST + [7]


def test_dali_cpu_returns_requested_frames_exactly():
    data = encode_frames(index_frames(8), fps=8, codec="vp9", gop=4, lossless=True)
    dec = DaliClipDecoder(
        max_batch=2,
        size=32,
        device=torch.device("cpu"),
        num_threads=1,
    )
    other = [2, 2, 7, 0, 1, 1, 4, 4]
    clips, bad = dec.decode(
        [(data, np.array(REQUEST), (0, 0, 1, 1)), (data, np.array(other), (0, 0, 1, 1))]
    )
    assert bad == []
    assert clips.dtype == torch.uint8  # normalisation happens on the training device
    values = clips[:, :, 0, 16, 16].float()  # full-frame box: values pass through
    assert values[0].tolist() == [float(level(i)) for i in REQUEST]
    assert values[1].tolist() == [float(level(i)) for i in other]


def test_dali_flags_undecodable_clip_and_keeps_the_rest():
    data = encode_frames(index_frames(4), fps=8, codec="vp9", gop=4, lossless=True)
    dec = DaliClipDecoder(
        max_batch=3,
        size=16,
        device=torch.device("cpu"),
        num_threads=1,
    )
    idx, box = np.array([0, 3]), (0, 0, 1, 1)
    clips, bad = dec.decode(
        [(data, idx, box), (b"\x1aE\xdf\xa3garbage" * 8, idx, box), (data, idx, box)]
    )
    assert bad == [1] and clips.shape == (2, 2, 3, 16, 16)


@pytest.mark.parametrize("pipelines", [2, 3])
def test_a_pool_of_dali_pipelines_decodes_what_one_pipeline_does(pipelines: int):
    """`data.dali_pipelines`: shares decoded side by side come back in order, a bad clip at its
    position, the same pixels as one pipeline; fewer clips than pipelines works too."""
    from data.dali_pool import DaliDecoderPool, dali_decoder

    data = encode_frames(index_frames(8), fps=8, codec="vp9", gop=4, lossless=True)
    rng = np.random.default_rng(0)
    items = [
        (data, rng.integers(0, 8, 4), (0.1 * k, 0.0, 0.6 + 0.1 * k, 1.0 - 0.05 * k))
        for k in range(5)
    ]
    items[3] = (b"\x1aE\xdf\xa3garbage" * 8, *items[3][1:])
    one = dali_decoder(max_batch=5, size=16, device=torch.device("cpu"), num_threads=1)
    pool = dali_decoder(
        max_batch=5, size=16, device=torch.device("cpu"), num_threads=1, pipelines=pipelines
    )
    assert isinstance(pool, DaliDecoderPool) and not isinstance(one, DaliDecoderPool)
    ref, ref_bad = one.decode(items)
    got, bad = pool.decode(items)
    assert ref_bad == bad == [3]
    assert got.shape == ref.shape == (4, 4, 3, 16, 16) and torch.equal(got, ref)
    pool.close()  # pipelines and threads dropped, rebuilt on the next decode
    few, few_bad = pool.decode(items[:2])
    assert few_bad == [] and torch.equal(few, ref[:2])
    pool.close()


def test_dali_and_torch_views_agree():
    """The PyAV path's crop/flip/resize matches DALI's for the same box (mirror included)."""
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 255, (2, 8, 8, 3), dtype=np.uint8), 4, axis=1)
    frames = np.repeat(frames, 4, axis=2)  # 32x32 made of flat 4x4 blocks
    data = encode_frames(frames, fps=8, codec="vp9", gop=4, lossless=True)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    dec = DaliClipDecoder(max_batch=1, size=16, device=torch.device("cpu"))
    box = (0.0, 1.0, 1.0, 0.0)  # whole frame, mirrored
    clips, _ = dec.decode([(data, np.array([1, 0]), box)])
    dali = normalise(clips, mean, std, torch.float32)
    ref = crop_resize_normalise(torch.from_numpy(decode_frames(data, [1, 0])), box, 16, mean, std)
    assert dali.shape[1:] == ref.shape
    assert (dali[0] - ref).abs().mean() < 0.15  # chroma subsampling + resampling differences


def test_sampling_policies():
    rng = np.random.default_rng(0)
    idx = train_indices(40, 8, "uniform", 2, rng)
    assert len(idx) == 8 and all(5 * k <= i < 5 * (k + 1) for k, i in enumerate(idx))
    idx = train_indices(40, 4, "stride", 3, rng)
    assert np.all(np.diff(idx) == 3) and idx[-1] < 40
    assert train_indices(3, 5, "uniform", 1, rng).max() <= 2  # short clip: repeats, no overrun
    views = eval_indices(16, 4, "uniform", 1, 2)
    assert [v.tolist() for v in views] == [[1, 5, 9, 13], [3, 7, 11, 15]]
    assert len(eval_boxes(24, 40, 3)) == 3 and eval_boxes(24, 40, 1) == [(0.0, 0.2, 1.0, 0.8)]


def test_batcher_decodes_a_video_once_per_crop_box_and_keeps_every_view():
    """Evaluation views (2 temporal clips x 3 crops) come from one DALI item per crop box; each
    view equals decoding that view alone."""
    from data.batcher import Batcher

    rng = np.random.default_rng(1)  # every frame and crop differs: 32x48 px of flat 4x4 blocks
    blocks = rng.integers(0, 255, (16, 8, 12, 3), dtype=np.uint8)
    data = encode_frames(blocks.repeat(4, axis=1).repeat(4, axis=2), fps=8, codec="vp9", gop=4)
    views = [
        (idx, box) for idx in eval_indices(16, 4, "uniform", 2, 2) for box in eval_boxes(32, 48, 3)
    ]
    jobs = [ClipJob(views, (1,), data=data), ClipJob(views, (2,), data=data)]
    dec = DaliClipDecoder(max_batch=8, size=16, device=torch.device("cpu"), num_threads=1)
    items: list[int] = []
    real = dec.decode
    dec.decode = lambda batch: (items.append(len(batch)), real(batch))[1]
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    batcher = Batcher(
        iter(jobs), dec, batch_size=2, size=16, device=torch.device("cpu"),
        dtype=torch.float32, mean=mean, std=std, counters={"corrupt_skipped": 0, "clips": 0},
        max_skipped=10,
    )  # fmt: skip
    ((frames, labels, _),) = list(batcher)
    assert items == [2 * 3], "one DALI item per (video, crop box)"
    assert frames.shape == (2, 6, 4, 3, 16, 16) and labels.tolist() == [1, 2]
    alone, bad = real([(data, np.asarray(idx), box) for idx, box in views])
    assert bad == []
    expected = normalise(alone, mean, std, torch.float32)
    assert torch.equal(frames[0], expected) and torch.equal(frames[1], expected)


@pytest.mark.parametrize("pipelines", [1, 2])
def test_repeated_views_decode_as_each_view_alone(pipelines: int):
    """`views=k` (`data.repeat_aug`): an item's k views, each with its own frames (any order,
    repeats, overlaps) and crop box, come back as decoding each view on its own would give them,
    a bad video at its item's position."""
    from data.dali_pool import dali_decoder

    rng = np.random.default_rng(1)
    frames = np.repeat(rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8), 4, axis=1)
    data = encode_frames(np.repeat(frames, 4, axis=2), fps=8, codec="vp9", gop=4, lossless=True)
    k, t = 3, 4
    items = []
    for _ in range(4):
        views = [rng.integers(0, 12, t) for _ in range(k)]
        starts = rng.uniform(0.0, 0.4, (k, 2))
        boxes = np.concatenate([starts, starts + rng.uniform(0.5, 0.6, (k, 2))], axis=1)
        boxes[1] = boxes[1][[2, 1, 0, 3]]  # a mirrored view
        items.append((data, np.concatenate(views), boxes))
    items[2] = (b"\x1aE\xdf\xa3garbage" * 8, *items[2][1:])
    cpu = torch.device("cpu")
    dec = dali_decoder(
        max_batch=4, size=16, device=cpu, num_threads=1, pipelines=pipelines, views=k
    )
    one = DaliClipDecoder(max_batch=4 * k, size=16, device=cpu, num_threads=1)
    got, bad = dec.decode(items)
    assert bad == [2] and got.shape == (3, k * t, 3, 16, 16)
    good = [item for n, item in enumerate(items) if n != 2]
    alone, _ = one.decode(
        [(b, f[v * t : (v + 1) * t], boxes[v]) for b, f, boxes in good for v in range(k)]
    )
    assert torch.equal(got.reshape(3 * k, t, 3, 16, 16), alone)
    assert not torch.equal(alone[0], alone[1])  # the views differ: the check can fail


def test_a_decoder_needs_at_least_one_view():
    with pytest.raises(ValueError, match="views must be >= 1"):
        DaliClipDecoder(max_batch=1, size=16, device=torch.device("cpu"), views=0)
