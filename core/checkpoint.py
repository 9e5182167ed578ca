"""Checkpoints that are never half written: DeepSpeed state + trainable weights + meta.

Layout of `<run>/checkpoints/step_0000100/`:
  ds/…                 DeepSpeed engine state (optimizer, scheduler, per-rank ZeRO shards) for resume
  model.safetensors    fp32 weights of the trained parts, ViViTFE key names (frozen mode:
                       `temporal_head.*` only — the frozen spatial weights are referenced, not copied)
  rng_rank{R}.pt       each rank's RNG states, so a resumed run continues bit-for-bit
  meta.json            step, mode, spatial weights path + sha256, config; written last
Everything is written into `.step_0000100.tmp/` (common.atomic) and renamed once complete, so a crash mid-save
leaves only a `.tmp` folder that `resume=auto` ignores.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from common.atomic import commit, temporary_name
from core import engine as ds_engine
from core.init import find_checkpoint

STEP_PREFIX = "step_"


def checkpoint_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:07d}"


def save_checkpoint(
    engine: Any, run_dir: Path, step: int, meta: dict[str, Any], rank: int, keep: int
) -> Path:
    """Save on all ranks (collective); rank 0 renames the finished folder into place."""
    root = run_dir / "checkpoints"
    final = root / checkpoint_name(step)
    tmp = temporary_name(final, unique=False)  # one folder that every rank writes into
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    ds_engine.barrier()
    engine.save_checkpoint(str(tmp), tag="ds", save_latest=False)
    weights = ds_engine.trainable_state_dict(engine)
    torch.save(_rng_state(), tmp / f"rng_rank{rank}.pt")
    ds_engine.barrier()
    if rank == 0:
        prefix = "temporal_head." if meta.get("mode") == "frozen" else ""
        save_file(
            {prefix + k: v.contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors")
        )
        (tmp / "meta.json").write_text(json.dumps({**meta, "step": step}, indent=2, default=str))
        commit(tmp, final)
        _prune(root, keep)
    ds_engine.barrier()
    return final


def resume_checkpoint(engine: Any, path: Path, rank: int) -> int:
    """Restore engine state and this rank's RNG from a checkpoint; returns its step."""
    path = find_checkpoint(path)
    meta = json.loads((path / "meta.json").read_text())
    load_path, _ = engine.load_checkpoint(str(path), tag="ds")
    if load_path is None:
        raise FileNotFoundError(f"checkpoint {path}: no DeepSpeed state under {path / 'ds'}")
    rng_file = path / f"rng_rank{rank}.pt"
    if rng_file.is_file():
        _set_rng_state(torch.load(rng_file, weights_only=False))
    return int(meta["step"])


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


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
