"""Files that ship inside the installed package: experiment YAMLs (`configs`) and DeepSpeed
JSONs (`ds_configs`), found through `importlib.resources` so that `vivit train configs/tiny.yaml`
and the default `engine.ds_config` work from any directory after a non-editable install.

A path the user gives wins: an existing file (absolute, or relative to the working directory)
is used as is; only a relative path that names no file falls back to the packaged copy, with
the folder name optional (`configs/tiny.yaml` and `tiny.yaml` both find the shipped file).
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

CONFIGS = "configs"
DS_CONFIGS = "ds_configs"


def shipped_path(path: str | os.PathLike[str], package: str) -> Path | None:
    """The file `path` names: as given if it exists, else the packaged copy, else None."""
    given = Path(path)
    if given.is_file():
        return given
    if given.is_absolute():
        return None
    parts = given.parts
    if parts and parts[0] == package:
        parts = parts[1:]
    if not parts:
        return None
    candidate = files(package).joinpath(*parts)
    if not candidate.is_file():
        return None
    if not isinstance(candidate, os.PathLike):  # e.g. a zipped install: no real file to hand on
        raise FileNotFoundError(f"{path}: packaged copy {candidate} is not on the file system")
    return Path(os.fspath(candidate))


def shipped_names(package: str, suffix: str) -> list[str]:
    """Relative names of the files with `suffix` shipped in `package` (for error messages)."""
    root = files(package)
    names: list[str] = []

    def walk(node, prefix: str) -> None:  # type: ignore[no-untyped-def]
        for child in node.iterdir():
            name = f"{prefix}{child.name}"
            if child.is_dir() and not child.name.startswith(("_", ".")):
                walk(child, f"{name}/")
            elif child.name.endswith(suffix):
                names.append(name)

    walk(root, "")
    return sorted(names)
