"""Configuration of the video input pipeline (owned by `data/`, composed by `core.config`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal


@dataclass
class DataConfig:
    """Where clips come from and how they are sampled, decoded and augmented."""

    root: str | None = None
    """Shard directory holding `manifest.json` and `{split}-NNNNNN.tar`."""
    synthetic: bool = False
    """If `root` has no manifest, build the built-in synthetic action set there first."""
    synth_clips: int = 512
    """Training clips of the synthetic set built when `synthetic` is true (val gets a quarter)."""
    synth_size: int = 32
    """Frame size (px) of the synthetic set built when `synthetic` is true."""
    train_split: str = "train"
    """Split name (shard prefix in the manifest) trained on."""
    val_split: str = "val"
    """Split name evaluated on."""
    frames: int = 8
    """T: frames per clip fed to the model."""
    sampling: Literal["uniform", "stride"] = "uniform"
    """`uniform`: T frames spread over the whole clip; `stride`: T frames `stride` apart from a random start."""
    stride: int = 2
    """Source frames between sampled frames for `sampling: stride`."""
    decoder: Literal["auto", "dali", "pyav"] = "auto"
    """`auto`: DALI (mixed on GPU, cpu otherwise) where the codec allows, else PyAV."""
    workers: int | None = None
    """DataLoader worker processes reading shards (and decoding with PyAV where DALI cannot);
    None: one per core, at most 8."""
    dali_threads: int | None = None
    """DALI's CPU threads (crop/resize on CPU, bitstream handling on GPU); None: one per core,
    at most 4."""
    dali_pipelines: int = 1
    """DALI pipelines decoding shares of each batch at once, one thread each (on a GPU, one NVDEC
    session each); same batches, only decoded side by side. `vivit bench data --dali-pipelines
    1,2,4` measures what more buy on your machine."""
    gop_trim: bool = True
    """Hand DALI only the key-frame groups a clip needs, renumbered (`data/gop_trim.py`): DALI
    decodes from a video's first frame, so a long video costs its whole length per clip. Exact
    (same pixels); only for VP8/VP9 and B-frame-free H.264 with IDR key frames, and only where
    it saves at least 32 frames of decoding. false: hand over whole videos."""
    prefetch: int = 2
    """Batches decoded ahead of the training step by a background thread (0: decode in series
    with the step, the synchronous reference)."""
    loader_nice: int = 10
    """How much lower the CPU priority (Linux nice value) of the loader's threads and worker
    processes is than the training step's: where decoding shares cores with the step, the step
    keeps its core and decoding takes what is left (`data/priority.py`). 0: equal priority."""
    repeat_aug: int = 1
    """Training clips drawn from each decoded video (repeated sampling, MAE-ST's `repeat_aug`):
    each its own frames, crop and flip, so one decode feeds `repeat_aug` clips of a micro-batch,
    which must be a multiple of it. Decodes k times fewer videos but shows 1/k of the distinct
    videos per step (on the built-in task it cost stage 1 accuracy: README); for a step that
    waits for its decoder."""
    shuffle_buffer: int = 256
    """WebDataset shuffle buffer, in clips (bigger mixes shards better, costs memory)."""
    min_scale: float = 0.35
    """Lower bound of the random-resized-crop area fraction."""
    flip: Literal["auto", "always", "never"] = "auto"
    """`auto`: flip unless the manifest says the class set is direction-sensitive; `always`:
    flip, relabelling through the manifest's flip pairs (`vivit shards build --flip-pairs`)."""
    eval_clips: int = 2
    """Temporal views per video at evaluation."""
    eval_crops: Literal[1, 3] = 1
    """Spatial views per video at evaluation (1: centre, 3: left/centre/right)."""
    eval_batch_size: int = 8
    """Clips per forward at evaluation."""
    cache: str | None = None
    """Token cache directory (`vivit cache build`): train from the frozen spatial tokens stored
    there instead of decoding videos (mode=frozen only; evaluation still decodes videos)."""

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"data.frames must be >= 1, got {self.frames}")
        if self.stride < 1:
            raise ValueError(f"data.stride must be >= 1, got {self.stride}")
        if not 0.0 < self.min_scale <= 1.0:
            raise ValueError(f"data.min_scale must be in (0, 1], got {self.min_scale}")
        if self.eval_clips < 1:
            raise ValueError(f"data.eval_clips must be >= 1, got {self.eval_clips}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"data.workers must be >= 0 or null, got {self.workers}")
        if self.dali_threads is not None and self.dali_threads < 1:
            raise ValueError(f"data.dali_threads must be >= 1 or null, got {self.dali_threads}")
        if self.dali_pipelines < 1:
            raise ValueError(f"data.dali_pipelines must be >= 1, got {self.dali_pipelines}")
        if self.repeat_aug < 1:
            raise ValueError(f"data.repeat_aug must be >= 1, got {self.repeat_aug}")
        if self.prefetch < 0:
            raise ValueError(f"data.prefetch must be >= 0, got {self.prefetch}")
        if not 0 <= self.loader_nice <= 19:
            raise ValueError(f"data.loader_nice must be in [0, 19], got {self.loader_nice}")

    def resolved_workers(self) -> int:
        return self.workers if self.workers is not None else min(8, _cores())

    def resolved_dali_threads(self) -> int:
        return self.dali_threads or min(4, _cores())


def _cores() -> int:
    return max(1, len(os.sched_getaffinity(0)))
