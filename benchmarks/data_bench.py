"""Input-pipeline throughput: DALI decoding vs a PyTorch DataLoader decoding with PyAV.

Both read the same shards at the same T and size through the same streaming code, so the
difference is the decoder: DALI (batched, C++ thread pool; `mixed` on a GPU) against PyAV
in DataLoader worker processes, one per core. DALI once more on whole videos
(`data.gop_trim=false`) shows what cutting them to the clip's key-frame groups buys, and twice
at the two-stage recipe's stage-1 shape (T/4 frames, 4x the clips per batch): each clip from its
own video, and T/T1 clips per decoded video (`data.repeat_aug`) - whether stage 1 waits for its
decoder where it asks for 4x the clips (NVDEC on a GPU).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import torch

from data.config import DataConfig
from data.loader import open_train_batches


def _clips_per_s(
    cfg: DataConfig, frames: int, size: int, batch_size: int, seconds: float, device: torch.device
) -> tuple[float, str, dict]:
    src = open_train_batches(
        cfg,
        batch_size=batch_size,
        img_size=size,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        rank=0,
        world_size=1,
        seed=0,
        device=device,
        dtype=torch.float32,
    )
    it = src.batches(0)
    for _ in range(3):  # warm-up: worker start, pipeline build, first shards
        next(it)
    clips, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, labels = next(it)
        clips += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - t0
    stats = src.stats()
    src.close()
    return clips / elapsed, src.decoder, stats


def measure_data_throughput(
    root: str,
    frames: int,
    size: int,
    batch_size: int,
    seconds: float,
    workers: int,
    dali_pipelines: Sequence[int] = (1,),
) -> dict:
    """Clips/s of the DALI path and the PyAV DataLoader path on the same shards, and the ratio.

    DALI is measured once per entry of `dali_pipelines` (`data.dali_pipelines`); the headline
    figures are the first entry's, `dali_clips_per_s_by_pipelines` holds them all.
    """
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    workers = workers or os.cpu_count() or 1
    common = {"root": root, "frames": frames, "workers": workers, "shuffle_buffer": 64}

    def measure(batch: int = batch_size, **data: Any) -> tuple[float, str, dict]:
        cfg = DataConfig(**{**common, **data})
        return _clips_per_s(cfg, cfg.frames, size, batch, seconds, device)

    by_pipelines: dict[str, float] = {}
    for n in dali_pipelines:
        rate, name, stats = measure(decoder="dali", dali_pipelines=n)
        by_pipelines[str(n)] = rate
        if len(by_pipelines) == 1:
            dali, dali_name, dali_stats = rate, name, stats
    # DALI on whole videos (data.gop_trim=false): what cutting them to key-frame groups buys
    whole, _, _ = measure(decoder="dali", gop_trim=False)
    pyav, _, pyav_stats = measure(decoder="pyav")
    # stage 1 of the recipe (launch/recipes.py): T1 = T/4 frames, B x T/T1 clips per batch
    t1 = max(1, frames // 4)
    k = frames // t1
    stage1, _, _ = measure(batch=batch_size * k, decoder="dali", frames=t1)
    repeated, _, _ = measure(batch=batch_size * k, decoder="dali", frames=t1, repeat_aug=k)
    return {
        "device": str(device),
        "dali_decoder": dali_name,
        "frames": frames,
        "size": size,
        "batch_size": batch_size,
        "workers": workers,
        "seconds": seconds,
        "dali_clips_per_s": dali,
        "pyav_clips_per_s": pyav,
        "dali_over_pyav": dali / pyav if pyav > 0 else float("inf"),
        "dali_data_wait_s": dali_stats["data_wait_total_s"],
        "dali_pipelines": int(dali_pipelines[0]),
        "dali_clips_per_s_by_pipelines": by_pipelines,
        "pyav_data_wait_s": pyav_stats["data_wait_total_s"],
        "dali_whole_videos_clips_per_s": whole,
        "dali_cut_over_whole": dali / whole if whole > 0 else float("inf"),
        "stage1_frames": t1,
        "stage1_batch_size": batch_size * k,
        "dali_stage1_clips_per_s": stage1,
        "dali_stage1_repeat_aug": k,
        "dali_stage1_repeat_clips_per_s": repeated,
        "stage1_repeat_over_plain": repeated / stage1 if stage1 > 0 else float("inf"),
    }
