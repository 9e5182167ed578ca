"""`vivit bench {train,frames,data,recipe,cache,decode} [--quick] [--out DIR]`: the time/memory suite.

`vivit bench faults` re-runs the fault table instead (`benchmarks.faults`).

Every configuration runs in its own process (see `benchmarks.runner`); results go to
`benchmarks/results/<model>_<hardware>_<date>/` (results.json, results.md, PNG plots).
`--quick` is the CPU smoke grid (tiny debug ViT); the default grid is the GPU one.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from benchmarks import specs as grid
from benchmarks.output import default_dir, write_section
from benchmarks.specs import BenchSpec
from benchmarks.system import device_info, environment

GiB = 2**30
MiB = 2**20


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vivit bench", description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["train", "frames", "data", "recipe", "cache", "decode"])
    p.add_argument(
        "--quick", action="store_true", help="CPU smoke grid (tiny ViT), <= ~5 min on 2 cores"
    )
    p.add_argument(
        "--out",
        type=Path,
        help="results directory (default benchmarks/results/<model>_<hw>_<date>)",
    )
    p.add_argument(
        "--data",
        metavar="ROOT",
        help="shard directory: train feeds from it (data-wait time); data measures it",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU: OMP threads per configuration process (1: steady timings on a shared machine)",
    )
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration process")
    p.add_argument(
        "--no-small", action="store_true", help="--quick: skip the ViT-S/16 @ 64 px rows"
    )
    p.add_argument(
        "--backbones", help="comma-separated backbone labels to keep (e.g. ViT-B/16,ViT-L/16)"
    )
    p.add_argument("--frames", help="comma-separated frame counts to keep (train)")
    p.add_argument(
        "--match",
        metavar="REGEX",
        help="keep configurations whose name matches (e.g. '_T32_B8_bf16_z2$'; names: "
        "<backbone>_<variant>_T<frames>_B<batch>_<precision>_z<stage>)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override added to every configuration (repeatable), e.g. optim.impl=torch",
    )
    g = p.add_argument_group("memory")
    g.add_argument(
        "--mem-budget",
        type=float,
        metavar="GB",
        help="train: CPU peak-RSS budget per configuration (over -> oom)",
    )
    g.add_argument(
        "--budget-gb",
        type=float,
        help="frames: memory budget (GPU: default the device; CPU: default post-build RSS + --headroom-mb)",
    )
    g.add_argument(
        "--search",
        choices=["both", "frames", "batch"],
        default="both",
        help="frames: search the largest T, the largest B, or both",
    )
    g.add_argument(
        "--frames-cap", type=int, help="frames: largest T tried (default 512 quick, 1024)"
    )
    g.add_argument(
        "--headroom-mb",
        type=float,
        default=256.0,
        help="frames on CPU without --budget-gb: training memory allowed",
    )
    r = p.add_argument_group("recipe")
    r.add_argument("--epochs", type=int, default=30)
    r.add_argument(
        "--clips-per-epoch", type=int, default=240_000, help="default: Kinetics-400 train size"
    )
    r.add_argument(
        "--stage1-share",
        type=float,
        default=0.5,
        help="share of the epochs in stage 1 (full @ T/4)",
    )
    r.add_argument(
        "--stage1-batch-mult",
        type=int,
        default=4,
        help="stage-1 clips per step as a multiple of the micro-batch (the recipe: T/(T/4) = 4, "
        "as many frames per step as a T-frame step; 1: stage 1 at the same micro-batch)",
    )
    r.add_argument(
        "--adapter", default="attn", choices=["none", "mlp", "attn"], help="stage-2 adapter"
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--seconds", type=float, help="measurement time per decoder (default 5 quick, 30)"
    )
    d.add_argument("--workers", type=int, default=0, help="loader workers (0: one per core)")
    d.add_argument(
        "--dali-pipelines",
        type=_counts,
        default=(1,),
        help="comma-separated data.dali_pipelines values to measure DALI at (first: headline)",
    )
    d.add_argument(
        "--synth-clips",
        type=int,
        default=48,
        help="data, cache: clips in the synthetic shards built when no --data",
    )
    c = p.add_argument_group("cache")
    c.add_argument("--views", type=int, default=1, help="augmented views per clip (K)")
    return p


def _counts(text: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4); each at least 1."""
    try:
        counts = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers like 1,2,4") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every count must be >= 1")
    return counts


def _keep(specs: list[BenchSpec], args: argparse.Namespace) -> list[BenchSpec]:
    if args.backbones:
        keep = {b.strip() for b in args.backbones.split(",")}
        specs = [s for s in specs if s.backbone.label in keep]
    if args.frames:
        frames = {int(t) for t in args.frames.split(",")}
        specs = [s for s in specs if s.frames in frames]
    if args.match:
        pattern = re.compile(args.match)
        specs = [s for s in specs if pattern.search(s.name)]
    if args.overrides:
        specs = [s.with_(extra_overrides=(*s.extra_overrides, *args.overrides)) for s in specs]
    if args.data and args.what == "train":
        # Both sides in one run: each configuration on in-memory tensors, then fed by the loader.
        specs = [v for s in specs for v in (s, s.with_(data_root=args.data))]
    if not specs:
        raise SystemExit("vivit bench: the filters left no configuration to run")
    return specs


def _backbones(args: argparse.Namespace) -> list[grid.Backbone]:
    if args.quick:
        return [grid.TINY_DEBUG] + ([] if args.no_small else [grid.SMALL_64PX])
    return list(grid.GPU_BACKBONES)


def _base(args: argparse.Namespace, backbone: grid.Backbone, frames: int) -> BenchSpec:
    if args.quick:
        return BenchSpec(
            backbone,
            frames=frames,
            micro_batch=4,
            ds_config="ds_configs/fp32.json",
            precision="fp32",
            num_classes=10,
            steps=5,
        )
    return BenchSpec(
        backbone,
        frames=frames,
        micro_batch=8,
        ds_config="ds_configs/zero2_bf16.json",
        precision="bf16",
        zero_stage=2,
        warmup=5,
        steps=20,
    )


def _method(args: argparse.Namespace) -> BenchSpec:
    """The method's stage-2 configuration (frozen + attn adapter) that `data` and `cache`
    measure: the headline backbone and T (tiny debug ViT at T=8 with --quick), `--set` added."""
    backbone = grid.TINY_DEBUG if args.quick else grid.GPU_MAIN
    if args.backbones:  # one backbone by label, from either grid
        try:
            backbone = grid.backbone(args.backbones.split(",")[0].strip())
        except ValueError as err:
            raise SystemExit(f"vivit bench: {err}") from None
    frames = int(args.frames.split(",")[0]) if args.frames else (8 if args.quick else 32)
    method = _base(args, backbone, frames).with_(mode="frozen", adapter="attn")
    if args.overrides:
        method = method.with_(extra_overrides=tuple(args.overrides))
    return method


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["faults"]:  # the fault table (issue 11): its own options
        from benchmarks.faults import main as faults_main

        return faults_main(argv[1:])
    args = _parser().parse_args(argv)
    device = device_info()
    on_gpu = device["kind"] == "cuda"
    label = grid.TINY_DEBUG.label if args.quick else grid.GPU_MAIN.label
    out = args.out or default_dir(label, device)
    if not on_gpu:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    env = environment(argv)
    env["cpu_threads_per_config"] = None if on_gpu else args.threads
    print(f"vivit bench {args.what}: {device['name']} -> {out}")

    if args.what == "train":
        from benchmarks.train_bench import run_train

        specs = grid.quick_train_grid(not args.no_small) if args.quick else grid.gpu_train_grid()
        budget = int(args.mem_budget * GiB) if args.mem_budget else None
        section = run_train(
            _keep(specs, args),
            mem_budget_bytes=budget,
            timeout_s=args.timeout,
            save=lambda partial: write_section(out, "train", partial, env),
        )
    elif args.what == "frames":
        from benchmarks.frames_bench import run_frames

        start_t = 8 if args.quick else 16
        bases = [
            _base(args, bb, start_t).with_(mode=m, adapter=a)
            for bb in _backbones(args)
            for m, a in (("full", "none"), ("frozen", "attn"))
        ]
        section = run_frames(
            _keep(bases, args),
            budget_bytes=int(args.budget_gb * GiB) if args.budget_gb else None,
            headroom_bytes=int(args.headroom_mb * MiB),
            on_gpu=on_gpu,
            search=args.search,
            frames_cap=args.frames_cap or (512 if args.quick else 1024),
            batch_cap=128 if args.quick else 512,
            timeout_s=args.timeout,
        )
        if on_gpu and not args.budget_gb:
            section["note"] += f" Budget: the device, {device['memory_bytes'] / GiB:.0f} GiB."
    elif args.what == "recipe":
        from benchmarks.recipe_bench import run_recipe

        t = 16 if args.quick else 32
        bases = [_base(args, bb, t) for bb in _backbones(args)]
        section = run_recipe(
            _keep(bases, args),
            adapter=args.adapter,
            share=args.stage1_share,
            stage1_batch_mult=args.stage1_batch_mult,
            epochs=args.epochs,
            clips=args.clips_per_epoch,
            timeout_s=args.timeout,
        )
    elif args.what == "cache":
        from benchmarks.cache_bench import run_cache

        section = run_cache(
            _method(args),
            root=args.data,
            out_dir=out,
            views=args.views,
            synth_clips=args.synth_clips,
            timeout_s=args.timeout,
        )
    elif args.what == "decode":
        import torch

        from benchmarks.decode_bench import default_grid, quick_grid, run_decode

        dev = torch.device("cuda" if on_gpu else "cpu")
        section = run_decode(quick_grid() if args.quick else default_grid(on_gpu), dev)
    else:
        from benchmarks.data_run import run_data

        section = run_data(
            _method(args),
            root=args.data,
            out_dir=out,
            seconds=args.seconds or (5.0 if args.quick else 30.0),
            workers=args.workers,
            dali_pipelines=args.dali_pipelines,
            synth_clips=args.synth_clips,
            timeout_s=args.timeout,
        )
    write_section(out, args.what, section, env)
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
