"""Handing DALI only the key-frame groups a clip needs: the same pixels, far fewer frames, and
no cut where it would not be exact."""

from __future__ import annotations

import io
import json

import av
import numpy as np
import pytest
import torch

import data.jobs
from data.bitstream import h264_idr, h264_nal_length_size
from data.config import DataConfig
from data.dali_decode import DaliClipDecoder
from data.gop_trim import MIN_SAVED_FRAMES, trim_views, views_for_decoder
from data.pyav_decode import decode_frames
from data.sampling import eval_indices, train_indices
from data.transcode import encode_frames
from tests.data_helpers import cpu_eval_batches, cpu_train_batches, write_shard_set

FRAMES, GOP, SIZE = 96, 4, 32
WHOLE = (0.0, 0.0, 1.0, 1.0)


def _noise(count: int, seed: int = 0, size: int = SIZE) -> np.ndarray:
    """Blocky random frames: every frame differs, so any wrong frame shows."""
    blocks = np.random.default_rng(seed).integers(0, 255, (count, size // 8, size // 8, 3))
    return np.repeat(np.repeat(blocks.astype(np.uint8), 8, 1), 8, 2)


def _packets(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as c:
        return sum(1 for p in c.demux(c.streams.video[0]) if p.size)


def _views(seed: int, clips: int = 1) -> list[tuple[np.ndarray, tuple]]:
    rng = np.random.default_rng(seed)
    if clips == 1:
        return [(train_indices(FRAMES, 4, "uniform", 1, rng), WHOLE)]
    return [(idx, WHOLE) for idx in eval_indices(FRAMES, 4, "uniform", 1, clips)]


def test_dali_decodes_the_same_pixels_from_the_cut_video() -> None:
    data = encode_frames(_noise(FRAMES), fps=25, codec="vp9", gop=GOP)
    dec = DaliClipDecoder(max_batch=4, size=SIZE, device=torch.device("cpu"), num_threads=1)
    for seed in range(6):
        views = _views(seed, clips=1 + seed % 3)
        cut = trim_views(data, views, "vp9")
        assert cut is not None, views
        cut_data, cut_views = cut
        whole, bad = dec.decode([(data, idx, box) for idx, box in views])
        part, bad_cut = dec.decode([(cut_data, idx, box) for idx, box in cut_views])
        assert bad == bad_cut == [] and torch.equal(whole, part), seed


def test_the_cut_holds_each_frame_from_its_key_frame_only() -> None:
    data = encode_frames(_noise(FRAMES), fps=25, codec="vp9", gop=GOP)
    views = [(np.array([5, 70, 5]), WHOLE), (np.array([71, 200]), WHOLE)]  # repeats, past end
    cut_data, cut_views = trim_views(data, views, "vp9")
    # packets 4..5 (key 4), 68..71 (key 68), 92..95 (key 92, for the past-the-end 95)
    assert _packets(cut_data) == 2 + 4 + 4
    assert [v.tolist() for v, _ in cut_views] == [[1, 4, 1], [5, 9]]
    assert cut_views[0][1] == WHOLE
    got = decode_frames(cut_data, np.concatenate([v for v, _ in cut_views]), seek=False)
    want = decode_frames(data, [5, 70, 5, 71, 95], seek=False)
    assert np.array_equal(got, want)
    # what a decoder is handed: the cut where asked for, else the whole video as it is
    handed_data, handed_views = views_for_decoder(data, views, "vp9", True)
    assert handed_data is not data and _packets(handed_data) == _packets(cut_data)
    assert [v.tolist() for v, _ in handed_views] == [[1, 4, 1], [5, 9]]
    whole, whole_views = views_for_decoder(data, views, "vp9", False)
    assert whole is data and len(whole_views) == 2
    assert all(a is b for a, b in zip(whole_views, views, strict=True))


@pytest.mark.parametrize("container", [None, "h264"], ids=["mp4", "annex-b"])
def test_h264_with_idr_key_frames_is_cut_exactly(container) -> None:
    data = encode_frames(_noise(FRAMES), fps=25, codec="h264", gop=GOP, container=container)
    views = _views(1, clips=2)
    cut = trim_views(data, views, "h264")
    if container == "h264":  # a raw stream carries no timestamps: left whole
        assert cut is None
        return
    assert cut is not None
    cut_data, cut_views = cut
    wanted = np.concatenate([v for v, _ in views])
    got = decode_frames(cut_data, np.concatenate([v for v, _ in cut_views]), seek=False)
    assert np.array_equal(got, decode_frames(data, wanted, seek=False))
    assert _packets(cut_data) < _packets(data) // 2


def test_streams_a_cut_would_not_be_exact_for_are_left_whole() -> None:
    frames = _noise(FRAMES)
    views = _views(2)
    b_frames = encode_frames(frames, fps=25, codec="h264", gop=12, options={"bf": "3"})
    assert trim_views(b_frames, views, "h264") is None  # display order != decode order
    vp9 = encode_frames(frames, fps=25, codec="vp9", gop=GOP)
    assert trim_views(vp9, views, "mjpeg") is None  # codec not known to be safe
    assert trim_views(vp9, [], "vp9") is None
    assert trim_views(b"\x1aE\xdf\xa3garbage" * 8, views, "vp9") is None  # DALI reports it


def test_h264_key_frames_count_only_as_idr_pictures() -> None:
    """A key-flagged H.264 picture that is not IDR (an open GOP's I-frame) may be followed by
    pictures that refer to frames before it: no cut starts there."""
    avcc = lambda *units: b"".join(len(u).to_bytes(4, "big") + u for u in units)  # noqa: E731
    assert h264_idr(avcc(b"\x06sei", b"\x65idr-slice"), 4)
    assert not h264_idr(avcc(b"\x06sei", b"\x41i-or-p-slice"), 4)  # type 1: non-IDR picture
    assert h264_idr(b"\x00\x00\x00\x01\x67sps\x00\x00\x01\x65idr", None)  # Annex-B
    assert not h264_idr(b"\x00\x00\x01\x41p-slice", None)
    assert not h264_idr(b"\x00\x00\x00\xffshort", 4)  # a length past the end
    assert not h264_idr(avcc(b"\x65idr-slice"), None)  # not Annex-B framing: not trusted
    two_byte = len(b"\x65idr").to_bytes(2, "big") + b"\x65idr"
    assert h264_idr(two_byte, 2)


def test_h264_framing_comes_from_the_stream_not_the_packet() -> None:
    """A 256-511-byte unit's length prefix `00 00 01 xx` looks like an Annex-B start code: read
    so, a P picture of 0x165 bytes counted as IDR (a cut starting there decodes wrong pixels)
    and an IDR picture of 0x120 bytes did not (found on the GPU, 2026-11-28)."""
    avcc = lambda unit: len(unit).to_bytes(4, "big") + unit  # noqa: E731
    p_slice = avcc(b"\x41" + b"p" * (0x165 - 1))
    idr = avcc(b"\x65" + b"i" * (0x120 - 1))
    assert p_slice[:4] == b"\x00\x00\x01\x65" and idr[:4] == b"\x00\x00\x01\x20"
    assert not h264_idr(p_slice, 4) and h264_idr(idr, 4)
    assert h264_nal_length_size(b"\x01\x64\x00\x1f\xff\xe1") == 4  # avcC, lengthSizeMinusOne=3
    assert h264_nal_length_size(b"\x01\x64\x00\x1f\xfd\xe1") == 2
    assert h264_nal_length_size(b"\x00\x00\x00\x01\x67") is None  # Annex-B parameter sets
    assert h264_nal_length_size(None) is None


def test_h264_at_64_px_is_cut_exactly() -> None:
    """64 px MP4 H.264 of noise: most packets are 256-511 bytes, the size the old framing guess
    misread (tests/test_gpu.py's cut video, checked here on the CPU decoder)."""
    data = encode_frames(_noise(120, size=64), fps=25, codec="h264", gop=8)
    views = [(np.array([3, 40, 90, 119]), WHOLE), (np.array([60, 61, 62, 9]), WHOLE)]
    cut = trim_views(data, views, "h264")
    assert cut is not None
    cut_data, cut_views = cut
    assert _packets(cut_data) < _packets(data) // 2
    got = decode_frames(cut_data, np.concatenate([v for v, _ in cut_views]), seek=False)
    assert np.array_equal(
        got, decode_frames(data, np.concatenate([v for v, _ in views]), seek=False)
    )


def test_vp8_with_a_hidden_frame_in_its_own_packet_is_left_whole(monkeypatch) -> None:
    from data import bitstream

    data = encode_frames(_noise(FRAMES), fps=25, codec="vp8", gop=GOP)
    views = [(np.array([5, 70]), WHOLE)]
    cut = trim_views(data, views, "vp8")
    assert cut is not None  # FFmpeg's VP8: every packet holds a shown frame
    got = decode_frames(cut[0], cut[1][0][0], seek=False)
    assert np.array_equal(got, decode_frames(data, [5, 70], seek=False))
    monkeypatch.setattr(bitstream, "vp8_shown", lambda payload: False)
    assert trim_views(data, views, "vp8") is None


def test_short_savings_are_not_worth_a_cut() -> None:
    data = encode_frames(_noise(16), fps=25, codec="vp9", gop=GOP)  # the demo's clip length
    assert trim_views(data, [(np.array([3, 15]), WHOLE)], "vp9") is None
    long = encode_frames(_noise(FRAMES), fps=25, codec="vp9", gop=GOP)
    saved_too_few = [(np.array([MIN_SAVED_FRAMES - 1]), WHOLE)]  # key 28: saves 28 frames
    assert trim_views(long, saved_too_few, "vp9") is None
    assert trim_views(long, [(np.array([MIN_SAVED_FRAMES + 8]), WHOLE)], "vp9") is not None


def _long_shards(tmp_path):
    recs = []
    for i in range(6):
        data = encode_frames(_noise(FRAMES, seed=i), fps=8, codec="vp9", gop=GOP)
        meta = {"label": "x", "source": "t", "fps": 8.0, "frames": FRAMES, "codec": "vp9"}
        meta |= {"width": SIZE, "height": SIZE}
        recs.append(
            (f"c{i}", {"webm": data, "cls": str(i % 2).encode(), "json": json.dumps(meta).encode()})
        )
    return write_shard_set(tmp_path, {"train": [recs], "val": [recs[:4]]}, ["a", "b"])


def test_the_loader_yields_the_same_batches_with_and_without_cuts(tmp_path, monkeypatch) -> None:
    root = _long_shards(tmp_path)
    marks = tmp_path / "cuts.txt"  # written by the (forked) worker processes

    def counted(video, views, codec, trim):
        handed = views_for_decoder(video, views, codec, trim)
        if trim:
            with marks.open("a") as f:
                f.write(f"{handed[0] is not video}\n")
        return handed

    monkeypatch.setattr(data.jobs, "views_for_decoder", counted)
    got = {}
    for trim in (False, True):
        cfg = DataConfig(root=str(root), frames=4, shuffle_buffer=4, workers=1, gop_trim=trim)
        src = cpu_train_batches(cfg, batch_size=2, seed=3, img_size=SIZE)
        it = src.batches(0)
        got[trim] = [(f.clone(), y.clone()) for f, y in (next(it) for _ in range(4))]
        src.close()
        ev = cpu_eval_batches(
            DataConfig(root=str(root), frames=4, workers=1, eval_clips=2, gop_trim=trim),
            batch_size=2,
            img_size=SIZE,
        )
        got[trim] += [(f.clone(), y.clone()) for f, y in ev]
        ev.close()
    cuts = marks.read_text().split()  # trim=True only: 8 clips + read-ahead, then 4 eval clips
    assert set(cuts) == {"True"} and len(cuts) >= 4 * 2 + 4
    assert len(got[True]) == len(got[False]) == 6
    for (fa, la), (fb, lb) in zip(got[False], got[True], strict=True):
        assert torch.equal(la, lb) and torch.equal(fa, fb)
