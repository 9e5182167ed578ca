"""The token cache's layout: file names, records, `cache.json`, the spec check, storage figures.

A cache directory (`vivit cache build CONFIG.yaml --out DIR`) holds, per split and view `v`,
one WebDataset tar per source shard `u`: `{split}-v{v:02d}-{u:06d}.tar`. Its records carry
one view of one clip, keyed by the clip's own key:

  KEY.cls          label of this view (a flip may relabel: `data.flip=always`)
  KEY.json         {"view": v, "frames": [...], "box": [y0, x0, y1, x1], "flip": bool}
  KEY.embed.npy    T x D     frame embeddings (the CLS token of every frame)
  KEY.patches.npy  T x N x D patch tokens, whole or pooled (absent when N = 0)

Tokens are float16 (or float32 for checks). `.parts/{split}-{u:06d}.json` marks source shard
`u` complete (written after its tars); a killed build redoes only shards without one.
`cache.json` (written last, by rank 0) pins what the tokens depend on (`spec`: spatial weights
sha256, model, img_size, patch size, layer, token layout, frames, sampling, augmentation) and
lists the shards, the classes, the storage and the build's cost.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from data.manifest import shard_name

CACHE_MANIFEST = "cache.json"
FORMAT = "vivit-token-cache"
VERSION = 1
PARTS = ".parts"
STATE = ".cache-build.json"
EMBED, PATCHES = "embed.npy", "patches.npy"
TOKEN_DTYPES = {"float16": np.float16, "float32": np.float32}
K400_CLIPS = 240_000
"""Kinetics-400's training clips (about): the default size storage is projected to."""


class CacheError(ValueError):
    """A token cache that cannot be used by this run; the message names the directory."""


class CacheMismatch(CacheError):
    """The cache was built for another spatial model, weights, view geometry or token layout."""

    def __init__(self, root: str | os.PathLike, field: str, cached: Any, run: Any):
        self.field, self.cached, self.run = field, cached, run
        super().__init__(
            f"token cache {root} was built with {field}={_show(cached)}, this run has "
            f"{field}={_show(run)}: rebuild it (vivit cache build CONFIG.yaml --out DIR) with "
            "this run's config, or train from videos (unset data.cache)"
        )


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else repr(value)


def view_prefix(split: str, view: int) -> str:
    return f"{split}-v{view:02d}"


def view_shard_name(split: str, view: int, unit: int) -> str:
    """File of view `view` of the clips of source shard `unit`."""
    return shard_name(view_prefix(split, view), unit)


def part_path(root: str | os.PathLike, split: str, unit: int) -> Path:
    """The marker that source shard `unit` of `split` is complete in the cache."""
    return Path(root) / PARTS / f"{split}-{unit:06d}.json"


def encode_array(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...]]] = {}
"""`.npy` header bytes -> (dtype, shape) numpy parsed them into (a cache has a few shapes)."""


def decode_array(payload: bytes) -> np.ndarray:
    """An `.npy` payload as a read-only array, never unpickling (object arrays are refused).

    numpy parses every header with `ast` (~60 us, a fifth of reading a cached record in a
    loader worker); a header seen before is not parsed again.
    """
    if payload[6:7] == b"\x01":  # format 1.0: 2-byte header length; 2.0/3.0: 4 bytes
        start = 10 + int.from_bytes(payload[8:10], "little")
    else:
        start = 12 + int.from_bytes(payload[8:12], "little")
    known = _HEADERS.get(payload[:start])
    if known is None:
        array = np.load(io.BytesIO(payload), allow_pickle=False)
        if array.flags.f_contiguous and not array.flags.c_contiguous:
            return array  # not what `encode_array` writes: read, not remembered
        if len(_HEADERS) >= 64:
            _HEADERS.clear()
        _HEADERS[payload[:start]] = (array.dtype, array.shape)
        array.flags.writeable = False
        return array
    dtype, shape = known
    count = math.prod(shape)
    if len(payload) - start != count * dtype.itemsize:
        raise ValueError(f".npy payload of {len(payload)} bytes does not hold {shape} {dtype}")
    return np.frombuffer(payload, dtype, count=count, offset=start).reshape(shape)


def view_bytes(frames: int, dim: int, patches: int, itemsize: int = 2) -> int:
    """Token bytes of one view of one clip: T frame embeddings + T x N patch tokens."""
    return frames * (1 + patches) * dim * itemsize


def storage_rows(
    frames: int,
    dim: int,
    whole_patches: int,
    *,
    clips: int,
    views: int = 1,
    grids: tuple[int, ...] = (2, 4, 7),
    itemsize: int = 2,
) -> list[dict[str, Any]]:
    """Bytes per clip and for `clips` clips x `views` views: whole, pooled grids, CLS only."""
    layouts = [("whole", whole_patches)]
    layouts += [(f"pooled {g}x{g}", g * g) for g in grids if g * g < whole_patches]
    layouts += [("CLS only", 0)]
    return [
        {
            "layout": name,
            "patch_tokens": n,
            "bytes_per_view": view_bytes(frames, dim, n, itemsize),
            "bytes_per_clip": views * view_bytes(frames, dim, n, itemsize),
            "total_bytes": clips * views * view_bytes(frames, dim, n, itemsize),
        }
        for name, n in layouts
    ]


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def read_cache_manifest(root: str | os.PathLike) -> dict:
    """`root/cache.json`, checked to be a complete token cache; errors name the path."""
    path = Path(root) / CACHE_MANIFEST
    if not path.is_file():
        partial = (Path(root) / PARTS).is_dir()
        why = "its build has not finished (re-run it to resume)" if partial else "no such cache"
        raise CacheError(f"data.cache={root}: no {CACHE_MANIFEST} ({why})")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CacheError(f"{path}: not valid JSON ({e})") from e
    if manifest.get("format") != FORMAT:
        raise CacheError(f"{path}: not a token cache (format {manifest.get('format')!r})")
    if manifest.get("version") != VERSION:
        raise CacheError(f"{path}: cache format version {manifest.get('version')}, need {VERSION}")
    return manifest


def check_spec(manifest: dict, expected: dict[str, Any], root: str | os.PathLike) -> None:
    """Refuse a cache whose pinned fields differ from the run's, naming the first that does."""
    cached = manifest.get("spec", {})
    for field, value in expected.items():
        if field not in cached or _canon(cached[field]) != _canon(value):
            raise CacheMismatch(root, field, cached.get(field, "(absent)"), value)


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def split_view_shards(manifest: dict, root: str | os.PathLike, split: str) -> list[tuple[str, int]]:
    """`(tar path, records)` of every view shard of `split` (all views)."""
    splits = manifest.get("splits", {})
    if split not in splits:
        raise CacheError(
            f"token cache {root} has no split '{split}' (has {sorted(splits)}): build it with "
            f"vivit cache build CONFIG.yaml --out {root} --split {split}"
        )
    return [(str(Path(root) / s["name"]), int(s["count"])) for s in splits[split]["shards"]]
