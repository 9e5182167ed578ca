"""Decode selected frames of in-memory video bytes with PyAV (any codec FFmpeg knows).

Used by the `pyav` decoder path, and by the DALI path for codecs DALI's CPU decoder lacks.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import av
import numpy as np
import torch

from data.augment import Box, crop_resize_normalise


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


def decode_views(
    data: bytes,
    views: Sequence[tuple[np.ndarray, Box]],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """`V×T×C×size×size` normalised clips, one per `(frame indices, crop box)` view, with every
    frame decoded once (the PyAV twin of `DaliClipDecoder.decode`)."""
    mean_t, std_t = torch.tensor(mean), torch.tensor(std)
    decoded = torch.from_numpy(decode_frames(data, np.concatenate([idx for idx, _ in views])))
    clips, start = [], 0
    for idx, box in views:
        t = len(idx)
        clips.append(crop_resize_normalise(decoded[start : start + t], box, size, mean_t, std_t))
        start += t
    return torch.stack(clips)
