"""Decode selected frames of in-memory video bytes with PyAV (any codec FFmpeg knows).

Used by the `pyav` decoder path, by the DALI path for codecs or sizes DALI cannot decode here,
and by `vivit predict` for video files read directly.

A clip's frames are usually a few frames spread over a video that is far longer than the
clip. Decoding from the first frame to the last one asked for costs the whole video, so the
decoder jumps to the key frame before each asked-for frame when that skips frames, and decodes
only from there (`_decode_seeking`). Frames are told apart by their presentation time, so a
jump that lands anywhere else, a frame the decoder drops or a stream without timestamps is
noticed, and that video is decoded from its start instead (`_decode_from_start`), as before.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import av
import numpy as np
import torch

from data.augment import Box, crop_resize
from data.bitstream import key_positions, read_packets
from data.rgb_frames import RgbFrames

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _FrameIndex:
    """Presentation times of a stream's frames in display order, and for each frame the position
    of the key frame decoding must start from."""

    pts: list[int]
    key_of: list[int]


def _frame_index(container: av.container.InputContainer, stream) -> _FrameIndex | None:
    """One pass over the packets (no decoding); None where times are missing or repeat."""
    packets = read_packets(container, stream)
    if packets is None:
        return None
    shown = sorted(packets, key=lambda p: int(p.pts))  # display order
    pts = [int(p.pts) for p in shown]
    if not shown[0].is_keyframe or len(set(pts)) != len(pts):
        return None
    return _FrameIndex(pts, key_positions([bool(p.is_keyframe) for p in shown]))


def _decode_seeking(
    container: av.container.InputContainer, stream, index: _FrameIndex, wanted: list[int]
) -> dict[int, np.ndarray] | None:
    """The frames `wanted` (sorted, unique, within the stream), jumping to a key frame whenever
    that skips frames; None if a frame does not come out where the index says it should."""
    got: dict[int, np.ndarray] = {}
    rgb = RgbFrames()
    frames = None
    next_frame = -1  # the frame the decoder emits next; -1: after the index pass, at the end
    for want in wanted:
        key = index.key_of[want]
        if frames is None or key > next_frame:
            container.seek(index.pts[key], stream=stream, backward=True, any_frame=False)
            frames = container.decode(stream)
        target = index.pts[want]
        for frame in frames:
            if frame.pts is None or frame.pts > target:
                return None
            if frame.pts == target:
                got[want] = rgb.convert(frame)
                break
        else:
            return None
        next_frame = want + 1
    return got


def _decode_from_start(data: bytes, wanted: set[int]) -> tuple[dict[int, np.ndarray], int]:
    """Frames counted as they come out, from the first to the last one wanted: ({index: frame}
    of the wanted ones and of the last one decoded, that last index, which is below the last
    wanted one when the video is shorter)."""
    got: dict[int, np.ndarray] = {}
    last, end, previous = max(wanted), -1, None
    rgb = RgbFrames()
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for end, frame in enumerate(container.decode(stream)):
            if end in wanted:
                got[end] = rgb.convert(frame)
            previous = frame
            if end >= last:
                break
    if previous is None:
        raise ValueError("video has no decodable frames")
    if end not in got:
        got[end] = rgb.convert(previous)
    return got, end


def _decode_with_jumps(data: bytes, asked: list[int]) -> tuple[dict[int, np.ndarray], int] | None:
    """({index: frame} of the asked frames, the last frame's index), or None where the stream
    must be decoded from its start: also when reading its packets, jumping or decoding after a
    jump fails (a damaged or odd stream may still decode in order; if not, that is the error
    the caller sees)."""
    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            index = _frame_index(container, stream)
            if index is None:
                return None
            end = len(index.pts) - 1
            got = _decode_seeking(container, stream, index, sorted({min(i, end) for i in asked}))
    except Exception as exc:  # FFmpeg errors come in many types
        log.debug("decoding with key-frame jumps failed (%s); decoding from the start", exc)
        return None
    return None if got is None else (got, end)


def decode_frames(data: bytes, indices: np.ndarray | list[int], seek: bool = True) -> np.ndarray:
    """`len(indices)×H×W×3` uint8 RGB; indices in any order, repeats allowed; past-the-end
    indices repeat the last frame (DALI's `pad_mode="edge"`). `seek=False` decodes from the
    first frame (the reference the benchmark and tests compare with)."""
    asked = [int(i) for i in indices]
    if not asked:
        raise ValueError("no frame indices requested")
    if min(asked) < 0:
        raise ValueError(f"frame indices must be >= 0, got {min(asked)}")
    found = _decode_with_jumps(data, asked) if seek else None
    got, end = found if found is not None else _decode_from_start(data, set(asked))
    return np.stack([got[min(i, end)] for i in asked])


def decode_views(
    data: bytes, views: Sequence[tuple[np.ndarray, Box]], size: int, seek: bool = True
) -> torch.Tensor:
    """Every view of one video, `(frame indices, crop box)` each, decoded by PyAV with every
    frame decoded once: uint8 `V×T×C×size×size` (the PyAV twin of `DaliClipDecoder.decode`;
    normalisation happens on the device, `data.augment.normalise`)."""
    indices = np.concatenate([idx for idx, _ in views])
    decoded = torch.from_numpy(decode_frames(data, indices, seek=seek))
    out, start = [], 0
    for idx, box in views:
        out.append(crop_resize(decoded[start : start + len(idx)], box, size))
        start += len(idx)
    return torch.stack(out)
