"""Write WebDataset tar shards of bounded size, each under a temporary name until complete.

A shard that exists under its final name is complete by construction, which is what lets a
re-run of the build skip it.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from common.atomic import atomic_path
from data.manifest import shard_name


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(payload))


class ShardWriter:
    """Append records (`key` + `{ext: bytes}`) to `{split}-NNNNNN.tar`, rolling over at `max_bytes`."""

    def __init__(self, out: Path, split: str, *, max_bytes: int, start_index: int = 0):
        self.out, self.split, self.max_bytes = Path(out), split, max_bytes
        self.index = start_index
        self.finished: list[dict] = []
        self._tar: tarfile.TarFile | None = None
        self._tmp: Path | None = None
        self._count = 0
        self._bytes = 0

    def _open(self) -> None:
        self._commit = atomic_path(self.out / shard_name(self.split, self.index))
        self._tmp = self._commit.__enter__()
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 (closed by close_shard)
        self._count = self._bytes = 0

    def write(self, key: str, files: dict[str, bytes]) -> None:
        if "." in key:
            raise ValueError(f"record key must not contain '.', got '{key}'")
        if self._tar is None:
            self._open()
        assert self._tar is not None
        for ext, payload in files.items():
            _add(self._tar, f"{key}.{ext}", payload)
            self._bytes += len(payload) + 1024
        self._count += 1
        if self._bytes >= self.max_bytes:
            self.close_shard()

    def close_shard(self) -> None:
        """Finish the open shard: close, fsync-free rename to its final name, record its count."""
        if self._tar is None:
            return
        self._tar.close()
        final = self.out / shard_name(self.split, self.index)
        self._commit.__exit__(None, None, None)  # renames the finished tar into place
        self.finished.append({"name": final.name, "count": self._count})
        self._tar, self._tmp = None, None
        self.index += 1

    def close(self) -> list[dict]:
        self.close_shard()
        return self.finished
