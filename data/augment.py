"""Spatial views as crop boxes, shared by the DALI and PyAV paths so both see the same views.

A box is `(y0, x0, y1, x1)` as fractions (0..1) of the frame's height and width; `x0 > x1`
means "mirror horizontally", which is how DALI's `resize` ROI expresses a flip, so DALI does
crop + flip + resize in one operator. Boxes are relative so the decoders apply them to the frame
they actually decoded: metadata sizes only shape the crop's aspect ratio, and a record whose
metadata disagrees with its video cannot send a decoder outside the frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

Box = tuple[float, float, float, float]


def random_resized_crop(
    height: int,
    width: int,
    min_scale: float,
    rng: np.random.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Box:
    """Inception-style crop: area fraction in [min_scale, 1], log-uniform aspect ratio (in the
    pixels of a `height`×`width` frame), returned relative to that frame."""
    return _relative(_pixel_crop(height, width, min_scale, rng, ratio), height, width)


def _relative(box: Box, height: int, width: int) -> Box:
    y0, x0, y1, x1 = box
    return (y0 / height, x0 / width, y1 / height, x1 / width)


def _pixel_crop(
    height: int,
    width: int,
    min_scale: float,
    rng: np.random.Generator,
    ratio: tuple[float, float],
) -> Box:
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(min_scale, 1.0)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = math.sqrt(target * aspect)
        h = math.sqrt(target / aspect)
        if w <= width and h <= height:
            y0 = rng.uniform(0, height - h)
            x0 = rng.uniform(0, width - w)
            return (y0, x0, y0 + h, x0 + w)
    side = min(height, width)  # fall back to the centre square
    y0, x0 = (height - side) / 2, (width - side) / 2
    return (y0, x0, y0 + side, x0 + side)


def eval_boxes(height: int, width: int, crops: int) -> list[Box]:
    """Resize-short-side + centre crop (or 3 crops along the long side): squares in the pixels
    of a `height`×`width` frame, returned relative to it."""
    side = min(height, width)
    slack_y, slack_x = height - side, width - side
    fractions = [0.5] if crops == 1 else [0.0, 0.5, 1.0]
    return [
        _relative((slack_y * f, slack_x * f, slack_y * f + side, slack_x * f + side), height, width)
        for f in fractions
    ]


def mirror(box: Box) -> Box:
    y0, x0, y1, x1 = box
    return (y0, x1, y1, x0)


def crop_resize(frames: torch.Tensor, box: Box, size: int) -> torch.Tensor:
    """uint8 `T×H×W×C` -> uint8 `T×C×size×size` (the PyAV path's version of DALI's crop + flip +
    resize); the relative box is scaled to the decoded frames' own size."""
    h, w = frames.shape[1:3]
    y0, x0, y1, x1 = (min(max(float(v), 0.0), 1.0) for v in box)
    y0, y1, x0, x1 = y0 * h, y1 * h, x0 * w, x1 * w
    flip = x0 > x1
    xa, xb = (x1, x0) if flip else (x0, x1)
    ys, ye = int(math.floor(y0)), min(h, max(int(math.ceil(y1)), int(math.floor(y0)) + 1))
    xs, xe = int(math.floor(xa)), min(w, max(int(math.ceil(xb)), int(math.floor(xa)) + 1))
    clip = frames[:, ys:ye, xs:xe].permute(0, 3, 1, 2).float()
    clip = F.interpolate(
        clip, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    if flip:
        clip = clip.flip(-1)
    return clip.round_().clamp_(0, 255).to(torch.uint8)


def normalise(
    frames: torch.Tensor, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype
) -> torch.Tensor:
    """uint8 `...×C×H×W` -> `(x / 255 - mean) / std` in `dtype`, on the frames' own device.

    Run on the training device after the copy, so the host and the copy carry uint8 (4x fewer
    bytes than float32), as timm's `PrefetchLoader` does.
    """
    shape = (3, 1, 1)
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=frames.device).view(shape)
    shift = torch.tensor([m / s for m, s in zip(mean, std, strict=True)], device=frames.device)
    out = frames.to(dtype)
    return out.mul_(scale.to(dtype)).sub_(shift.view(shape).to(dtype))


def crop_resize_normalise(
    frames: torch.Tensor, box: Box, size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """`crop_resize` then `normalise` to float32 (the reference the decoders are tested against)."""
    return normalise(crop_resize(frames, box, size), mean, std, torch.float32)
