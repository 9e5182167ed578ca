"""Fixtures for the data tests: tiny real videos encoded with PyAV, and tiny shard sets."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import torch

from data.config import DataConfig
from data.sources import EvalBatchSource, TrainBatchSource, open_eval_batches, open_train_batches
from data.transcode import encode_frames

SIZE = 32
LEVEL_STEP = 24


def level(i: int) -> int:
    """Grey level that encodes frame index i (flat frames survive lossy codecs)."""
    return 16 + LEVEL_STEP * i


def index_frames(count: int, size: int = SIZE) -> np.ndarray:
    """`count` flat grey frames whose value tells their index."""
    frames = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        frames[i] = level(i)
    return frames


def decoded_index(frame: np.ndarray) -> int:
    """Inverse of `level` for a decoded (possibly slightly lossy) frame."""
    return int(round((float(np.median(frame)) - 16) / LEVEL_STEP))


def write_video(path: Path, frames: np.ndarray, codec: str, fps: float = 8.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_frames(frames, fps=fps, codec=codec, gop=4, lossless=codec == "vp9"))
    return path


def write_truncated(path: Path, frames: np.ndarray) -> Path:
    """An H.264 mp4 cut in half: its index (moov, written last) is gone, so it cannot be opened."""
    data = encode_frames(frames, fps=8.0, codec="h264", gop=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


def write_shard(path: Path, records: list[tuple[str, dict[str, bytes]]]) -> None:
    """A raw WebDataset tar, for hand-made (e.g. corrupt) records."""
    with tarfile.open(path, "w") as tar:
        for key, files in records:
            for ext, payload in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


def video_record(frames: np.ndarray, label: int, codec: str = "vp9") -> dict[str, bytes]:
    ext = "webm" if codec == "vp9" else "mp4"
    data = encode_frames(frames, fps=8.0, codec=codec, gop=4, lossless=codec == "vp9")
    meta = {
        "label": str(label),
        "source": "test",
        "fps": 8.0,
        "frames": len(frames),
        "width": frames.shape[2],
        "height": frames.shape[1],
        "codec": codec,
    }
    return {ext: data, "cls": str(label).encode(), "json": json.dumps(meta).encode()}


def write_shard_set(
    root: Path,
    splits: dict[str, list[list[tuple[str, dict[str, bytes]]]]],
    classes: list[str],
    flip_safe: bool = True,
) -> Path:
    """Shards + a matching manifest: `splits[split]` is a list of shards, each a record list."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"classes": classes, "flip_safe": flip_safe, "flip_pairs": [], "splits": {}}
    for split, shards in splits.items():
        entries = []
        for n, records in enumerate(shards):
            name = f"{split}-{n:06d}.tar"
            write_shard(root / name, records)
            entries.append({"name": name, "count": len(records)})
        manifest["splits"][split] = {"shards": entries, "count": sum(e["count"] for e in entries)}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


Norm = tuple[float, float, float]
HALF: Norm = (0.5, 0.5, 0.5)


def cpu_train_batches(
    cfg: DataConfig,
    *,
    batch_size: int,
    seed: int,
    mean: Norm = HALF,
    std: Norm = HALF,
    img_size: int = 16,
) -> TrainBatchSource:
    """`open_train_batches` as the data tests open it: one rank, fp32 on the CPU."""
    return open_train_batches(
        cfg,
        batch_size=batch_size,
        img_size=img_size,
        mean=mean,
        std=std,
        rank=0,
        world_size=1,
        seed=seed,
        device=torch.device("cpu"),
        dtype=torch.float32,
    )


def cpu_eval_batches(
    cfg: DataConfig,
    *,
    batch_size: int,
    mean: Norm = HALF,
    std: Norm = HALF,
    rank: int = 0,
    world_size: int = 1,
    img_size: int = 16,
) -> EvalBatchSource:
    """`open_eval_batches` as the data tests open it: fp32 on the CPU, every val video."""
    return open_eval_batches(
        cfg,
        batch_size=batch_size,
        img_size=img_size,
        mean=mean,
        std=std,
        rank=rank,
        world_size=world_size,
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
