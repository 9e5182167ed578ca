"""`vivit bench decode`: what a clip costs to decode, by video length and frames per clip.

A clip's frames are spread over its video, so a decoder that starts from the first frame pays
for the whole video, and one that jumps to the key frame before each frame pays for about
T half-GOPs. Both kinds run in one process on the same synthetic videos: DALI (`cpu`, or
`mixed` = NVDEC on a GPU), PyAV jumping to key frames (`data.pyav_decode`), PyAV from the
first frame, and DALI on the videos cut to the key-frame groups the clip needs
(`data.gop_trim`, the cut's time included). The `one frame` rows ask for the first and for the
last frame of each video: a decoder that seeks costs about the same for both
(`late_over_early` near 1).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from data.dali_decode import DaliClipDecoder, dali_available
from data.gop_trim import views_for_decoder
from data.pyav_decode import decode_views
from data.sampling import train_indices
from data.synthetic import load_objects, synth_clip
from data.transcode import encode_frames


@dataclass(frozen=True)
class DecodeGrid:
    lengths: tuple[int, ...]  # frames per video
    frames: tuple[int, ...]  # frames per clip (uniform sampling)
    size: int  # side of the square source videos
    out_size: int  # side of the decoded, resized clip
    codec: str
    gop: int
    clips: int  # clips per timed batch
    videos: int  # distinct videos per length, cycled through the batch
    repeats: int  # timed batches per figure (median)
    seed: int = 0


def quick_grid() -> DecodeGrid:
    return DecodeGrid((16, 128), (2, 8), 64, 32, "vp9", 8, 8, 4, 3)


def default_grid(on_gpu: bool) -> DecodeGrid:
    if on_gpu:  # NVDEC: H.264 at a training short side
        return DecodeGrid((16, 128, 300), (8, 32), 256, 224, "h264", 8, 8, 2, 3)
    return DecodeGrid((16, 64, 128, 300), (2, 8), 128, 32, "vp9", 8, 16, 4, 3)


def _videos(grid: DecodeGrid, length: int) -> list[bytes]:
    objects = load_objects(None)[1]
    return [
        encode_frames(
            synth_clip(grid.seed, "bench-decode", i, length, grid.size, objects)[2],
            fps=25,
            codec=grid.codec,
            gop=grid.gop,
        )
        for i in range(grid.videos)
    ]


def _median_s(run: Callable[[], Any], repeats: int) -> float:
    run()  # warm-up: pipeline build, first allocations
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


Item = tuple[bytes, np.ndarray, tuple[float, float, float, float]]


def _per_clip_ms(
    items: list[Item], dali: DaliClipDecoder | None, size: int, repeats: int, codec: str
) -> dict[str, float | None]:
    def pyav(seek: bool) -> Callable[[], Any]:
        return lambda: [decode_views(d, [(idx, box)], size, seek=seek) for d, idx, box in items]

    n = len(items)
    out: dict[str, float | None] = {
        "pyav_seek_ms": _median_s(pyav(True), repeats) / n * 1e3,
        "pyav_from_start_ms": _median_s(pyav(False), repeats) / n * 1e3,
        "dali_ms": None,
        "dali_cut_ms": None,
    }
    if dali is not None:
        out["dali_ms"] = _median_s(lambda: _settled(dali.decode(items)), repeats) / n * 1e3

        def cut_then_decode() -> None:  # the cut runs in the loader's workers: counted here
            cut = [views_for_decoder(d, [(idx, box)], codec, True) for d, idx, box in items]
            _settled(dali.decode([(d, idx, box) for d, [(idx, box)] in cut]))

        out["dali_cut_ms"] = _median_s(cut_then_decode, repeats) / n * 1e3
    return out


def _settled(result: tuple[torch.Tensor | None, list[int]]) -> None:
    """Wait for the GPU copy of DALI's output, so the time is the whole decode."""
    clips, _ = result
    if clips is not None and clips.is_cuda:
        torch.cuda.synchronize(clips.device)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def run_decode(
    grid: DecodeGrid, device: torch.device, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Rows of ms per clip for each decoder; ratios against PyAV with jumps."""
    use_dali = dali_available()
    box = (0.0, 0.0, 1.0, 1.0)
    rows, ends = [], []
    for length in grid.lengths:
        videos = _videos(grid, length)
        dali = (
            DaliClipDecoder(max_batch=grid.clips, size=grid.out_size, device=device, num_threads=1)
            if use_dali
            else None
        )
        for t in grid.frames:
            rng = np.random.default_rng([grid.seed, length, t])
            items = [
                (videos[i % len(videos)], train_indices(length, t, "uniform", 1, rng), box)
                for i in range(grid.clips)
            ]
            row = {
                "length": length,
                "frames": t,
                **_per_clip_ms(items, dali, grid.out_size, grid.repeats, grid.codec),
            }
            row["from_start_over_seek"] = _ratio(row["pyav_from_start_ms"], row["pyav_seek_ms"])
            row["dali_over_pyav_seek"] = _ratio(row["dali_ms"], row["pyav_seek_ms"])
            row["dali_over_dali_cut"] = _ratio(row["dali_ms"], row["dali_cut_ms"])
            rows.append(row)
            log(
                f"  {length} frames, T={t}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in row.items() if isinstance(v, float))
            )
        one = {}
        for where, frame in (("early", 0), ("late", length - 1)):
            items = [(v, np.array([frame]), box) for v in videos]
            one[where] = _per_clip_ms(items, dali, grid.out_size, grid.repeats, grid.codec)
        end = {
            "length": length,
            "dali_early_ms": one["early"]["dali_ms"],
            "dali_late_ms": one["late"]["dali_ms"],
            "dali_cut_late_ms": one["late"]["dali_cut_ms"],
            "pyav_seek_early_ms": one["early"]["pyav_seek_ms"],
            "pyav_seek_late_ms": one["late"]["pyav_seek_ms"],
        }
        end["dali_late_over_early"] = _ratio(end["dali_late_ms"], end["dali_early_ms"])
        end["pyav_seek_late_over_early"] = _ratio(
            end["pyav_seek_late_ms"], end["pyav_seek_early_ms"]
        )
        ends.append(end)
        if dali is not None:
            dali.close()
    return {
        "grid": asdict(grid),
        "dali": None if not use_dali else ("dali-mixed" if device.type == "cuda" else "dali-cpu"),
        "rows": rows,
        "one_frame": ends,
        "note": (
            "ms per clip, median of timed batches; PyAV's FFmpeg picks its own thread count, "
            "DALI runs one thread. Source videos: the synthetic action scenes, "
            f"{grid.size}x{grid.size}, {grid.codec}, a key frame every {grid.gop} frames."
        ),
    }
