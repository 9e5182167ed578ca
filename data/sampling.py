"""Which frames of a clip the model sees: T indices per clip, for training and evaluation.

Indices may repeat (short clips) and are clamped to the clip, so decoders never pad.
"""

from __future__ import annotations

import numpy as np


def _clamp(idx: np.ndarray, num_frames: int) -> np.ndarray:
    return np.clip(idx, 0, max(num_frames - 1, 0)).astype(np.int32)


def train_indices(
    num_frames: int, frames: int, mode: str, stride: int, rng: np.random.Generator
) -> np.ndarray:
    """`uniform`: one random frame from each of T equal segments (TSN); `stride`: T frames
    `stride` apart from a random start."""
    if mode == "uniform":
        edges = np.linspace(0, num_frames, frames + 1)
        lo, hi = np.floor(edges[:-1]), np.maximum(np.floor(edges[1:]), np.floor(edges[:-1]) + 1)
        return _clamp(rng.integers(lo.astype(np.int64), hi.astype(np.int64)), num_frames)
    if mode == "stride":
        span = (frames - 1) * stride + 1
        start = int(rng.integers(0, max(num_frames - span, 0) + 1))
        return _clamp(start + np.arange(frames) * stride, num_frames)
    raise ValueError(f"sampling must be 'uniform' or 'stride', got '{mode}'")


def eval_indices(
    num_frames: int, frames: int, mode: str, stride: int, clips: int
) -> list[np.ndarray]:
    """`clips` deterministic views evenly spaced over the clip (segment offsets or start times)."""
    views = []
    for j in range(clips):
        if mode == "uniform":
            pos = (np.arange(frames) + (j + 0.5) / clips) * num_frames / frames
            views.append(_clamp(np.floor(pos), num_frames))
        elif mode == "stride":
            span = (frames - 1) * stride + 1
            room = max(num_frames - span, 0)
            start = int(round(room * (j + 0.5) / clips)) if clips > 1 else room // 2
            views.append(_clamp(start + np.arange(frames) * stride, num_frames))
        else:
            raise ValueError(f"sampling must be 'uniform' or 'stride', got '{mode}'")
    return views
