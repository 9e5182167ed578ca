"""The built-in synthetic action set: classes that can only be told apart over time.

Classes come in pairs that are each other's time reversal (class 2k+1 is class 2k played
backwards), so a single frame - or an orderless bag of frames - carries no class signal; the
model must use frame order. Objects, colours, textures, positions, speeds and distractors are
random nuisance. A matching still-image set (objects at random positions and scales) is
written for pretraining the spatial ViT so that its CLS token becomes position-invariant and
the motion lives only in the patch tokens (see DESIGN.md).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.seeding import numpy_rng
from data.fork import forking
from data.manifest import MANIFEST, empty_manifest, set_split, write_json_atomic
from data.shard_writer import ShardWriter
from data.transcode import encode_frames

# Pair k = (forward, its time reversal). Index 2k is forward, 2k+1 reversed.
CLASSES = [
    "moves right",
    "moves left",
    "moves down",
    "moves up",
    "grows",
    "shrinks",
    "rotates clockwise",
    "rotates counter-clockwise",
    "appears",
    "disappears",
    "approaches",
    "recedes",
]
# A horizontal flip turns right into left and clockwise into counter-clockwise.
FLIP_PAIRS = [[0, 1], [6, 7]]
SHAPES = ["circle", "square", "triangle", "cross", "diamond", "ring"]
FPS = 8.0
SHARD_CLIPS = 64


def reverse_class(cls: int) -> int:
    return cls ^ 1


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Implicit shapes on object coordinates u, v in [-1, 1]."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(abs(u), abs(v)) <= 0.85
    if shape == "triangle":
        return (v <= 0.8) & (v >= 1.6 * abs(u) - 0.8)
    if shape == "cross":
        return ((abs(u) <= 0.3) | (abs(v) <= 0.3)) & (np.maximum(abs(u), abs(v)) <= 1.0)
    if shape == "diamond":
        return abs(u) + abs(v) <= 1.0
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.36)
    raise ValueError(f"unknown shape '{shape}'")


@dataclass
class SceneParams:
    """Everything random about a clip except its class: the nuisance the model must ignore."""

    obj: int
    colour: np.ndarray
    colour2: np.ndarray
    stripe_freq: float
    stripe_phase: float
    cx: float
    cy: float
    scale: float
    angle: float
    amp: float
    background: np.ndarray
    distractors: list[tuple[float, float, float, float, float, np.ndarray]]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    c0, c1 = rng.uniform(0, 0.45, 3), rng.uniform(0, 0.45, 3)
    a = rng.uniform(0, 2 * np.pi)
    g = 0.5 + 0.5 * np.sin(rng.uniform(2, 10) * (np.cos(a) * xx + np.sin(a) * yy))
    noise = rng.uniform(-0.04, 0.04, (size, size, 1))
    return np.clip(c0 + (c1 - c0) * g[..., None] + noise, 0, 1)


def sample_params(rng: np.random.Generator, size: int, num_objects: int) -> SceneParams:
    n_distract = int(rng.integers(0, 3))
    distractors = [
        (
            rng.uniform(0.1, 0.9),
            rng.uniform(0.1, 0.9),
            rng.uniform(-0.3, 0.3),
            rng.uniform(-0.3, 0.3),
            rng.uniform(0.04, 0.08),
            rng.uniform(0.3, 1.0, 3),
        )
        for _ in range(n_distract)
    ]
    return SceneParams(
        obj=int(rng.integers(num_objects)),
        colour=rng.uniform(0.5, 1.0, 3),
        colour2=rng.uniform(0.2, 0.7, 3),
        stripe_freq=float(rng.uniform(2.0, 5.0)),
        stripe_phase=float(rng.uniform(0, 2 * np.pi)),
        cx=float(rng.uniform(0.35, 0.65)),
        cy=float(rng.uniform(0.35, 0.65)),
        scale=float(rng.uniform(0.16, 0.26)),
        angle=float(rng.uniform(0, 2 * np.pi)),
        amp=float(rng.uniform(0.6, 1.0)),
        background=_background(rng, size),
        distractors=distractors,
    )


def _object_state(cls: int, p: SceneParams, s: float) -> tuple[float, float, float, float, float]:
    """(x, y, scale, angle, opacity) at scene time s in [0, 1] for the forward class of cls's pair."""
    x, y, scale, angle, alpha = p.cx, p.cy, p.scale, p.angle, 1.0
    d = s - 0.5
    pair = cls // 2
    if pair == 0:
        x = p.cx + 0.5 * p.amp * d
    elif pair == 1:
        y = p.cy + 0.5 * p.amp * d
    elif pair == 2:
        scale = p.scale * (1.0 + 1.1 * p.amp * d)
    elif pair == 3:
        angle = p.angle + 1.5 * np.pi * p.amp * d
    elif pair == 4:
        alpha = float(np.clip(1.5 * s - 0.25, 0.0, 1.0))
    elif pair == 5:
        scale = p.scale * (1.0 + 0.9 * p.amp * d)
        y = p.cy + 0.35 * p.amp * d
    return x, y, scale, angle, alpha


def _paint_object(
    img: np.ndarray,
    p: SceneParams,
    shape: str | np.ndarray,
    x: float,
    y: float,
    scale: float,
    angle: float,
    alpha: float,
) -> None:
    size = img.shape[0]
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    dx, dy = xx - x, yy - y
    c, s = np.cos(angle), np.sin(angle)
    u = (c * dx + s * dy) / scale
    v = (-s * dx + c * dy) / scale
    if isinstance(shape, str):
        mask = _shape_mask(shape, u, v).astype(np.float64)
        stripes = (np.sin(p.stripe_freq * np.pi * u + p.stripe_phase) > 0)[..., None]
        colour = np.where(stripes, p.colour, p.colour2)
    else:  # an RGBA image object, sampled nearest-neighbour
        n = shape.shape[0]
        inside = (abs(u) <= 1) & (abs(v) <= 1)
        iu = np.clip(((u + 1) / 2 * n).astype(int), 0, n - 1)
        iv = np.clip(((v + 1) / 2 * n).astype(int), 0, n - 1)
        texel = shape[iv, iu]
        mask = inside * texel[..., 3]
        colour = texel[..., :3]
    a = (alpha * mask)[..., None]
    img[:] = img * (1 - a) + colour * a


def render_clip(
    cls: int, p: SceneParams, frames: int, size: int, objects: list[str | np.ndarray]
) -> np.ndarray:
    """`T×S×S×3` uint8. Class 2k+1 runs the scene of class 2k backwards in time, exactly."""
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        s = t / max(frames - 1, 1)
        if cls % 2 == 1:
            s = 1.0 - s
        img = p.background.copy()
        for x0, y0, vx, vy, r, col in p.distractors:
            xd, yd = x0 + vx * (s - 0.5), y0 + vy * (s - 0.5)
            yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
            box = (abs(xx - xd) <= r) & (abs(yy - yd) <= r)
            img[box] = col
        _paint_object(img, p, objects[p.obj], *_object_state(cls, p, s))
        out[t] = np.round(img * 255).astype(np.uint8)
    return out


def load_objects(objects_dir: str | Path | None) -> tuple[list[str], list[str | np.ndarray]]:
    """Object class names and their renderables: procedural shapes, or one image per class folder."""
    if objects_dir is None:
        return list(SHAPES), list(SHAPES)
    from PIL import Image

    root = Path(objects_dir)
    names, objects = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(
            f for f in folder.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg")
        )
        if not images:
            continue
        img = Image.open(images[0]).convert("RGBA").resize((32, 32))
        names.append(folder.name)
        objects.append(np.asarray(img, np.float64) / 255.0)
    if not names:
        raise ValueError(f"--objects {root}: no class subfolders with .png/.jpg images")
    return names, objects


def _clip_rng(seed: int, split: str, i: int) -> np.random.Generator:
    return numpy_rng(seed, f"synthetic-clip-{split}", i)


def synth_clip(
    seed: int, split: str, i: int, frames: int, size: int, objects: list
) -> tuple[int, SceneParams, np.ndarray]:
    """Clip i of a split: its class, scene parameters and frames (same for any worker count)."""
    rng = _clip_rng(seed, split, i)
    params = sample_params(rng, size, len(objects))
    cls = int(rng.integers(len(CLASSES)))
    return cls, params, render_clip(cls, params, frames, size, objects)


def _encode_chunk(job: tuple) -> list[tuple[int, int, int, bytes]]:
    seed, split, lo, hi, frames, size, codec, objects_dir = job
    _, objects = load_objects(objects_dir)
    out = []
    for i in range(lo, hi):
        cls, params, clip = synth_clip(seed, split, i, frames, size, objects)
        data = encode_frames(clip, fps=FPS, codec=codec, gop=4, lossless=codec == "vp9")
        out.append((i, cls, params.obj, data))
    return out


def _write_images(
    out: Path, split: str, count: int, size: int, seed: int, names: list[str], objects: list
) -> None:
    from PIL import Image

    for name in names:
        (out / "images" / split / name).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rng = numpy_rng(seed, f"synthetic-image-{split}", i)
        p = sample_params(rng, size, len(objects))
        img = p.background.copy()
        # wide position/scale range: the pretrained CLS must not encode where or how big
        x, y = rng.uniform(0.25, 0.75, 2)
        scale = rng.uniform(0.14, 0.32)
        _paint_object(img, p, objects[p.obj], x, y, scale, p.angle, 1.0)
        pix = np.round(img * 255).astype(np.uint8)
        Image.fromarray(pix).save(out / "images" / split / names[p.obj] / f"{i:06d}.png")


def check_synthetic_target(out: str | Path) -> None:
    """Refuse to write the synthetic set into a non-empty directory that is not one already.

    An interrupted `vivit shards build` leaves `train-000000.tar` and no manifest: writing the
    synthetic set there would replace the user's shards.
    """
    out = Path(out)
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        build = json.loads((out / MANIFEST).read_text()).get("build")
    except (OSError, ValueError, AttributeError):
        build = None
    if isinstance(build, dict) and build.get("synthetic") is True:
        return
    raise FileExistsError(
        f"refusing to write the synthetic set into {out}: the directory is not empty and is not "
        f"a synthetic set (no {MANIFEST} with build.synthetic=true; an interrupted "
        "`vivit shards build` leaves such a folder). Point it at an empty or new directory."
    )


def make_synthetic(
    out: str | Path,
    clips: int = 512,
    val_clips: int = 128,
    frames: int = 16,
    size: int = 32,
    seed: int = 0,
    codec: str = "vp9",
    objects_dir: str | Path | None = None,
    workers: int | None = None,
    images: int | None = None,
) -> Path:
    """Write train/val shards, `manifest.json` and `images/{train,val}/<object>/*.png` to `out`."""
    if size % 2 or size < 8:
        raise ValueError(f"size must be even and >= 8, got {size}")
    if clips < 1 or val_clips < 1:
        raise ValueError(f"clips and val_clips must be >= 1, got {clips} and {val_clips}")
    if frames < 2:
        raise ValueError(f"frames must be >= 2 (a clip shows motion), got {frames}")
    if codec not in ("vp9", "h264"):
        raise ValueError(f"codec must be vp9 or h264, got '{codec}'")
    out = Path(out)
    check_synthetic_target(out)
    out.mkdir(parents=True, exist_ok=True)
    names, objects = load_objects(objects_dir)
    workers = workers or min(os.cpu_count() or 1, 4)
    ext = "webm" if codec == "vp9" else "mp4"
    manifest = empty_manifest(
        CLASSES,
        codec=codec,
        flip_safe=False,
        build={
            "synthetic": True,
            "clips": clips,
            "val_clips": val_clips,
            "frames": frames,
            "size": size,
            "seed": seed,
            "codec": codec,
            "objects": names,
        },
    )
    manifest["flip_pairs"] = FLIP_PAIRS
    manifest["time_reversal_pairs"] = [[2 * k, 2 * k + 1] for k in range(len(CLASSES) // 2)]
    manifest["objects"] = names
    objects_arg = str(objects_dir) if objects_dir else None
    for split, count in (("train", clips), ("val", val_clips)):
        jobs = [
            (seed, split, lo, min(lo + SHARD_CLIPS, count), frames, size, codec, objects_arg)
            for lo in range(0, count, SHARD_CLIPS)
        ]
        writer = ShardWriter(out, split, max_bytes=2**62)
        if workers > 1 and len(jobs) > 1:
            with forking():
                pool = mp.get_context("fork").Pool(min(workers, len(jobs)))
            with pool:
                chunks = pool.imap(_encode_chunk, jobs)
                _write_chunks(writer, chunks, split, seed, frames, size, codec, ext, names)
        else:
            _write_chunks(
                writer, map(_encode_chunk, jobs), split, seed, frames, size, codec, ext, names
            )
        set_split(manifest, split, writer.close())
        image_dir = out / "images" / split
        if image_dir.exists():
            shutil.rmtree(image_dir)
        _write_images(out, split, count if images is None else images, size, seed, names, objects)
    write_json_atomic(out / MANIFEST, manifest)
    return out


def _write_chunks(writer, chunks, split, seed, frames, size, codec, ext, names) -> None:
    for chunk in chunks:
        for i, cls, obj, data in chunk:
            meta = {
                "label": CLASSES[cls],
                "source": f"synthetic:seed={seed}:{split}:{i}",
                "fps": FPS,
                "frames": frames,
                "width": size,
                "height": size,
                "codec": codec,
                "object": names[obj],
            }
            files = {ext: data, "cls": str(cls).encode(), "json": json.dumps(meta).encode()}
            writer.write(f"{i:06d}", files)
        writer.close_shard()
