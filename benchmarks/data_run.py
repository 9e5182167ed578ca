"""`vivit bench data`: clips/s the input pipeline delivers vs what the method's step consumes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.runner import run_spec
from benchmarks.specs import BenchSpec


def ensure_shards(root: str | None, out_dir: Path, frames: int, size: int, clips: int) -> str:
    """`root` if given, else synthetic shards built once under the results directory."""
    if root is not None:
        return root
    target = out_dir / "synthetic-shards"
    if not (target / "manifest.json").is_file():
        from data.synthetic import make_synthetic

        make_synthetic(target, clips=clips, val_clips=max(4, clips // 8), frames=frames, size=size)
    return str(target)


def run_data(
    method: BenchSpec,
    *,
    root: str | None,
    out_dir: Path,
    seconds: float,
    workers: int,
    synth_clips: int,
    dali_pipelines: tuple[int, ...] = (1,),
    timeout_s: float,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Pipeline throughput at the method's T, size and micro-batch, and the method's own clips/s."""
    from benchmarks.data_bench import measure_data_throughput

    size = method.backbone.img_size
    shards = ensure_shards(root, out_dir, max(method.frames, 16), size, synth_clips)
    log(f"measuring the input pipeline on {shards} for {seconds:.0f} s per decoder")
    result = measure_data_throughput(
        shards, method.frames, size, method.micro_batch, seconds, workers, dali_pipelines
    )
    log(f"pipeline: {result}")
    step = run_spec(method, timeout_s=timeout_s)
    section: dict[str, Any] = {"shards": shards, "result": result, "method_step": step}
    delivered = result.get("dali_clips_per_s")
    if step["status"] == "ok" and delivered:
        section["method_clips_per_s"] = step["clips_per_s"]
        section["consumption_ratio"] = delivered / step["clips_per_s"]
        section["where"] = (
            f"{method.name}: pipeline {delivered:.2f} clips/s ({result.get('dali_decoder')}) "
            f"vs step {step['clips_per_s']:.2f} clips/s"
        )
    return section
