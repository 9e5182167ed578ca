"""`sha256.json`: the digest of every file of a checkpoint, written last at save time.

Resume checks every file against it before anything is read, so a file changed, added or
swapped after the save (tampering, a partial copy, two runs mixed) is refused by name.
It does not make a checkpoint crafted whole by someone else trustworthy: that is why the
files themselves are read only through code that cannot execute anything (safetensors,
JSON, `torch.load(weights_only=True)`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from core.rundir import write_json_atomic
from core.spatial import file_sha256

MANIFEST_FILE = "sha256.json"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, altered or unsafe to load; the message names it."""


def _files(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST_FILE
    )


def write_manifest(folder: Path) -> None:
    """Digest every file under `folder` (call once all of them are written)."""
    write_json_atomic(
        folder / MANIFEST_FILE, {name: file_sha256(folder / name) for name in _files(folder)}
    )


def verify_manifest(folder: Path, only: Iterable[str] | None = None) -> None:
    """Raise `CheckpointError` unless the files (all, or just `only`) match `sha256.json`.

    Checking all files also refuses a file the manifest does not list.
    """
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {folder} has no {MANIFEST_FILE} (not written by this version of vivit, "
            "or incomplete): refusing to load it"
        )
    try:
        digests = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(digests, dict):
        raise CheckpointError(f"{path}: expected a JSON object of file -> sha256")
    if only is None:
        names = _files(folder)
        unlisted = [n for n in names if n not in digests]
        if unlisted:
            raise CheckpointError(
                f"checkpoint {folder}: {folder / unlisted[0]} is not listed in {MANIFEST_FILE} "
                "(added after the save): refusing to load the checkpoint"
            )
        names = sorted(set(names) | set(digests))
    else:
        names = list(only)
    for name in names:
        file = folder / name
        if name not in digests:
            raise CheckpointError(f"{file} is not listed in {path}: refusing to load it")
        if not file.is_file():
            raise CheckpointError(f"{file} is missing (listed in {path})")
        if file_sha256(file) != digests[name]:
            raise CheckpointError(
                f"{file} does not match its sha256 in {path} (changed after the save): "
                "refusing to load it"
            )
