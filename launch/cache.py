"""`vivit cache build CONFIG.yaml --out DIR [--views K] [--split train] [key=value ...]`: run
the frozen spatial transformer once over a split, K augmented views per clip, and store its
tokens, so stage 2 trains from them (`data.cache=DIR`) without decoding or a spatial forward.
`vivit cache size CONFIG.yaml [--views K] [--clips N]`: the storage of each token layout.

The spatial weights are the run's (`spatial.weights`, or stage 1's through
`temporal.init=checkpoint temporal.load_spatial=true`), and so are the view geometry and the
token layout (`spatial.patch_tokens`, `spatial.pool_grid`): build with the stage-2 config.
Several ranks split the source shards (`deepspeed --num_gpus N launch/cache.py build ...`);
re-running a killed build redoes only the unfinished shards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file by the deepspeed launcher
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launch.errors import run_reported  # noqa: E402
from launch.logging_setup import setup_logging  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vivit cache", description=__doc__.split("\n\n")[0])
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="spatial tokens of K views per clip -> DIR (resumable)")
    b.add_argument("config", help="the stage-2 experiment YAML (mode=frozen)")
    b.add_argument("overrides", nargs="*", help="a.b=value overrides, as for vivit train")
    b.add_argument("--out", required=True, help="cache directory (data.cache=DIR trains from it)")
    b.add_argument("--views", type=int, default=4, help="augmented views per clip (K)")
    b.add_argument("--split", default=None, help="split to cache (default: data.train_split)")
    b.add_argument("--batch", type=int, default=8, help="clips per spatial forward (x K views)")
    b.add_argument(
        "--dtype",
        default="float16",
        choices=["float16", "float32"],
        help="stored token precision (float32 only for checks: twice the bytes)",
    )
    b.add_argument(
        "--project-clips",
        type=int,
        default=None,
        help="also project the storage to this many clips (default: Kinetics-400's ~240k)",
    )
    b.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser("size", help="bytes per clip of whole / pooled / CLS-only token layouts")
    s.add_argument("config")
    s.add_argument("overrides", nargs="*")
    s.add_argument("--views", type=int, default=1)
    s.add_argument("--clips", type=int, default=None, help="default: Kinetics-400's ~240k")
    return p


def _distributed() -> tuple[int, int]:
    """(rank, world): the deepspeed launcher's process group, else one process, no group."""
    if "RANK" not in os.environ:
        return 0, 1
    from core.engine import init_distributed

    return init_distributed()


def _device():
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def _barrier(world: int) -> None:
    if world > 1:
        from core.engine import barrier

        barrier()


def _gather(report: dict, world: int) -> list[dict]:
    if world == 1:
        return [report]
    import torch.distributed as dist

    out: list = [None] * world
    dist.all_gather_object(out, report)
    return out


def build(args: argparse.Namespace) -> int:
    """`vivit cache build`; under the launcher every rank leaves its process group when the
    command returns (`run_reported(leave_group=True)`: rank 1 returns as soon as the reports
    are gathered)."""
    from common.seeding import seed_torch
    from core.cache_spec import cache_spec
    from core.config import load_config
    from core.engine import build_ds_config, compute_dtype, dtype_name
    from core.freezing import freeze_spatial
    from core.model import build_model
    from core.spatial import state_sha256
    from data.cache_build import CacheBuilder, finish_cache
    from data.cache_format import K400_CLIPS, human_bytes, storage_rows, view_bytes
    from data.loader import ensure_dataset, read_manifest

    start = time.perf_counter()
    cfg = load_config(args.config, args.overrides)
    split = args.split or cfg.data.train_split
    rank, world = _distributed()
    device = _device()
    ds = build_ds_config(
        cfg.engine,
        cfg.optim,
        cfg.train.micro_batch_size,
        cfg.train.grad_accum,
        device.type == "cuda",
        world_size=world,
    )
    dtype = compute_dtype(ds)  # the precision the frozen spatial runs in during training
    if rank == 0:
        ensure_dataset(cfg.data, cfg.seed)
    _barrier(world)
    classes = read_manifest(cfg.data.root)["classes"]
    seed_torch(cfg.seed, "model-init")  # as the trainer: the same backbone when it is random
    model = build_model(cfg, len(classes))
    sha = state_sha256(model.spatial)
    freeze_spatial(model, dtype)
    spatial = model.spatial.to(device)
    spec = cache_spec(cfg, spatial, sha)

    def encode(frames):
        tokens = spatial(frames)
        return tokens.cls, tokens.patches

    builder = CacheBuilder(
        cfg.data,
        args.out,
        split=split,
        views=args.views,
        seed=cfg.seed,
        encode=encode,
        spec=spec,
        size=cfg.spatial.img_size,
        mean=spatial.mean,
        std=spatial.std,
        device=device,
        dtype=dtype,
        rank=rank,
        world=world,
        batch_clips=args.batch,
        token_dtype=args.dtype,
        progress=not args.no_progress,
    )
    t0 = time.perf_counter()
    with builder:
        report = builder.run()
    _barrier(world)
    build_s = time.perf_counter() - t0
    reports = _gather(report, world)
    if rank != 0:
        return 0
    frames, dim, n = cfg.data.frames, spatial.embed_dim, spatial.num_patch_tokens
    itemsize = 2 if args.dtype == "float16" else 4
    per_view = view_bytes(frames, dim, n, itemsize)
    built_clips = sum(r["clips"] for r in reports)
    build = {
        "build_s": build_s,
        "build_cpu_s": sum(r["build_cpu_s"] for r in reports),
        "clips_built": built_clips,
        "clips_per_s": built_clips / build_s if build_s > 0 else None,
        "units_built": sum(r["units_built"] for r in reports),
        "units_resumed": sum(r["units_resumed"] for r in reports),
        "world_size": world,
        "device": str(device),
        "precision": dtype_name(dtype),
        "batch_clips": args.batch,
    }
    layout = {
        "embed": [frames, dim],
        "patches": [frames, n, dim],
        "dtype": args.dtype,
        "bytes_per_view": per_view,
        "members": {
            "cls": "label of the view",
            "json": "view, frames, box, flip",
            "embed.npy": "T x D frame embeddings (CLS)",
            "patches.npy": "T x N x D patch tokens (absent when N = 0)",
        },
    }
    manifest = finish_cache(
        args.out,
        cfg.data.root,
        split,
        views=args.views,
        seed=cfg.seed,
        spec=spec,
        token_dtype=args.dtype,
        layout=layout,
        build=build,
    )
    entry = manifest["splits"][split]
    project = args.project_clips or K400_CLIPS
    whole = int(spatial.vit.patch_embed.num_patches)
    rows = storage_rows(frames, dim, whole, clips=project, views=args.views, itemsize=itemsize)
    storage = {
        "bytes_per_view": per_view,
        "payload_bytes_per_clip": per_view * args.views,
        "disk_bytes_per_clip": entry["bytes_per_clip"],
        "split_bytes": entry["bytes"],
        "projected_clips": project,
        "projected_bytes": entry["bytes_per_clip"] * project,
        "layouts": rows,
    }
    entry["storage"] = storage
    entry["build"]["wall_s"] = time.perf_counter() - start
    from common.atomic import atomic_write_json

    atomic_write_json(Path(args.out) / "cache.json", manifest)
    skipped = sum(entry["skipped"].values())
    rate = build["clips_per_s"]
    print(
        f"cache {split}: {entry['clips']} clips x {args.views} views ({skipped} skipped; "
        f"{build['units_resumed']} source shards already done) in {build_s:.1f} s"
        + (f" ({rate:.1f} clips/s)" if rate else "")
        + f" -> {args.out}"
    )
    print(
        f"  per view: {frames} frames x (1 CLS + {n} patch tokens) x {dim} x {itemsize} B = "
        f"{human_bytes(per_view)}; per clip ({args.views} views): "
        f"{human_bytes(per_view * args.views)} of tokens, {human_bytes(entry['bytes_per_clip'])} "
        "on disk"
    )
    print(
        f"  this split: {human_bytes(entry['bytes'])}; projected to {project:,} clips: "
        f"{human_bytes(storage['projected_bytes'])}"
    )
    for row in rows:
        print(f"    {row['layout']:<12} {human_bytes(row['total_bytes'])} of tokens")
    print(json.dumps({"cache": args.out, "clips": entry["clips"], **build}))
    return 0


def size(args: argparse.Namespace) -> int:
    from core.config import load_config
    from core.spatial import SpatialTransformer
    from data.cache_format import K400_CLIPS, human_bytes, storage_rows

    cfg = load_config(args.config, [*args.overrides, "spatial.weights=null"])
    spatial = SpatialTransformer(cfg.spatial)
    clips = args.clips or K400_CLIPS
    frames, dim = cfg.data.frames, spatial.embed_dim
    whole = int(spatial.vit.patch_embed.num_patches)
    print(
        f"{cfg.spatial.model} at {cfg.spatial.img_size}px: {frames} frames, width {dim}, "
        f"{whole} patch tokens; float16, {args.views} view(s) per clip, {clips:,} clips"
    )
    print("| layout | tokens per frame | per clip | dataset |")
    print("|---|---|---|---|")
    for row in storage_rows(frames, dim, whole, clips=clips, views=args.views):
        print(
            f"| {row['layout']} | 1 + {row['patch_tokens']} | "
            f"{human_bytes(row['bytes_per_clip'])} | {human_bytes(row['total_bytes'])} |"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # overrides may come after options (argparse would not take a second run of positionals)
    args, rest = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    unknown = [a for a in rest if a.startswith("-") or "=" not in a]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides += rest
    setup_logging()
    return run_reported(
        f"vivit cache {args.cmd}",
        lambda: {"build": build, "size": size}[args.cmd](args),
        leave_group=True,
    )


if __name__ == "__main__":
    sys.exit(main())
