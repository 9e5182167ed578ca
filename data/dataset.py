"""The shard directory a run reads: the user's, or the built-in synthetic set built on demand."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from data.config import DataConfig
from data.manifest import MANIFEST


def ensure_dataset(cfg: DataConfig, seed: int) -> Path:
    """The shard directory, building the synthetic set there first when asked and absent.

    Ranks race here: a lock file serialises them and the set is built in a temporary
    directory and moved into place, so no rank ever sees half a dataset.
    """
    if cfg.root is None:
        raise ValueError("data.root is not set")
    root = Path(cfg.root)
    if (root / MANIFEST).is_file():
        return root
    if not cfg.synthetic:
        raise FileNotFoundError(
            f"no {MANIFEST} in {root}: build shards with `vivit shards build` or set data.synthetic=true"
        )
    from data.synthetic import check_synthetic_target, make_synthetic

    check_synthetic_target(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / f".{root.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / MANIFEST).is_file():
            return root
        check_synthetic_target(root)
        tmp = root.parent / f".{root.name}.building-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        make_synthetic(
            tmp,
            clips=cfg.synth_clips,
            val_clips=max(1, cfg.synth_clips // 4),
            frames=max(16, cfg.frames),
            size=cfg.synth_size,
            seed=seed,
        )
        if root.exists():
            for child in tmp.iterdir():
                if child.name != MANIFEST:
                    os.replace(child, root / child.name)
            os.replace(tmp / MANIFEST, root / MANIFEST)  # last: marks the set complete
            tmp.rmdir()
        else:
            os.replace(tmp, root)
    return root
