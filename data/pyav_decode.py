"""Decode selected frames of in-memory video bytes with PyAV (any codec FFmpeg knows).

Used by the `pyav` decoder path, by the DALI path for codecs or sizes DALI cannot decode here,
and by `vivit predict` for video files read directly.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import av
import numpy as np
import torch

from data.augment import Box, crop_resize


def decode_frames(data: bytes, indices: np.ndarray | list[int]) -> np.ndarray:
    """`len(indices)×H×W×3` uint8 RGB; indices in any order, repeats allowed; past-the-end
    indices repeat the last frame (DALI's `pad_mode="edge"`)."""
    wanted = sorted({int(i) for i in indices})
    if not wanted:
        raise ValueError("no frame indices requested")
    last = wanted[-1]
    got: dict[int, np.ndarray] = {}
    previous = None
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted or i == last:
                got[i] = frame.to_ndarray(format="rgb24")
            previous = (i, frame)
            if i >= last:
                break
    if previous is None:
        raise ValueError("video has no decodable frames")
    end, frame = previous
    if end not in got:
        got[end] = frame.to_ndarray(format="rgb24")
    return np.stack([got[min(int(i), end)] for i in indices])


def decode_views(data: bytes, views: Sequence[tuple[np.ndarray, Box]], size: int) -> torch.Tensor:
    """Every view of one video, `(frame indices, crop box)` each, decoded by PyAV with every
    frame decoded once: uint8 `V×T×C×size×size` (the PyAV twin of `DaliClipDecoder.decode`;
    normalisation happens on the device, `data.augment.normalise`)."""
    decoded = torch.from_numpy(decode_frames(data, np.concatenate([idx for idx, _ in views])))
    out, start = [], 0
    for idx, box in views:
        out.append(crop_resize(decoded[start : start + len(idx)], box, size))
        start += len(idx)
    return torch.stack(out)
