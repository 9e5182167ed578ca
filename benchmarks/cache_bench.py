"""`vivit bench cache`: what caching the frozen spatial tokens buys stage 2 (issue 10).

Three measurements on the same shards, spatial weights and configuration: `vivit cache build`
(clips/s and bytes per clip, its own process as a user runs it), then the method's step fed
by the real loader from the videos and from the cache (each in its own worker process, as
`vivit bench train --data` does). The ratio of the two loader-inclusive step times is the
`cache_speedup` per epoch; the build's cost is stated in epochs of stage 2 from videos, and
so is the number of stage-2 epochs after which the cache has paid for itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.data_run import ensure_shards
from benchmarks.runner import child_env, run_spec
from benchmarks.specs import BenchSpec
from benchmarks.system import REPO


def write_random_weights(spec: BenchSpec, path: Path, seed: int = 0) -> Path:
    """A seeded random init of the spec's backbone as a safetensors file: a cache pins the
    sha256 of its spatial weights, so the bench needs a file (cost does not depend on values)."""
    import torch
    from safetensors.torch import save_file

    from core.config import load_config
    from core.spatial import SpatialTransformer

    cfg = load_config(None, spec.overrides())
    torch.manual_seed(seed)
    save_file(SpatialTransformer(cfg.spatial).vit.state_dict(), str(path))
    return path


def build_cache(
    spec: BenchSpec, out: Path, *, views: int, work: Path, timeout_s: float
) -> dict[str, Any]:
    """`vivit cache build` over the spec's training split, in its own process; its manifest's
    figures for that split (the process's start-up excluded, as in the manifest)."""
    from core.config import load_config
    from core.configtools import dump_yaml

    cfg = load_config(None, spec.overrides())
    config = work / "cache-config.yaml"
    dump_yaml(cfg, config)
    cmd = [sys.executable, "-m", "launch.cli", "cache", "build", str(config), "--out", str(out)]
    cmd += ["--views", str(views), "--batch", str(spec.micro_batch), "--no-progress"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            cwd=REPO,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        tail = (e.stderr or b"")[-2000:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return {"status": "error", "error": f"timed out after {timeout_s:g} s", "stderr_tail": tail}
    if proc.returncode != 0:
        return {
            "status": "error",
            "error": f"exit {proc.returncode}",
            "stderr_tail": proc.stderr[-2000:],
        }
    split = json.loads((out / "cache.json").read_text())["splits"]["train"]
    build = split["build"]
    return {
        "status": "ok",
        "process_s": time.perf_counter() - t0,
        "clips": split["clips"],
        "views": split["views"],
        "build_s": build["build_s"],
        "build_clips_per_s": split["clips"] * split["views"] / build["build_s"],
        "bytes_per_clip": split["bytes_per_clip"],
        "patch_tokens": cfg.spatial.patch_tokens,
        "pool_grid": cfg.spatial.pool_grid,
    }


def cache_figures(build: dict[str, Any], videos: dict[str, Any], cached: dict[str, Any]) -> dict:
    """Per-epoch ratios from the three measurements (loader-inclusive step times)."""
    clips, batch = build["clips"], videos["micro_batch"]
    step_v, step_c = videos["data_step_time_median_s"], cached["data_step_time_median_s"]
    epoch_v, epoch_c = clips / batch * step_v, clips / batch * step_c
    saved = epoch_v - epoch_c
    return {
        "epoch_s_videos": epoch_v,
        "epoch_s_cache": epoch_c,
        "cache_speedup": epoch_v / epoch_c,
        "build_epochs_equivalent": build["build_s"] / epoch_v,
        "break_even_epochs": build["build_s"] / saved if saved > 0 else None,
        "videos_clips_per_s": batch / step_v,
        "cache_clips_per_s": batch / step_c,
    }


def run_cache(
    method: BenchSpec,
    *,
    root: str | None,
    out_dir: Path,
    views: int,
    synth_clips: int,
    timeout_s: float,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build a cache for `method` (frozen + adapter) and time its step from videos and from the
    cache; the weights and the cache live in a temporary directory, removed afterwards."""
    size = method.backbone.img_size
    shards = ensure_shards(root, out_dir, max(method.frames, 16), size, synth_clips)
    with tempfile.TemporaryDirectory(prefix="vivit-bench-cache-") as tmp:
        work = Path(tmp)
        weights = write_random_weights(method, work / "spatial.safetensors")
        videos = method.with_(
            data_root=shards,
            extra_overrides=(*method.extra_overrides, f"spatial.weights={weights}"),
        )
        log(f"cache build: {videos.name}, {views} view(s) per clip of {shards}")
        build = build_cache(videos, work / "cache", views=views, work=work, timeout_s=timeout_s)
        section: dict[str, Any] = {"shards": shards, "views": views, "build": build}
        if build["status"] != "ok":
            log(f"cache build failed: {build['error']}\n{build['stderr_tail']}")
            return section
        log(
            f"  {build['build_clips_per_s']:.1f} clips/s, {build['bytes_per_clip'] / 1e3:.1f} kB/clip"
        )
        cached = videos.with_(
            extra_overrides=(*videos.extra_overrides, f"data.cache={work / 'cache'}")
        )
        section["videos"] = run_spec(videos, timeout_s=timeout_s)
        section["cache"] = run_spec(cached, timeout_s=timeout_s)
    rows = (section["videos"], section["cache"])
    if all(r["status"] == "ok" for r in rows):
        section.update(cache_figures(build, *rows))
        section["where"] = f"{method.name}, {views} view(s), {build['patch_tokens']} patch tokens"
        log(
            f"  step from videos {rows[0]['data_step_time_median_s'] * 1e3:.1f} ms, from the cache "
            f"{rows[1]['data_step_time_median_s'] * 1e3:.1f} ms: cache_speedup "
            f"{section['cache_speedup']:.2f}x; the build costs "
            f"{section['build_epochs_equivalent']:.2f} epochs from videos"
        )
    else:
        for name, row in zip(("videos", "cache"), rows, strict=True):
            if row["status"] != "ok":
                log(f"  {name} row: {row['status']} {row.get('error', '')}")
    return section
