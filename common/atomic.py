"""One way to write a file so that no reader ever sees half of it: temporary name, then rename.

Every file the project writes whole (JSON, YAML, Markdown, PNG, safetensors, shards, checkpoint
folders) goes through `atomic_path` or one of its wrappers. The temporary name is hidden
(`.name.tmp-<pid>`), lives in the same directory (so the rename is atomic) and is removed if
the write fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def temporary_name(path: str | os.PathLike, unique: bool = True) -> Path:
    """The hidden sibling a write of `path` goes to first.

    `unique` adds the process id (concurrent writers never share a temporary); several
    ranks filling one checkpoint folder pass `unique=False` so they all write the same one.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.tmp" + (f"-{os.getpid()}" if unique else ""))


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Rename a finished temporary onto `path` (a directory replaces an existing one)."""
    tmp, final = Path(tmp), Path(path)
    if tmp.is_dir() and final.is_dir():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write (a file or a whole directory); rename it to `path` after.

    A directory target replaces an existing one. On an exception the temporary is removed
    and `path` is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(final)
    _remove(tmp)
    try:
        yield tmp
        commit(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> Path:
    """JSON (indent 2 unless given) with a trailing newline."""
    dumps_kwargs.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")


def atomic_save_figure(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """A matplotlib figure (the format from `path`'s suffix, which the temporary lacks)."""
    path = Path(path)
    savefig_kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **savefig_kwargs)
    return path
