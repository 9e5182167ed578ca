"""The shard directory's `manifest.json`: classes, per-shard counts, codec, build options.

The manifest is the contract between `vivit shards build|synth` and every reader: readers
trust its class list and counts, and `vivit shards inspect` checks the tars agree with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_json

MANIFEST = "manifest.json"
VIDEO_EXTS = ("mp4", "webm")


class ManifestError(ValueError):
    """A manifest that cannot be read, or lacks what the run needs; names the file."""


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write to a temporary name then rename, so a reader never sees half a file."""
    atomic_write_json(path, obj, indent=2, sort_keys=False)


def read_manifest(root: str | os.PathLike) -> dict:
    """Load and sanity-check `root/manifest.json`; errors name the path and the missing key."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in shard directory {Path(root)}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: not valid JSON ({e})") from e
    for key in ("classes", "splits"):
        if key not in manifest:
            raise ManifestError(f"{path}: missing key '{key}'")
    manifest.setdefault("flip_safe", True)
    manifest.setdefault("flip_pairs", [])
    return manifest


def split_shards(manifest: dict, root: str | os.PathLike, split: str) -> list[tuple[str, int]]:
    """`(shard path, sample count)` of one split, in manifest order."""
    splits = manifest["splits"]
    if split not in splits:
        raise KeyError(f"split '{split}' not in {Path(root) / MANIFEST} (has {sorted(splits)})")
    return [(str(Path(root) / s["name"]), int(s["count"])) for s in splits[split]["shards"]]


def require_splits(manifest: dict, root: str | os.PathLike, splits: dict[str, str]) -> None:
    """Fail before training when a split the run needs (`{config key: split}`) is absent or empty."""
    have = manifest["splits"]
    for key, split in splits.items():
        shards = have.get(split, {}).get("shards") if isinstance(have.get(split), dict) else None
        if not shards:
            state = "has no shards" if split in have else "is not"
            raise ManifestError(
                f"split '{split}' ({key}) {state} in {Path(root) / MANIFEST} "
                f"(splits there: {sorted(have)}): build it, or set {key} to one of them"
            )


def empty_manifest(classes: list[str], *, codec: str, flip_safe: bool, build: dict) -> dict:
    return {
        "version": 1,
        "classes": list(classes),
        "num_classes": len(classes),
        "codec": codec,
        "flip_safe": flip_safe,
        "flip_pairs": [],
        "build": build,
        "splits": {},
        "totals": {},
    }


def set_split(manifest: dict, split: str, shards: list[dict]) -> None:
    """Record one split's shards (`{"name", "count"}`) and refresh the totals."""
    manifest["splits"][split] = {"shards": shards, "count": sum(s["count"] for s in shards)}
    manifest["totals"] = {k: v["count"] for k, v in manifest["splits"].items()}


def checkpoint_labels(manifest: dict, split: str) -> dict[str, Any]:
    """What a checkpoint keeps of the shard set, so a video file can be classified without it:
    the class names, and the frame rate and duration the `split` clips were cut to at build
    time (`--fps`, `--max-seconds`; None: the source video's own, as `--codec copy` keeps)."""
    builds = manifest.get("builds")
    build = (builds.get(split) if isinstance(builds, dict) else None) or manifest.get("build")
    build = build if isinstance(build, dict) and build.get("codec") != "copy" else {}
    return {
        "classes": [str(c) for c in manifest["classes"]],
        "clip_fps": build.get("fps"),
        "clip_max_seconds": build.get("max_seconds"),
    }
