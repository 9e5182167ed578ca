"""The checkpoint format: file names, layout and how a checkpoint is found and read.

The one owner of the layout; `core.checkpoint` writes and resumes it, `core.init` (temporal
init, `vivit eval`) reads its weights, and neither defines names of its own.

Layout of `<run>/checkpoints/step_0000100/`:
  ds/…                 DeepSpeed engine state (optimizer, scheduler, per-rank ZeRO shards) for resume
  model.safetensors    fp32 weights of the trained parts, ViViTFE key names: `temporal_head.*`
                       always; `spatial.*` after a full-mode run, and after a frozen-mode run
                       without `spatial.weights` (its random backbone exists nowhere else)
  rng_rank{R}.json     each rank's RNG states (plain JSON)
  data_rank{R}.json    each rank's training-stream position after the last batch it trained on
                       (what the batch source's `position()` returned), for exact resume
  meta.json            step, mode, spatial weights path + sha256 (or null), config, class names
                       (+ the clip fps / duration cap of the training shards), for `vivit predict`
  sha256.json          digest of every file above (`core.ckpt_manifest`); written last
Everything is written into `step_0000100.tmp/` and renamed once complete, so a crash mid-save
leaves only a `.tmp` folder, which no reader counts and the next save or resume removes.
A directory is a checkpoint once `meta.json` and `model.safetensors` exist in it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file as load_safetensors
from torch import Tensor

from core.ckpt_manifest import MANIFEST_FILE, CheckpointError, verify_manifest

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
STEP_PREFIX = "step_"
TMP_SUFFIX = ".tmp"
DS_TAG = "ds"
"""Subfolder (DeepSpeed tag) of the engine state."""
HEAD_WEIGHT = "temporal_head.head.weight"
"""The classifier's weight: its rows are the checkpoint's classes."""

__all__ = [
    "DS_TAG",
    "HEAD_WEIGHT",
    "MANIFEST_FILE",
    "META_FILE",
    "STEP_PREFIX",
    "TMP_SUFFIX",
    "WEIGHTS_FILE",
    "CheckpointError",
    "checkpoint_name",
    "find_checkpoint",
    "head_classes",
    "read_checkpoint_weights",
    "data_file",
    "rng_file",
    "stale_tmp_dirs",
]


def checkpoint_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:07d}"


def rng_file(rank: int) -> str:
    return f"rng_rank{rank}.json"


def data_file(rank: int) -> str:
    return f"data_rank{rank}.json"


def _is_checkpoint(path: Path) -> bool:
    return (path / META_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def _step_of(path: Path) -> int:
    try:
        return int(path.name.removeprefix(STEP_PREFIX))
    except ValueError:
        return -1


def stale_tmp_dirs(root: Path) -> list[Path]:
    """`step_*.tmp` folders under `checkpoints/`: saves that never finished."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob(f"{STEP_PREFIX}*{TMP_SUFFIX}") if p.is_dir())


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory itself, or the newest complete one under a run (or checkpoints) dir."""
    path = Path(path)
    if _is_checkpoint(path):
        return path
    for parent in (path / "checkpoints", path):
        if not parent.is_dir():
            continue
        candidates = [
            p for p in parent.glob(f"{STEP_PREFIX}*") if _step_of(p) >= 0 and _is_checkpoint(p)
        ]
        if candidates:
            return max(candidates, key=_step_of)
    raise FileNotFoundError(
        f"no complete checkpoint at {path}: expected {WEIGHTS_FILE} + {META_FILE} there or in "
        f"{path}/checkpoints/{STEP_PREFIX}NNNNNNN/"
    )


def _verified(path: str | Path) -> Path:
    ckpt = find_checkpoint(path)
    if (ckpt / MANIFEST_FILE).is_file():  # copies of just these two files carry no manifest
        verify_manifest(ckpt, only=(META_FILE, WEIGHTS_FILE))
    return ckpt


def read_meta(ckpt: Path) -> dict[str, Any]:
    try:
        meta = json.loads((ckpt / META_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{ckpt / META_FILE}: invalid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{ckpt / META_FILE}: expected a JSON object, got {type(meta).__name__}"
        )
    return meta


def read_checkpoint_weights(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state dict, meta) of the checkpoint `find_checkpoint(path)` picks."""
    ckpt = _verified(path)
    meta = read_meta(ckpt)
    try:
        weights = load_safetensors(str(ckpt / WEIGHTS_FILE), device="cpu")
    except Exception as exc:  # SafetensorError has no file name in it
        raise CheckpointError(f"{ckpt / WEIGHTS_FILE}: not a safetensors file ({exc})") from None
    return weights, meta


def head_classes(path: str | Path) -> tuple[Path, int, list[str] | None]:
    """(checkpoint, classifier rows, class names if its meta records them), reading only the
    classifier's shape from `model.safetensors`."""
    ckpt = _verified(path)
    meta = read_meta(ckpt)
    try:
        with safe_open(str(ckpt / WEIGHTS_FILE), "pt") as fh:
            if HEAD_WEIGHT not in set(fh.keys()):
                raise CheckpointError(f"{ckpt / WEIGHTS_FILE}: no classifier ({HEAD_WEIGHT})")
            rows = int(fh.get_slice(HEAD_WEIGHT).get_shape()[0])
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{ckpt / WEIGHTS_FILE}: not a safetensors file ({exc})") from None
    names = meta.get("classes")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        names = None
    return ckpt, rows, names
