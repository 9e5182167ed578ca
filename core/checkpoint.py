"""Checkpoints that are never half written: DeepSpeed state + trainable weights + meta.

The layout (file names, `.tmp` folders, what `model.safetensors` holds) is owned by
`core.ckpt_format`; this module writes it and resumes from it.

Loading never executes code from the checkpoint: resume first checks every file against
`sha256.json`, then reads JSON, and DeepSpeed's torch files with `weights_only=True`.
"""

from __future__ import annotations

import errno
import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from common.atomic import commit
from core import engine as ds_engine
from core.ckpt_format import (
    DS_TAG,
    META_FILE,
    STEP_PREFIX,
    TMP_SUFFIX,
    WEIGHTS_FILE,
    checkpoint_name,
    data_file,
    find_checkpoint,
    read_meta,
    rng_file,
    stale_tmp_dirs,
)
from core.ckpt_manifest import CheckpointError, verify_manifest, write_manifest
from core.configtools import ConfigError, flatten

log = logging.getLogger(__name__)


class CheckpointSaveError(OSError):
    """A checkpoint could not be written (disk full, permissions...); names the folder and the
    free space there. The partial save is removed."""


def save_checkpoint(
    engine: Any,
    run_dir: Path,
    step: int,
    meta: dict[str, Any],
    rank: int,
    keep: int,
    extra_weights: dict[str, torch.Tensor] | None = None,
    data_position: dict[str, Any] | None = None,
) -> Path:
    """Save on all ranks (collective); rank 0 renames the finished folder into place.

    `extra_weights` (full ViViTFE key names, e.g. a frozen `spatial.*` that exists in no file)
    go into `model.safetensors` beside the engine's weights. `data_position` (this rank's
    training-stream position, plain JSON) goes into `data_rank{R}.json`. Rank 0 first removes
    `.tmp` folders left by saves that were killed.
    """
    root = run_dir / "checkpoints"
    final = root / checkpoint_name(step)
    tmp = root / (final.name + TMP_SUFFIX)
    if rank == 0:
        remove_stale_tmp(run_dir)
        tmp.mkdir(parents=True)
    ds_engine.barrier()
    try:
        engine.save_checkpoint(str(tmp), tag=DS_TAG, save_latest=False)
        weights = ds_engine.trainable_state_dict(engine)
        (tmp / rng_file(rank)).write_text(json.dumps(_rng_state()))
        if data_position is not None:
            (tmp / data_file(rank)).write_text(json.dumps(data_position))
        ds_engine.barrier()
        if rank == 0:
            prefix = "temporal_head." if meta.get("mode") == "frozen" else ""
            tensors = {prefix + k: v.contiguous() for k, v in weights.items()}
            tensors.update(
                {k: v.detach().float().cpu().contiguous() for k, v in (extra_weights or {}).items()}
            )
            save_file(tensors, str(tmp / WEIGHTS_FILE))
            (tmp / META_FILE).write_text(json.dumps({**meta, "step": step}, indent=2, default=str))
            write_manifest(tmp)
            commit(tmp, final)
            _prune(root, keep)
    except (OSError, RuntimeError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _save_error(final, exc) from exc
    ds_engine.barrier()
    return final


_DISK_FULL_SIGNS = ("No space left", "file write failed", "unexpected pos", "inline_container")
"""What a full disk looks like inside torch's zip writer, which raises RuntimeError without
an errno (`[enforce fail at inline_container.cc:...] . PytorchStreamWriter failed writing file
data/0: file write failed`)."""


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def _save_error(final: Path, exc: BaseException) -> CheckpointSaveError:
    folder = final.parent
    free = _free_bytes(folder)
    room = "unknown" if free is None else f"{free / 2**20:.1f} MiB"
    full = getattr(exc, "errno", None) == errno.ENOSPC or any(
        sign in str(exc) for sign in _DISK_FULL_SIGNS
    )
    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    why = "the disk is full" if full else "the write failed"
    return CheckpointSaveError(
        f"saving checkpoint {final.name} into {folder} failed: {why} ({room} free there; "
        f"{type(exc).__name__}: {cause}). The partial save was removed; free space or point "
        "out_dir at a larger disk, then rerun with resume=auto"
    )


def remove_stale_tmp(run_dir: Path) -> list[Path]:
    """Delete `checkpoints/step_*.tmp` folders of killed saves (rank 0, outside a save)."""
    stale = stale_tmp_dirs(run_dir / "checkpoints")
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
        log.info("removed %s (a checkpoint save that never finished)", folder)
    return stale


def resume_checkpoint(engine: Any, path: Path, rank: int) -> int:
    """Restore engine state and this rank's RNG from a checkpoint; returns its step.

    Every file is checked against `sha256.json` first; nothing read can execute code.
    """
    path = find_checkpoint(path)
    verify_manifest(path)
    meta_file = path / META_FILE
    try:
        step = int(json.loads(meta_file.read_text())["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{meta_file}: no valid step ({type(exc).__name__}: {exc})") from None
    ds_engine.load_engine_state(engine, path, tag=DS_TAG)
    rng_path = path / rng_file(rank)
    if rng_path.is_file():
        _set_rng_state(rng_path)
    else:
        log.warning("%s is missing (saved with fewer ranks?): RNG not restored", rng_path)
    return step


def read_data_position(path: Path, rank: int) -> dict[str, Any] | None:
    """This rank's training-stream position in a checkpoint, or None when it holds none
    (saved by an older version, or by fewer ranks). The file is checked against `sha256.json`."""
    path = find_checkpoint(path)
    name = data_file(rank)
    if not (path / name).is_file():
        return None
    verify_manifest(path, only=(name,))
    try:
        position = json.loads((path / name).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path / name}: invalid JSON ({exc})") from None
    if not isinstance(position, dict):
        raise CheckpointError(f"{path / name}: expected a JSON object")
    return position


RESUME_MAY_CHANGE = (
    "out_dir",
    "resume",
    "train.steps",
    "train.log_every",
    "train.eval_every",
    "train.eval_max_videos",
    "train.ckpt_every",
    "train.keep_checkpoints",
    "train.precise_bn_batches",
    "train.progress",
    "data.root",
    "data.synthetic",
    "data.synth_clips",
    "data.synth_size",
    "data.workers",
    "data.dali_threads",
    "data.dali_pipelines",
    "data.prefetch",
    "data.decoder",
    "data.val_split",
    "data.eval_clips",
    "data.eval_crops",
    "data.eval_batch_size",
    "tracking.",
)
"""Config keys (or `prefix.`es) a resumed run may change: where things are, how long to train,
how often to log, evaluate and save, how data is decoded (the same batches either way), and
tracking. Any other difference (model, data sampling,
optimiser, precision, seed, batch) makes a different experiment, so the resume is refused."""


def resume_target(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint `resume` (`auto`, a path, or None) points at, or None for a fresh start."""
    if resume is None:
        return None
    if resume == "auto":
        return latest_checkpoint(run_dir)
    return find_checkpoint(resume)


def _may_change(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUME_MAY_CHANGE)


def check_resume_config(config: dict[str, Any], ckpt: Path | None) -> None:
    """Raise `ConfigError` when `config` differs from the one `ckpt` was trained with in a key
    outside `RESUME_MAY_CHANGE` (call before anything is written to the run directory)."""
    if ckpt is None:
        return
    saved = read_meta(ckpt).get("config")
    if not isinstance(saved, dict):
        return  # a checkpoint saved without its config: nothing to compare
    old = flatten(json.loads(json.dumps(saved, default=str)))
    new = flatten(json.loads(json.dumps(config, default=str)))
    missing = object()
    changed = [
        f"{key} {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}"
        for key in sorted(set(old) | set(new))
        if not _may_change(key) and old.get(key, missing) != new.get(key, missing)
    ]
    if changed:
        raise ConfigError(
            f"resume from {ckpt} refused: the config differs from the one it was trained with: "
            f"{', '.join(changed)}. Keep those values to continue this run, or start another "
            "(a new out_dir, or resume=none to start over here)"
        )


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Newest complete checkpoint of a run, or None (a `.tmp` folder is never complete)."""
    try:
        return find_checkpoint(run_dir / "checkpoints")
    except FileNotFoundError:
        return None


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob(f"{STEP_PREFIX}*") if not p.name.endswith(TMP_SUFFIX))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as plain JSON: no pickle anywhere."""
    version, mt, gauss = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(mt), "gauss_next": gauss},
        "numpy": {
            "name": name,
            "key": key.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state().tolist()
    return state


def _set_rng_state(path: Path) -> None:
    try:
        state = json.loads(path.read_text())
        py, npy = state["python"], state["numpy"]
        gauss = py["gauss_next"]
        random.setstate(
            (
                int(py["version"]),
                tuple(int(x) for x in py["state"]),
                None if gauss is None else float(gauss),
            )
        )
        np.random.set_state(
            (
                str(npy["name"]),
                np.asarray(npy["key"], dtype=np.uint32),
                int(npy["pos"]),
                int(npy["has_gauss"]),
                float(npy["cached_gaussian"]),
            )
        )
        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8))
    except (
        json.JSONDecodeError,
        UnicodeDecodeError,
        KeyError,
        TypeError,
        ValueError,
        RuntimeError,
    ) as exc:
        raise CheckpointError(
            f"{path}: not a valid RNG state ({type(exc).__name__}: {exc})"
        ) from None
