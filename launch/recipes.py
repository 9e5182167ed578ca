"""The demo's and the ablation's arms: one budget, turned into `vivit train` override lists.

Everything both commands share lives here: the built-in task size, the pretraining of the
tiny spatial ViT, the step budgets, and how each arm (full fine-tuning, naive freezing, the
spatial-only floor, the two-stage method, the ablation grid) differs from the common base.
An arm is one or more stages; each stage is exactly one `vivit train` process, evaluated at
`eval_points` points of its training with the same multi-view protocol.

The recipe (README, "The two-stage recipe") is written as ratios so it carries to other
data: stage 1 trains everything at T/4 frames on T/T1 = 4x the clips per step (the same frames
per step as a T-frame step, as multigrid training does), at sqrt(4) = 2x the peak learning
rate, for 1.5x the clips the full baseline sees at T; stage 2 runs 2/3 of full's steps at T.
Every run warms up for 10% of its steps; the backbone trains at 0.1x of the peak.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SPATIAL_MODEL = "vit_tiny_patch16_224"
SPATIAL_KWARGS = {"depth": 4, "embed_dim": 96, "num_heads": 3}


@dataclass(frozen=True)
class Budget:
    """Sizes, step budgets and the recipe of one demo scale (default or --quick)."""

    name: str
    clips: int
    """Training clips of the synthetic set."""
    val_clips: int
    """Validation clips: >= 1000, so one standard error of a top-1 is <= 1.6 points."""
    images: int
    """Still images per split for pretraining the spatial ViT."""
    video_frames: int
    """Frames stored per clip; the model samples `frames` of them uniformly."""
    size: int
    patch: int
    """Spatial ViT patch size (8: 16 patch tokens per 32 px frame, the adapter's regions)."""
    pretrain_steps: int
    pretrain_batch: int
    frames: int
    """T: frames of the full, naive, spatial-only and stage-2 runs."""
    stage1_frames: int
    """Stage 1 (full fine-tuning on short clips): T/4, as the paper's 8 -> 32."""
    full_steps: int
    """Steps of full fine-tuning, naive freezing and the spatial-only baseline."""
    stage1_steps: int
    """Steps of stage 1, each of `stage1_batch` clips."""
    stage2_steps: int
    eval_points: int = 4
    """Evaluations per run (evenly spaced, the last at the end): the points of the curves."""
    batch: int = 16
    lr: float = 1e-3
    """Peak learning rate of adapter + temporal + head (every run)."""
    spatial_lr_mult: float = 0.1
    """Backbone learning rate multiplier of every full-mode run (baseline and stage 1)."""
    warmup_frac: float = 0.1
    """Linear warm-up as a fraction of each run's steps."""
    temporal_depth: int = 2
    pretrain_lr: float = 2e-3
    eval_batch: int = 64
    eval_clips: int = 2
    """Temporal views per validation video (centre crop), the same for every arm and point."""
    cache_views: int = 1
    """Views per clip the cached arm stores (`vivit cache build --views`): stage 2 runs about
    one pass over the set, where on-the-fly augmentation also draws about one view per clip;
    more views pay only when stage 2 runs more passes."""

    def __post_init__(self) -> None:
        if self.stage1_frames * 4 < self.frames:
            raise ValueError(f"{self.name}: stage1_frames must be >= frames/4")
        if self.frames % self.stage1_frames:
            raise ValueError(f"{self.name}: frames must be a multiple of stage1_frames")
        if self.frames > self.video_frames:
            raise ValueError(f"{self.name}: frames must be <= video_frames")
        if self.eval_points < 1:
            raise ValueError(f"{self.name}: eval_points must be >= 1")

    @property
    def stage1_batch(self) -> int:
        """Stage 1's clips per step: B x T/T1, so a step holds as many frames as a T-frame step
        (its per-step costs that do not scale with frames — optimiser, ZeRO, Python, a
        kernel launch per op — are paid once per T frames, and on a GPU the freed memory holds
        the larger batch)."""
        return self.batch * self.frames // self.stage1_frames

    @property
    def stage1_lr(self) -> float:
        """Stage 1's peak learning rate: `lr` x sqrt(T/T1), square-root scaling for the larger
        batch (measured on the built-in task, README: linear 4x scaling ended lower)."""
        return self.lr * math.sqrt(self.frames / self.stage1_frames)

    def warmup(self, steps: int) -> int:
        return max(1, round(self.warmup_frac * steps))

    def eval_every(self, steps: int) -> int:
        """Evaluate every `steps / eval_points` steps (the trainer adds the final one)."""
        return max(1, -(-steps // self.eval_points))


# Measured on this task (README, "The two-stage recipe"): stage 1 at T/4 is still improving
# after 1.5x the clips full fine-tuning sees (450 steps of 16: 35.9%; the same clips in 112
# steps of 64 at 2x the lr: 34.6%, in half the time); stage 2 from it gains up to ~2/3 of
# full's steps (seed 0: 35.7% at 100, 37.9% at 200).
DEFAULT = Budget(
    name="default",
    clips=3000,
    val_clips=1000,
    images=4000,
    video_frames=16,
    size=32,
    patch=8,
    pretrain_steps=500,
    pretrain_batch=128,
    frames=8,
    stage1_frames=2,
    full_steps=300,
    stage1_steps=112,
    stage2_steps=200,
    eval_points=3,
)

QUICK = Budget(
    name="quick",
    clips=256,
    val_clips=128,
    images=256,
    video_frames=8,
    size=32,
    patch=8,
    pretrain_steps=30,
    pretrain_batch=64,
    frames=8,
    stage1_frames=2,
    full_steps=16,
    stage1_steps=4,
    stage2_steps=8,
    eval_points=2,
    batch=16,
)


def budget_for(quick: bool) -> Budget:
    return QUICK if quick else DEFAULT


@dataclass
class Stage:
    """One `vivit train` process: its run-directory name, config overrides and step count.

    `kind="cache"`: a `vivit cache build` process instead (its `steps` are the clip views it
    encodes, `args` its own options); its time counts in the arm's cost like a training stage.
    """

    run: str
    overrides: list[str]
    steps: int
    mode: str
    frames: int
    kind: str = "train"
    args: list[str] = field(default_factory=list)


@dataclass
class Arm:
    """A row of the results table: one or more stages run in order (costs add up)."""

    name: str
    label: str
    stages: list[Stage] = field(default_factory=list)


def cache_key(budget: Budget, seed: int) -> str:
    """Hash of everything that shapes the shards and the pretrained weights."""
    relevant = {
        "clips": budget.clips,
        "val_clips": budget.val_clips,
        "images": budget.images,
        "video_frames": budget.video_frames,
        "size": budget.size,
        "patch": budget.patch,
        "pretrain_steps": budget.pretrain_steps,
        "pretrain_batch": budget.pretrain_batch,
        "pretrain_lr": budget.pretrain_lr,
        "model": SPATIAL_MODEL,
        "model_kwargs": SPATIAL_KWARGS,
        "seed": seed,
        "version": 3,
    }
    blob = json.dumps(relevant, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def base_overrides(
    budget: Budget, data_root: Path, weights: Path, seed: int, tracking_uri: str, experiment: str
) -> list[str]:
    """What every run shares: data, spatial model, optimiser, eval protocol, MLflow store."""
    return [
        f"seed={seed}",
        "resume=none",
        f"spatial.model={SPATIAL_MODEL}",
        f"spatial.img_size={budget.size}",
        f"spatial.patch_size={budget.patch}",
        f"spatial.model_kwargs={json.dumps(SPATIAL_KWARGS)}",
        f"spatial.weights={weights}",
        f"temporal.depth={budget.temporal_depth}",
        "temporal.pos_init=sincos",
        f"data.root={data_root}",
        "data.synthetic=false",
        "data.workers=1",
        f"data.eval_clips={budget.eval_clips}",
        "data.eval_crops=1",
        f"data.eval_batch_size={budget.eval_batch}",
        f"optim.lr={budget.lr}",
        f"optim.spatial_lr_mult={budget.spatial_lr_mult}",
        f"train.micro_batch_size={budget.batch}",
        "train.log_every=5",
        "train.progress=false",
        "tracking.enabled=true",
        f"tracking.uri={tracking_uri}",
        f"tracking.experiment={experiment}",
    ]


def _schedule(budget: Budget, steps: int) -> list[str]:
    return [
        f"train.steps={steps}",
        f"optim.warmup_steps={budget.warmup(steps)}",
        f"train.eval_every={budget.eval_every(steps)}",
    ]


def _full(budget: Budget, run: str, frames: int, steps: int, kind: str = "transformer") -> Stage:
    overrides = ["mode=full", "adapter.kind=none", "temporal.init=random"]
    overrides += [f"temporal.kind={kind}", f"data.frames={frames}", *_schedule(budget, steps)]
    return Stage(run, overrides, steps, "full", frames)


def _frozen(budget: Budget, run: str, adapter: str, init: str, steps: int) -> Stage:
    overrides = [
        "mode=frozen",
        f"adapter.kind={adapter}",
        f"adapter.heads={SPATIAL_KWARGS['num_heads']}",
        f"temporal.init={init}",
        f"data.frames={budget.frames}",
        *_schedule(budget, steps),
    ]
    return Stage(run, overrides, steps, "frozen", budget.frames)


def stage1(budget: Budget) -> Stage:
    """Full fine-tuning on T/4-frame clips, T/T1 times the clips per step (the backbone at its
    lower lr)."""
    stage = _full(budget, "two-stage-s1", budget.stage1_frames, budget.stage1_steps)
    stage.overrides += [
        f"train.micro_batch_size={budget.stage1_batch}",
        f"optim.lr={budget.stage1_lr:g}",
    ]
    return stage


def stage2(
    budget: Budget, runs_dir: Path, adapter: str = "attn", name: str = "two-stage-s2"
) -> Stage:
    """Frozen spatial + adapter, spatial and temporal initialised from stage 1, at T frames."""
    stage = _frozen(budget, name, adapter, "checkpoint", budget.stage2_steps)
    stage.overrides += [
        f"temporal.checkpoint={runs_dir / 'two-stage-s1'}",
        "temporal.load_spatial=true",
    ]
    return stage


def cache_stage(budget: Budget, runs_dir: Path) -> Stage:
    """Stage 1's frozen spatial over the training set, `cache_views` views per clip, stored
    (`vivit cache build` with stage 2's config, so the cache pins stage 1's weights)."""
    overrides = stage2(budget, runs_dir).overrides
    args = ["--views", str(budget.cache_views), "--batch", str(budget.batch), "--no-progress"]
    steps = budget.clips * budget.cache_views
    return Stage("two-stage-cache", overrides, steps, "cache", budget.frames, "cache", args)


def stage2_cached(budget: Budget, runs_dir: Path) -> Stage:
    """Stage 2 trained from the cached tokens: the same run as `stage2`, no decoding and no
    spatial forward per step (evaluation still decodes videos)."""
    stage = stage2(budget, runs_dir, name="two-stage-s2-cached")
    stage.overrides.append(f"data.cache={runs_dir / 'two-stage-cache'}")
    return stage


ARMS = ("full", "frozen-naive", "spatial-only", "two-stage", "two-stage-cached")


def demo_arms(budget: Budget, runs_dir: Path) -> list[Arm]:
    """Full fine-tuning, naive freezing, the spatial-only floor and the two-stage method."""
    t, t1 = budget.frames, budget.stage1_frames
    return [
        Arm(
            "full",
            f"full fine-tuning (T={t})",
            [_full(budget, "full", t, budget.full_steps)],
        ),
        Arm(
            "frozen-naive",
            f"frozen spatial, no adapter, random temporal (T={t})",
            [_frozen(budget, "frozen-naive", "none", "random", budget.full_steps)],
        ),
        Arm(
            "spatial-only",
            f"spatial-only: full fine-tuning, mean over frames (T={t})",
            [_full(budget, "spatial-only", t, budget.full_steps, kind="mean")],
        ),
        Arm(
            "two-stage",
            f"two-stage: full T={t1}, then frozen + attn adapter T={t}",
            [stage1(budget), stage2(budget, runs_dir)],
        ),
        Arm(
            "two-stage-cached",
            f"two-stage, stage 2 from cached spatial tokens ({budget.cache_views} view(s) per "
            "clip; the cache build counts in the cost)",
            [stage1(budget), cache_stage(budget, runs_dir), stage2_cached(budget, runs_dir)],
        ),
    ]


ADAPTERS = ("none", "mlp", "attn")
INITS = ("random", "image", "stage-1")


def ablation_arms(budget: Budget, runs_dir: Path) -> list[Arm]:
    """adapter x temporal init, all frozen at T frames with the stage-2 step budget.

    The `stage-1` column also takes its spatial weights from stage 1 (the recipe); stage 1
    runs once and its time is added to each of that column's rows.
    """
    arms = []
    shared_stage1 = stage1(budget)
    for init in INITS:
        for adapter in ADAPTERS:
            name = f"{adapter}/{init}"
            run = f"abl-{adapter}-{init}"
            if init == "stage-1":
                stages = [shared_stage1, stage2(budget, runs_dir, adapter, name=run)]
            else:
                stages = [_frozen(budget, run, adapter, init, budget.stage2_steps)]
            arms.append(Arm(name, f"adapter {adapter}, temporal init {init}", stages))
    return arms


def describe(budget: Budget) -> dict[str, Any]:
    return asdict(budget) | {"spatial_model": SPATIAL_MODEL, "spatial_kwargs": SPATIAL_KWARGS}
