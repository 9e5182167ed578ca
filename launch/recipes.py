"""The demo's and the ablation's arms: one budget, turned into `vivit train` override lists.

Everything both commands share lives here: the built-in task size, the pretraining of the
tiny spatial ViT, the step budgets, and how each arm (full fine-tuning, naive freezing, the
two-stage method, the ablation grid) differs from the common base. An arm is one or more
stages; each stage is exactly one `vivit train` process.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SPATIAL_MODEL = "vit_tiny_patch16_224"
SPATIAL_KWARGS = {"depth": 4, "embed_dim": 96, "num_heads": 3}


@dataclass(frozen=True)
class Budget:
    """Sizes and step budgets of one demo scale (default or --quick)."""

    name: str
    clips: int
    """Training clips of the synthetic set."""
    val_clips: int
    """Validation clips: >= 1000 for a standard error near 1.5 points at the default scale."""
    images: int
    """Still images per split for pretraining (more images: less over-fitting of the ViT)."""
    video_frames: int
    """Frames stored per clip; the model samples `frames` of them uniformly."""
    size: int
    patch: int
    """Spatial ViT patch size: 4 gives 64 patch tokens per 32 px frame (the adapter's regions)."""
    pretrain_steps: int
    pretrain_batch: int
    frames: int
    """T: frames of the full, naive and stage-2 runs."""
    stage1_frames: int
    """Stage 1 (full fine-tuning on short clips): >= T/4, and cheap per step."""
    full_steps: int
    """Steps of the full fine-tuning baseline and of naive freezing."""
    stage1_steps: int
    stage2_steps: int
    batch: int = 16
    lr: float = 1e-3
    spatial_lr_mult: float = 0.1
    """Backbone learning rate multiplier of every full-mode run (baseline and stage 1)."""
    warmup_steps: int = 20
    temporal_depth: int = 2
    pretrain_lr: float = 2e-3
    eval_batch: int = 64

    def __post_init__(self) -> None:
        if self.stage1_frames * 4 < self.frames:
            raise ValueError(f"{self.name}: stage1_frames must be >= frames/4")
        if self.frames > self.video_frames:
            raise ValueError(f"{self.name}: frames must be <= video_frames")


# Patch 4 makes the backbone the dominant cost of a step, as it is at real scale (with patch 8
# the per-step data/optimiser overhead on a 2-core CPU hid what freezing saves). Stage 1 runs
# a third of full's steps at T/2 frames; stage 2 runs 3/4 of full's step count, each step doing
# only a backbone forward (no backbone backward or optimiser state).
DEFAULT = Budget(
    name="default",
    clips=3000,
    val_clips=1500,
    images=6000,
    video_frames=16,
    size=32,
    patch=4,
    pretrain_steps=500,
    pretrain_batch=128,
    frames=8,
    stage1_frames=4,
    full_steps=600,
    stage1_steps=200,
    stage2_steps=450,
)

QUICK = Budget(
    name="quick",
    clips=256,
    val_clips=128,
    images=256,
    video_frames=8,
    size=32,
    patch=8,
    pretrain_steps=40,
    pretrain_batch=64,
    frames=8,
    stage1_frames=4,
    full_steps=20,
    stage1_steps=10,
    stage2_steps=20,
    warmup_steps=4,
)


def budget_for(quick: bool) -> Budget:
    return QUICK if quick else DEFAULT


@dataclass
class Stage:
    """One `vivit train` process: its run-directory name and its config overrides."""

    run: str
    overrides: list[str]


@dataclass
class Arm:
    """A row of the results table: one or more stages run in order."""

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
        "version": 2,
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
        "data.eval_clips=2",
        "data.eval_crops=1",
        f"data.eval_batch_size={budget.eval_batch}",
        f"optim.lr={budget.lr}",
        f"optim.spatial_lr_mult={budget.spatial_lr_mult}",
        f"optim.warmup_steps={budget.warmup_steps}",
        f"train.micro_batch_size={budget.batch}",
        "train.log_every=10",
        "train.progress=false",
        "tracking.enabled=true",
        f"tracking.uri={tracking_uri}",
        f"tracking.experiment={experiment}",
    ]


def _full(budget: Budget, frames: int, steps: int) -> list[str]:
    return ["mode=full", "adapter.kind=none", "temporal.init=random"] + [
        f"data.frames={frames}",
        f"train.steps={steps}",
    ]


def _frozen(budget: Budget, adapter: str, init: str, steps: int) -> list[str]:
    return [
        "mode=frozen",
        f"adapter.kind={adapter}",
        f"adapter.heads={SPATIAL_KWARGS['num_heads']}",
    ] + [
        f"temporal.init={init}",
        f"data.frames={budget.frames}",
        f"train.steps={steps}",
    ]


def stage1(budget: Budget) -> Stage:
    """Full fine-tuning on short clips (with the low backbone lr, so stage 2 freezes a sound one)."""
    return Stage("two-stage-s1", _full(budget, budget.stage1_frames, budget.stage1_steps))


def stage2(
    budget: Budget, runs_dir: Path, adapter: str = "attn", name: str = "two-stage-s2"
) -> Stage:
    """Frozen spatial + adapter, spatial and temporal initialised from stage 1, at T frames."""
    init = _frozen(budget, adapter, "checkpoint", budget.stage2_steps)
    init += [f"temporal.checkpoint={runs_dir / 'two-stage-s1'}", "temporal.load_spatial=true"]
    return Stage(name, init)


def demo_arms(budget: Budget, runs_dir: Path) -> list[Arm]:
    """full fine-tuning, naive freezing, and the two-stage method, in that order."""
    return [
        Arm(
            "full",
            f"full fine-tuning (T={budget.frames})",
            [Stage("full", _full(budget, budget.frames, budget.full_steps))],
        ),
        Arm(
            "frozen-naive",
            "frozen, no adapter, random temporal",
            [Stage("frozen-naive", _frozen(budget, "none", "random", budget.full_steps))],
        ),
        Arm(
            "two-stage",
            f"two-stage (full T={budget.stage1_frames}, then frozen+attn T={budget.frames})",
            [stage1(budget), stage2(budget, runs_dir)],
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
                stages = [Stage(run, _frozen(budget, adapter, init, budget.stage2_steps))]
            arms.append(Arm(name, f"adapter {adapter}, temporal init {init}", stages))
    return arms


def describe(budget: Budget) -> dict[str, Any]:
    return asdict(budget) | {"spatial_model": SPATIAL_MODEL, "spatial_kwargs": SPATIAL_KWARGS}
