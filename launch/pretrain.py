"""`vivit pretrain`: train a timm ViT on an image folder and save its backbone weights."""

from __future__ import annotations

import argparse
import json
import sys

from launch.image_pretrain import PretrainConfig, pretrain


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vivit pretrain",
        description="Pretrain a spatial ViT on IMAGES_DIR (ImageFolder) with strong "
        "translate/scale augmentation; write timm-compatible safetensors for spatial.weights.",
    )
    p.add_argument("images", metavar="IMAGES_DIR", help="train/<class>/*.png [+ val/], or <class>/")
    p.add_argument("--model", required=True, help="timm model name, e.g. vit_tiny_patch16_224")
    p.add_argument("--out", required=True, help="output FILE.safetensors (FILE.json beside it)")
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--patch-size", type=int, default=None)
    p.add_argument(
        "--model-kwargs",
        default="{}",
        help='JSON of extra timm.create_model arguments, e.g. \'{"depth": 4, "embed_dim": 96}\'',
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-scale", type=float, default=0.15, help="smallest random crop area")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as err:
        print(f"vivit pretrain: --model-kwargs is not JSON: {err}", file=sys.stderr)
        return 2
    if not isinstance(kwargs, dict):
        print("vivit pretrain: --model-kwargs must be a JSON object", file=sys.stderr)
        return 2
    try:
        cfg = PretrainConfig(
            images=args.images,
            model=args.model,
            out=args.out,
            img_size=args.img_size,
            patch_size=args.patch_size,
            model_kwargs=kwargs,
            epochs=args.epochs,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            min_scale=args.min_scale,
            seed=args.seed,
        )
        meta = pretrain(cfg)
    except (ValueError, FileNotFoundError) as err:
        print(f"vivit pretrain: {err}", file=sys.stderr)
        return 2
    print(f"wrote {cfg.out} (val top-1 {meta['val_top1']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
