"""Checkpoints that are never half written: DeepSpeed state + trainable weights + meta.

Layout of `<run>/checkpoints/step_0000100/`:
  ds/…                 DeepSpeed engine state (optimizer, scheduler, per-rank ZeRO shards) for resume
  model.safetensors    fp32 weights of the trained parts, ViViTFE key names (frozen mode:
                       `temporal_head.*` only — the frozen spatial weights are referenced, not copied)
  rng_rank{R}.json     each rank's RNG states (plain JSON), so a resumed run continues bit-for-bit
  meta.json            step, mode, spatial weights path + sha256, config, class names (+ the
                       clip fps / duration cap of the training shards), for `vivit predict`
  sha256.json          digest of every file above (`core.ckpt_manifest`); written last
Everything is written into `step_0000100.tmp/` and renamed once complete, so a crash mid-save
leaves only a `.tmp` folder that `resume=auto` ignores.

Loading never executes code from the checkpoint: resume first checks every file against
`sha256.json`, then reads JSON, and DeepSpeed's torch files with `weights_only=True`.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from core import engine as ds_engine
from core.ckpt_manifest import CheckpointError, verify_manifest, write_manifest
from core.init import META_FILE, STEP_PREFIX, WEIGHTS_FILE, find_checkpoint

log = logging.getLogger(__name__)


def checkpoint_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:07d}"


def save_checkpoint(
    engine: Any, run_dir: Path, step: int, meta: dict[str, Any], rank: int, keep: int
) -> Path:
    """Save on all ranks (collective); rank 0 renames the finished folder into place."""
    root = run_dir / "checkpoints"
    final = root / checkpoint_name(step)
    tmp = root / (final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    ds_engine.barrier()
    engine.save_checkpoint(str(tmp), tag="ds", save_latest=False)
    weights = ds_engine.trainable_state_dict(engine)
    (tmp / _rng_file(rank)).write_text(json.dumps(_rng_state()))
    ds_engine.barrier()
    if rank == 0:
        prefix = "temporal_head." if meta.get("mode") == "frozen" else ""
        save_file({prefix + k: v.contiguous() for k, v in weights.items()}, str(tmp / WEIGHTS_FILE))
        (tmp / META_FILE).write_text(json.dumps({**meta, "step": step}, indent=2, default=str))
        write_manifest(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        _prune(root, keep)
    ds_engine.barrier()
    return final


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
    ds_engine.load_engine_state(engine, path, tag="ds")
    rng_file = path / _rng_file(rank)
    if rng_file.is_file():
        _set_rng_state(rng_file)
    else:
        log.warning("%s is missing (saved with fewer ranks?): RNG not restored", rng_file)
    return step


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Newest complete checkpoint of a run, or None (a `.tmp` folder is never complete)."""
    try:
        return find_checkpoint(run_dir / "checkpoints")
    except FileNotFoundError:
        return None


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob(f"{STEP_PREFIX}*") if not p.name.endswith(".tmp"))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _rng_file(rank: int) -> str:
    return f"rng_rank{rank}.json"


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
