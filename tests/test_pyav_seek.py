"""PyAV decoding jumps to the key frame before each asked-for frame, and returns exactly the
frames that decoding from the first frame returns, whatever the stream looks like."""

from __future__ import annotations

import av
import numpy as np
import pytest

import data.pyav_decode as pyav_decode
from data.pyav_decode import decode_frames
from data.transcode import encode_frames

FRAMES, GOP, SIZE = 64, 8, 32
STEP = 3  # grey level step per frame index: 64 frames fit in 0..255, lossless VP9 is exact


def _numbered(count: int) -> np.ndarray:
    frames = np.empty((count, SIZE, SIZE, 3), np.uint8)
    for i in range(count):
        frames[i] = 20 + STEP * i
    return frames


def _number(frame: np.ndarray) -> int:
    return int(round((float(np.median(frame)) - 20) / STEP))


def _noise(count: int, seed: int) -> np.ndarray:
    """Blocky random frames: every frame differs, so any wrong frame shows."""
    blocks = np.random.default_rng(seed).integers(0, 255, (count, SIZE // 8, SIZE // 8, 3))
    return np.repeat(np.repeat(blocks.astype(np.uint8), 8, 1), 8, 2)


def _x264(frames: np.ndarray, container: str | None = None, **options: str) -> bytes:
    """H.264 with extra x264 options (B-frames, open GOPs: what `--codec copy` keeps)."""
    return encode_frames(frames, fps=25, codec="h264", options=options, container=container)


class _Counting:
    """An opened container that records the time of every frame its decoder puts out."""

    def __init__(self, inner, seen: list[int]):
        self._inner, self._seen = inner, seen

    def __enter__(self):
        self._inner.__enter__()
        return self

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def decode(self, *args, **kwargs):
        for frame in self._inner.decode(*args, **kwargs):
            self._seen.append(frame.pts)
            yield frame


@pytest.fixture
def decoded(monkeypatch) -> list[int]:
    """Presentation times of every frame decoded, in the order the decoder put them out."""
    seen: list[int] = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: _Counting(real_open(*a, **k), seen))
    return seen


def test_a_late_frame_costs_its_group_of_pictures_not_the_video(decoded):
    data = encode_frames(_numbered(FRAMES), fps=25, codec="vp9", gop=GOP, lossless=True)
    frames = decode_frames(data, [61])
    assert [_number(f) for f in frames] == [61]
    assert len(decoded) == 61 - 56 + 1  # key frame 56 up to 61, not frames 0..61

    decoded.clear()
    assert [_number(f) for f in decode_frames(data, [61], seek=False)] == [61]
    assert len(decoded) == 62  # the reference side decodes from the first frame

    decoded.clear()
    frames = decode_frames(data, [40, 3, 60, 3, 41])
    assert [_number(f) for f in frames] == [40, 3, 60, 3, 41]
    assert len(decoded) == 4 + 2 + 5  # 0..3, 40..41 (key 40), 56..60


def test_frames_within_reach_are_decoded_on_without_a_jump(decoded):
    data = encode_frames(_numbered(FRAMES), fps=25, codec="vp9", gop=GOP, lossless=True)
    frames = decode_frames(data, [9, 11, 14])  # one group of pictures (key frame 8)
    assert [_number(f) for f in frames] == [9, 11, 14]
    assert len(decoded) == 14 - 8 + 1
    assert decoded == sorted(decoded)


def test_past_the_end_repeats_the_last_frame_and_negative_is_refused():
    data = encode_frames(_numbered(20), fps=25, codec="vp9", gop=GOP, lossless=True)
    assert [_number(f) for f in decode_frames(data, [30, 2, 19])] == [19, 2, 19]
    with pytest.raises(ValueError, match="must be >= 0, got -1"):
        decode_frames(data, [3, -1])  # would read from the end of the index otherwise


@pytest.mark.parametrize(
    "make",
    [
        lambda f: encode_frames(f, fps=25, codec="vp9", gop=GOP),
        lambda f: encode_frames(f, fps=25, codec="h264", gop=GOP),
        lambda f: _x264(f, bf="3", g="12"),
        lambda f: _x264(f, bf="3", g="12", **{"x264-params": "open-gop=1"}),
        lambda f: _x264(f, bf="3", g="30", **{"x264-params": "open-gop=1:scenecut=40"}),
    ],
    ids=["vp9", "h264", "h264-bframes", "h264-open-gop", "h264-open-gop-scenecut"],
)
def test_jumping_returns_what_decoding_from_the_start_returns(make):
    data = make(_noise(96, seed=1))
    for seed in range(12):
        rng = np.random.default_rng(seed)
        indices = rng.integers(0, 100, int(rng.integers(1, 10)))  # any order, repeats, past end
        got = decode_frames(data, indices)
        assert np.array_equal(got, decode_frames(data, indices, seek=False)), indices.tolist()


def test_a_stream_without_timestamps_is_decoded_from_its_start(decoded):
    data = _x264(_numbered(24), container="h264", g="8")  # raw H.264: packets carry no times
    frames = decode_frames(data, [17, 2])
    assert [_number(f) for f in frames] == [17, 2]
    assert len(decoded) == 18  # frames 0..17: nothing to jump by


def test_a_jump_that_misses_its_frame_falls_back_to_the_start(monkeypatch, decoded):
    data = encode_frames(_numbered(FRAMES), fps=25, codec="vp9", gop=GOP, lossless=True)
    real_index = pyav_decode._frame_index

    def off_by_one(container, stream):
        index = real_index(container, stream)
        return pyav_decode._FrameIndex([p + 1 for p in index.pts], index.key_of)

    monkeypatch.setattr(pyav_decode, "_frame_index", off_by_one)
    assert [_number(f) for f in decode_frames(data, [50, 51])] == [50, 51]
    assert len(decoded) == 4 + 52  # 48..51 before the miss was seen, then 0..51
    assert decoded[4:] == sorted(decoded[4:])


def test_a_failing_jump_falls_back_to_the_start(monkeypatch, decoded):
    data = encode_frames(_numbered(FRAMES), fps=25, codec="vp9", gop=GOP, lossless=True)

    def refuse(self, *args, **kwargs):
        raise av.error.PermissionError(1, "seek refused")  # an FFmpeg error, as av raises them

    monkeypatch.setattr(_Counting, "seek", refuse, raising=False)
    assert [_number(f) for f in decode_frames(data, [33, 60])] == [33, 60]
    assert len(decoded) == 61  # nothing decoded before the refused jump, then 0..60 in order
    assert decoded == sorted(decoded)


def test_a_damaged_video_is_still_an_error():
    data = encode_frames(_numbered(FRAMES), fps=25, codec="vp9", gop=GOP, lossless=True)
    with pytest.raises(Exception):  # noqa: B017 (FFmpeg errors come in many types)
        decode_frames(data[:200], [40])


def test_vp8_packets_are_frames_only_when_every_frame_is_shown(monkeypatch, decoded):
    """A VP8 alt-ref frame in a packet of its own (FFmpeg packs it with the next shown frame;
    other muxers may not) would number packets and frames differently: decode from the start."""
    from data import bitstream

    opts = {"auto-alt-ref": "1", "lag-in-frames": "16", "deadline": "good", "b": "400k"}
    data = encode_frames(_noise(FRAMES, seed=3), fps=25, codec="vp8", gop=GOP, options=opts)
    assert bitstream.vp8_shown(b"\x10\x02\x00") and not bitstream.vp8_shown(b"\x00\x02\x00")
    assert not bitstream.vp8_shown(b"")
    want = decode_frames(data, [61], seek=False)
    decoded.clear()
    assert np.array_equal(decode_frames(data, [61]), want)
    assert len(decoded) <= GOP  # FFmpeg's VP8: every packet shown, so it jumps

    shown = iter([True] * 30 + [False] + [True] * 1000)  # the 31st packet: a hidden frame
    monkeypatch.setattr(bitstream, "vp8_shown", lambda payload: next(shown))
    decoded.clear()
    assert np.array_equal(decode_frames(data, [61]), want)
    assert len(decoded) == 62  # from the first frame
