"""Spatial views as crop boxes, shared by the DALI and PyAV paths so both see the same views.

A box is `(y0, x0, y1, x1)` in source pixels; `x0 > x1` means "mirror horizontally", which is
how DALI's `resize` ROI expresses a flip, so DALI does crop + flip + resize in one operator.
"""

from __future__ import annotations

import math

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
    """Inception-style crop: area fraction in [min_scale, 1], log-uniform aspect ratio."""
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
    """Resize-short-side + centre crop (or 3 crops along the long side), as source-pixel squares."""
    side = min(height, width)
    slack_y, slack_x = height - side, width - side
    fractions = [0.5] if crops == 1 else [0.0, 0.5, 1.0]
    return [(slack_y * f, slack_x * f, slack_y * f + side, slack_x * f + side) for f in fractions]


def mirror(box: Box) -> Box:
    y0, x0, y1, x1 = box
    return (y0, x1, y1, x0)


def crop_resize_normalise(
    frames: torch.Tensor, box: Box, size: int, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """uint8 `T×H×W×C` -> normalised float `T×C×size×size` (the PyAV path's version of DALI's ops)."""
    y0, x0, y1, x1 = box
    flip = x0 > x1
    xa, xb = (x1, x0) if flip else (x0, x1)
    h, w = frames.shape[1:3]
    ys, ye = int(math.floor(y0)), min(h, max(int(math.ceil(y1)), int(math.floor(y0)) + 1))
    xs, xe = int(math.floor(xa)), min(w, max(int(math.ceil(xb)), int(math.floor(xa)) + 1))
    clip = frames[:, ys:ye, xs:xe].permute(0, 3, 1, 2).float()
    clip = F.interpolate(
        clip, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    if flip:
        clip = clip.flip(-1)
    return (clip / 255.0 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
