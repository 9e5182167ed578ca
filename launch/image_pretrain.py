"""Image-classification pretraining of the spatial ViT (plain PyTorch, one process).

Not part of `core/` (nothing there uses it): it is one of the launch-side jobs, and it
shares core's rules instead of keeping its own: AdamW groups from `core.params.param_groups`
(no weight decay on norms, biases, `cls_token`, `pos_embed`), the warm-up + cosine schedule
of `core.optim.warmup_cosine`, and the atomic writes of `common.atomic`.

The frozen method needs an image ViT whose CLS token says *what* is in a frame but not
*where*: then motion lives only in the patch tokens, which is what the adapter reads.
Strong random-resized-crop (translate + scale) augmentation makes the CLS position- and
size-invariant. The result is a timm-compatible safetensors file (backbone keys only) that
`spatial.weights` loads, plus a JSON side file describing how it was made.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common.atomic import atomic_path, atomic_write_json
from common.seeding import seed_torch, torch_generator
from core.optim import warmup_cosine
from core.params import param_groups

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class PretrainConfig:
    """How the spatial ViT is pretrained; every field is a `vivit pretrain` option."""

    images: str
    """ImageFolder root: `train/<class>/*.png` (+ optional `val/<class>/`), or `<class>/` directly."""
    model: str
    """timm model name (a VisionTransformer variant)."""
    out: str
    """Output safetensors path; `<out without suffix>.json` gets the description."""
    img_size: int = 32
    patch_size: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra `timm.create_model` arguments (depth, embed_dim, num_heads, ...)."""
    epochs: int = 10
    steps: int | None = None
    """Optimiser steps; overrides `epochs` when set."""
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    min_scale: float = 0.15
    """Smallest crop area fraction of the random-resized crop (strong scale/translate)."""
    max_scale: float = 1.0
    flip: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.img_size < 8:
            raise ValueError(f"--img-size must be >= 8, got {self.img_size}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        if self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if not 0.0 < self.min_scale <= self.max_scale <= 1.0:
            raise ValueError(
                f"crop scale must satisfy 0 < min_scale <= max_scale <= 1, got "
                f"{self.min_scale}..{self.max_scale}"
            )
        if not str(self.out).endswith(".safetensors"):
            raise ValueError(f"--out must end in .safetensors, got {self.out}")


@dataclass
class ImageSet:
    """A whole (small) image split held in memory as uint8 N×C×H×W."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]


def find_splits(root: Path) -> tuple[Path, Path | None]:
    """Return (train dir, val dir or None) for either supported layout."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    if (root / "train").is_dir():
        val = root / "val"
        return root / "train", (val if val.is_dir() else None)
    return root, None


def load_image_folder(root: Path, size: int, classes: list[str] | None = None) -> ImageSet:
    """Read `root/<class>/*` into memory, resized to `size`×`size` RGB.

    `classes` fixes the label order (the val split must use the train split's classes).
    """
    from PIL import Image

    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{root}: classes {unknown} are not in the training split")
    if not classes:
        raise ValueError(f"{root}: no class sub-folders (expected {root}/<class>/*.png)")
    arrays, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as img:
                    img = img.convert("RGB")
                    if img.size != (size, size):
                        img = img.resize((size, size), Image.BILINEAR)
                    arrays.append(np.asarray(img, dtype=np.uint8))
            except OSError as err:
                raise ValueError(f"unreadable image {path}: {err}") from err
            labels.append(label)
    if not arrays:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) under the class folders")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.tensor(labels, dtype=torch.long), list(classes))


def split_holdout(data: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Carve a validation split out of the training images when the folder has none."""
    gen = torch_generator(seed, "pretrain-holdout")
    order = torch.randperm(len(data.labels), generator=gen)
    n_val = max(1, int(len(order) * fraction))
    val, train = order[:n_val], order[n_val:]
    return (
        ImageSet(data.images[train], data.labels[train], data.classes),
        ImageSet(data.images[val], data.labels[val], data.classes),
    )


def random_resized_crop(
    x: torch.Tensor, min_scale: float, max_scale: float, flip: bool, gen: torch.Generator
) -> torch.Tensor:
    """Batched RandomResizedCrop (+ horizontal flip) via one affine grid sample.

    Each sample gets its own crop area in [min_scale, max_scale], aspect ratio in
    [3/4, 4/3] and position anywhere inside the image, resized back to full size.
    """
    n = x.shape[0]
    area = torch.empty(n).uniform_(min_scale, max_scale, generator=gen)
    log_r = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)
    ratio = log_r.exp()
    w = (area * ratio).sqrt().clamp(max=1.0)
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - h)
    sign = torch.ones(n)
    if flip:
        sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def build_model(cfg: PretrainConfig, num_classes: int) -> torch.nn.Module:
    """The timm ViT with a classifier head (the head is dropped when saving)."""
    import timm

    kwargs: dict[str, Any] = dict(cfg.model_kwargs)
    kwargs["img_size"] = cfg.img_size
    if cfg.patch_size is not None:
        kwargs["patch_size"] = cfg.patch_size
    try:
        return timm.create_model(cfg.model, pretrained=False, num_classes=num_classes, **kwargs)
    except RuntimeError as err:  # timm: unknown model name
        raise ValueError(f"--model {cfg.model!r}: {err}") from err


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - mean) / std


@torch.no_grad()
def accuracy(
    model: torch.nn.Module, data: ImageSet, mean: torch.Tensor, std: torch.Tensor, batch: int
) -> float:
    """Top-1 on whole, unaugmented images."""
    model.eval()
    correct = 0
    for i in range(0, len(data.labels), batch):
        logits = model(normalise(data.images[i : i + batch], mean, std))
        correct += int((logits.argmax(-1) == data.labels[i : i + batch]).sum())
    return correct / len(data.labels)


def backbone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """timm keys minus the classifier `head.*`, contiguous for safetensors."""
    return {
        k: v.detach().contiguous().clone()
        for k, v in model.state_dict().items()
        if not k.startswith("head.")
    }


def save_weights(state: dict[str, torch.Tensor], meta: dict[str, Any], out: Path) -> Path:
    """Write safetensors + JSON side file, each to a temporary name then renamed."""
    from safetensors.torch import save_file

    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata={"model": str(meta["model"])})
    return atomic_write_json(out.with_suffix(".json"), meta)


def make_optimizer(
    model: torch.nn.Module, cfg: PretrainConfig, steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with core's weight-decay rule, stepped by core's warm-up + cosine schedule.

    Matrices decay; norms, biases, `cls_token` and `pos_embed` (timm's `no_weight_decay`)
    do not, exactly as in `vivit train`.
    """
    groups = param_groups(model, weight_decay=cfg.weight_decay, lr=cfg.lr)
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, cfg.warmup_steps, steps, min_lr_ratio=0.01)
    )
    return opt, schedule


def pretrain(cfg: PretrainConfig, log: Any = print) -> dict[str, Any]:
    """Train, evaluate, save; returns the metadata written next to the weights."""
    import timm.data

    seed_torch(cfg.seed, "pretrain-init")
    gen = torch_generator(cfg.seed, "pretrain-batches")
    train_dir, val_dir = find_splits(Path(cfg.images))
    train = load_image_folder(train_dir, cfg.img_size)
    if val_dir is not None:
        val = load_image_folder(val_dir, cfg.img_size, classes=train.classes)
    else:
        train, val = split_holdout(train, 0.1, cfg.seed)
    model = build_model(cfg, num_classes=len(train.classes))
    data_cfg = timm.data.resolve_model_data_config(model)
    mean = torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(data_cfg["std"]).view(1, 3, 1, 1)

    n = len(train.labels)
    batch = min(cfg.batch_size, n)
    steps = cfg.steps or cfg.epochs * math.ceil(n / batch)
    opt, schedule = make_optimizer(model, cfg, steps)
    log(
        f"pretrain {cfg.model}: {n} train / {len(val.labels)} val images, "
        f"{len(train.classes)} classes, {steps} steps of {batch}"
    )
    start = time.perf_counter()
    order = torch.randperm(n, generator=gen)
    cursor, loss_avg = 0, float("nan")
    model.train()
    for step in range(steps):
        if cursor + batch > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor : cursor + batch]
        cursor += batch
        x = normalise(train.images[idx], mean, std)
        x = random_resized_crop(x, cfg.min_scale, cfg.max_scale, cfg.flip, gen)
        loss = F.cross_entropy(model(x), train.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        value = float(loss.detach())
        loss_avg = value if math.isnan(loss_avg) else 0.9 * loss_avg + 0.1 * value
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
            log(f"  step {step + 1}/{steps}  loss {loss_avg:.3f}")
    train_s = time.perf_counter() - start
    top1 = accuracy(model, val, mean, std, batch=256)
    log(f"val top-1 {top1:.4f} ({len(val.labels)} images, chance {1 / len(train.classes):.3f})")
    meta = {
        "model": cfg.model,
        "model_kwargs": cfg.model_kwargs,
        "img_size": cfg.img_size,
        "patch_size": cfg.patch_size,
        "classes": train.classes,
        "val_top1": top1,
        "val_images": len(val.labels),
        "train_images": n,
        "steps": steps,
        "train_s": round(train_s, 2),
        "mean": list(data_cfg["mean"]),
        "std": list(data_cfg["std"]),
        "config": asdict(cfg),
    }
    save_weights(backbone_state(model), meta, Path(cfg.out))
    return meta
