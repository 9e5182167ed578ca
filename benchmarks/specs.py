"""One benchmark configuration, and the grids `--quick` and the default run over."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Backbone:
    """A timm ViT at a given input size (random weights: only shapes matter for cost)."""

    label: str
    """Short name in tables and plots, e.g. `ViT-B/16` or `tiny-debug`."""
    model: str
    img_size: int
    patch_size: int | None = None
    model_kwargs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class BenchSpec:
    """Everything one worker process needs to time one training configuration."""

    backbone: Backbone
    mode: str = "frozen"
    adapter: str = "none"
    frames: int = 8
    micro_batch: int = 4
    ds_config: str = "ds_configs/zero2_bf16.json"
    precision: str = "auto"
    zero_stage: int | None = None
    temporal_depth: int = 4
    num_classes: int = 400
    warmup: int = 2
    steps: int = 5
    measure_spatial: bool = True
    """Also time the frozen spatial forward alone (for its MFU) and, on in-memory tensors, each
    phase of a step (forward, backward, optimiser: where the step goes)."""
    data_root: str | None = None
    """Feed from real shards (`data.loader.open_train_batches`) instead of synthetic tensors."""
    gpu_budget_bytes: int | None = None
    """Cap this process's CUDA allocations (`set_per_process_memory_fraction`) for `bench frames`."""
    extra_overrides: tuple[str, ...] = field(default_factory=tuple)

    @property
    def variant(self) -> str:
        """`full` or `frozen+<adapter>`: the method variant this row measures."""
        return "full" if self.mode == "full" else f"frozen+{self.adapter}"

    @property
    def name(self) -> str:
        zero = "" if self.zero_stage is None else f"_z{self.zero_stage}"
        return (
            f"{self.backbone.label}_{self.variant}_T{self.frames}_B{self.micro_batch}"
            f"_{self.precision}{zero}"
        )

    def overrides(self) -> list[str]:
        """`a.b=value` overrides for `core.config.load_config`."""
        b = self.backbone
        out = [
            f"mode={self.mode}",
            f"spatial.model={b.model}",
            f"spatial.img_size={b.img_size}",
            f"adapter.kind={self.adapter}",
            f"temporal.depth={self.temporal_depth}",
            f"data.frames={self.frames}",
            f"train.micro_batch_size={self.micro_batch}",
            f"engine.ds_config={self.ds_config}",
            f"engine.precision={self.precision}",
            "tracking.enabled=false",
            "train.progress=false",
        ]
        if b.patch_size is not None:
            out.append(f"spatial.patch_size={b.patch_size}")
        if b.model_kwargs:
            out.append(f"spatial.model_kwargs={json.dumps(dict(b.model_kwargs))}")
        if self.zero_stage is not None:
            out.append(f"engine.zero_stage={self.zero_stage}")
        if self.data_root is not None:
            out.append(f"data.root={self.data_root}")
        return out + list(self.extra_overrides)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["backbone"]["model_kwargs"] = dict(self.backbone.model_kwargs)
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> BenchSpec:
        bb = dict(data["backbone"])
        bb["model_kwargs"] = tuple(sorted(dict(bb.get("model_kwargs") or {}).items()))
        rest = {k: v for k, v in data.items() if k != "backbone"}
        rest["extra_overrides"] = tuple(rest.get("extra_overrides") or ())
        return BenchSpec(backbone=Backbone(**bb), **rest)

    def with_(self, **changes: Any) -> BenchSpec:
        return replace(self, **changes)


TINY_DEBUG = Backbone(
    "tiny-debug",
    "vit_tiny_patch16_224",
    img_size=32,
    patch_size=8,
    model_kwargs=(("depth", 4), ("embed_dim", 96), ("num_heads", 3)),
)
SMALL_64PX = Backbone("ViT-S/16@64px", "vit_small_patch16_224", img_size=64, patch_size=16)

GPU_BACKBONES = [
    Backbone("ViT-Ti/16", "vit_tiny_patch16_224", 224),
    Backbone("ViT-S/16", "vit_small_patch16_224", 224),
    Backbone("ViT-B/16", "vit_base_patch16_224", 224),
    Backbone("ViT-L/16", "vit_large_patch16_224", 224),
    Backbone("ViT-H/14", "vit_huge_patch14_224", 224),
]
GPU_MAIN = GPU_BACKBONES[2]
"""The issue's headline target: ViViT-B/16 FE at 224^2, 32 frames, temporal depth 4, bf16, ZeRO-2."""


def backbone(label: str) -> Backbone:
    """The backbone of either grid (CPU or GPU) called `label`; a clear error naming the
    known labels otherwise."""
    known = {b.label: b for b in (TINY_DEBUG, SMALL_64PX, *GPU_BACKBONES)}
    if label not in known:
        raise ValueError(f"unknown backbone {label!r}; known: {', '.join(known)}")
    return known[label]


VARIANTS = [("full", "none"), ("frozen", "none"), ("frozen", "mlp"), ("frozen", "attn")]


def quick_train_grid(with_small: bool = True) -> list[BenchSpec]:
    """CPU smoke grid (<= ~5 min on 2 cores): tiny debug ViT, T in {8, 16}, B=4, fp32."""
    base = BenchSpec(
        TINY_DEBUG, ds_config="ds_configs/fp32.json", precision="fp32", num_classes=10, steps=15
    )
    grid = [base.with_(mode=m, adapter=a, frames=t) for t in (8, 16) for (m, a) in VARIANTS]
    if with_small:
        grid += [
            base.with_(backbone=SMALL_64PX, mode=m, adapter=a, frames=8, steps=5)
            for (m, a) in (("full", "none"), ("frozen", "attn"))
        ]
    return grid


def gpu_train_grid() -> list[BenchSpec]:
    """The issue's GPU grid: ViViT-B/16 FE headline, then backbones x frames, precisions, ZeRO."""
    base = BenchSpec(
        GPU_MAIN,
        frames=32,
        micro_batch=8,
        precision="bf16",
        zero_stage=2,
        ds_config="ds_configs/zero2_bf16.json",
        warmup=5,
        steps=20,
    )
    grid: list[BenchSpec] = []
    for bb in GPU_BACKBONES:
        for t in (8, 16, 32, 64):
            grid += [base.with_(backbone=bb, frames=t, mode=m, adapter=a) for (m, a) in VARIANTS]
    for m, a in (("full", "none"), ("frozen", "attn")):
        grid += [
            base.with_(mode=m, adapter=a, precision="fp16", ds_config="ds_configs/zero2_fp16.json"),
            base.with_(mode=m, adapter=a, zero_stage=1, ds_config="ds_configs/zero1_bf16.json"),
            base.with_(mode=m, adapter=a, zero_stage=3, ds_config="ds_configs/zero3_bf16.json"),
            base.with_(mode=m, adapter=a, micro_batch=16),
        ]
    return grid
