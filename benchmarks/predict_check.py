"""`python -m benchmarks.predict_check --out DIR [--quick]`: does `vivit predict` name the
label of a held-out clip first?

The built-in demo task pairs every class with its time reversal, and the tiny model stays
below ~45% top-1 there: too hard to tell a prediction bug from a weak model. This check uses
the 6 forward classes only (no reversal pairs), which the tiny model can learn, and goes
through the user path end to end, each step its own `vivit` process:

1. render train and val clips to video files on disk, with a `path,label,split` CSV (every
   clip's randomness from `numpy_rng(seed, purpose, i)`, so the set is the same anywhere);
2. `vivit shards build --format csv` for each split (`--codec copy`: the shards hold the very
   bytes `vivit predict` later reads, so predict and evaluation see the same pixels);
3. spatial weights: the demo's pretrained tiny ViT (`launch.demo.prepare_inputs`), or a file;
4. `vivit train` twice, the two-stage recipe at the demo's budget (`launch.recipes`);
5. `vivit predict STAGE2_RUN --json` on every val file: top-1/top-5 against the file's label,
   compared with stage 2's own evaluation top-1 (same views, so they should agree closely).

Writes `DIR/results.json` and `DIR/results.md`; videos, shards and runs go to `--work`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from common.child_env import checkout_env
from data.synthetic import CLASSES
from launch.demo_stages import log
from launch.recipes import Budget, Stage, budget_for

FORWARD = CLASSES[0::2]
"""moves right, moves down, grows, rotates clockwise, appears, approaches: CLASSES[2k]."""
FPS = 8.0
CHUNK = 50
"""Clips rendered per pool task."""


@dataclass(frozen=True)
class CheckSize:
    """Clip counts and the recipe budget of one scale of the check."""

    train: int
    val: int
    budget: Budget


def check_size(quick: bool) -> CheckSize:
    """Default: the demo's budget (16 stored frames at 32 px, stage 1 112 steps of 64 clips at
    2 frames, stage 2 200 steps of 16 at 8), 3000/300 clips. Quick: a smoke run of seconds."""
    budget = budget_for(quick)
    if not quick:
        return CheckSize(3000, 300, budget)
    small = replace(budget, stage1_steps=2, stage2_steps=2, batch=4, eval_points=1, eval_batch=16)
    return CheckSize(48, 12, small)


def _render_chunk(job: tuple[int, str, int, int, int, int, str, str]) -> list[tuple[str, str]]:
    """Render clips lo..hi-1 of a split to files; returns their (relative path, class name).

    Clip i's class is FORWARD[i % 6] (balanced splits); everything else about it (object,
    colours, position, speed, distractors) comes from `numpy_rng(seed, purpose, i)`.
    """
    from common.seeding import numpy_rng
    from data.synthetic import load_objects, render_clip, sample_params
    from data.transcode import encode_frames

    seed, split, lo, hi, frames, size, codec, videos = job
    _, objects = load_objects(None)
    ext = "webm" if codec == "vp9" else "mp4"
    rows = []
    for i in range(lo, hi):
        rng = numpy_rng(seed, f"predict-check-clip-{split}", i)
        params = sample_params(rng, size, len(objects))
        k = i % len(FORWARD)
        clip = render_clip(2 * k, params, frames, size, objects)  # 2k: the forward class
        data = encode_frames(clip, fps=FPS, codec=codec, gop=4, lossless=codec == "vp9")
        rel = f"{split}/{i:05d}.{ext}"
        (Path(videos) / rel).write_bytes(data)
        rows.append((rel, FORWARD[k]))
    return rows


def render_videos(
    videos: Path, counts: dict[str, int], seed: int, frames: int, size: int, codec: str
) -> list[tuple[str, str, str]]:
    """Write every split's clips under `videos/<split>/`; returns (path, label, split) rows."""
    from data.fork import process_pool

    rows: list[tuple[str, str, str]] = []
    for split, count in counts.items():
        (videos / split).mkdir(parents=True, exist_ok=True)
        jobs = [
            (seed, split, lo, min(lo + CHUNK, count), frames, size, codec, str(videos))
            for lo in range(0, count, CHUNK)
        ]
        workers = min(len(jobs), os.cpu_count() or 1)
        if workers > 1:
            with process_pool(workers) as pool:
                chunks = list(pool.imap(_render_chunk, jobs))
        else:
            chunks = [_render_chunk(job) for job in jobs]
        rows += [(path, label, split) for chunk in chunks for path, label in chunk]
    return rows


def write_labels(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """The `--format csv` label file: `path,label,split`, paths relative to the videos folder."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)


def vivit(args: list[str], log: Path, cwd: Path | None = None) -> tuple[str, float]:
    """Run `python -m launch.cli ARGS`; stdout is returned, stderr goes to `log`. Raises
    `RuntimeError` with the log's tail on a non-zero exit. Returns (stdout, wall seconds)."""
    start = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "launch.cli", *args],
            cwd=cwd,
            env=checkout_env(MLFLOW_TRACKING_URI=""),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"vivit {args[0]} failed (exit {proc.returncode}); {log}:\n{tail}")
    return proc.stdout, wall


def train_stage(stage: Stage, base_yaml: Path, runs: Path) -> dict[str, Any]:
    """One `vivit train` process for a `launch.recipes.Stage`, run as the demo runs its stages
    (`launch.demo_stages.run_stage`); the summary fields the check reports."""
    from launch.demo_stages import Progress, run_stage

    summary = run_stage(stage, base_yaml, runs, "", Progress(stage.run, stage.steps))
    keys = ("mode", "frames", "steps", "top1", "top5", "val_videos", "step_time_median_s")
    keys += ("train_time_s", "process_s")
    return {k: summary[k] for k in keys} | {"run_dir": str(runs / stage.run)}


def score(predictions: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, Any]:
    """Top-1/top-5 (%) of `vivit predict --json` records against each file's label, per class
    and as a confusion (label -> first class -> files); the per-file records (label, top
    labels, first probability) that back them."""
    records, per_class = [], {name: Counter() for name in FORWARD}
    for pred in predictions:
        label = labels[pred["video"]]
        top = [c["label"] for c in pred["top"]]
        hit1, hit5 = top[0] == label, label in top[:5]
        per_class[label].update(n=1, top1=int(hit1))
        records.append(
            {
                "video": pred["video"],
                "label": label,
                "top": top,
                "prob": round(pred["top"][0]["prob"], 4),
                "decoder": pred["decoder"],
                "views": pred["views"],
                "top1": hit1,
                "top5": hit5,
            }
        )
    n = len(records)
    return {
        "n": n,
        "top1": 100.0 * sum(r["top1"] for r in records) / n,
        "top5": 100.0 * sum(r["top5"] for r in records) / n,
        "per_class_top1": {k: 100.0 * c["top1"] / c["n"] for k, c in per_class.items() if c["n"]},
        "confusion": {
            label: dict(Counter(r["top"][0] for r in records if r["label"] == label))
            for label in FORWARD
        },
        "decoders": dict(Counter(r["decoder"] for r in records)),
        "files": records,
    }


def run_check(args: argparse.Namespace, command: str) -> dict[str, Any]:
    from benchmarks.system import environment
    from launch.demo_stages import write_base_config
    from launch.recipes import base_overrides, describe, stage1, stage2

    t0 = time.perf_counter()
    size = check_size(args.quick)
    if args.stage2_steps is not None:
        size = replace(size, budget=replace(size.budget, stage2_steps=args.stage2_steps))
    budget = size.budget
    env = environment(sys.argv[1:])
    env["command"] = command
    out, work = args.out.resolve(), args.work.resolve()
    videos, shards, runs = work / "videos", work / "shards", work / "runs"
    for path in (videos, shards, runs):
        shutil.rmtree(path, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    phases: dict[str, float] = {}

    log(f"rendering {size.train} train / {size.val} val clips to {videos}")
    start = time.perf_counter()
    counts = {"train": size.train, "val": size.val}
    rows = render_videos(videos, counts, args.seed, budget.video_frames, budget.size, args.codec)
    labels_csv = work / "labels.csv"
    write_labels(labels_csv, rows)
    phases["render_s"] = time.perf_counter() - start

    build_s = 0.0
    for split in counts:
        build = ["shards", "build", "--videos", str(videos), "--labels", str(labels_csv)]
        build += ["--format", "csv", "--split", split, "--out", str(shards), "--codec", "copy"]
        build += ["--workers", str(min(2, os.cpu_count() or 1)), "--strict"]
        stdout, wall = vivit(build, work / f"shards-{split}.log")
        build_s += wall
        log(stdout.strip() or f"{split}: built")
    phases["shards_build_s"] = build_s
    classes = json.loads((shards / "manifest.json").read_text())["classes"]

    start = time.perf_counter()
    if args.spatial_weights is not None:
        weights = args.spatial_weights.resolve()
        log(f"spatial weights {weights}")
    else:
        from launch.demo import prepare_inputs

        _, weights = prepare_inputs(budget, work / "cache", args.seed)
        weights = weights.resolve()
    phases["spatial_weights_s"] = time.perf_counter() - start

    overrides = base_overrides(budget, shards, weights, args.train_seed, "", "")
    overrides = [o for o in overrides if not o.startswith("tracking.")]
    base_yaml = work / "base.yaml"
    write_base_config(base_yaml, [*overrides, "tracking.enabled=false"])
    s1 = train_stage(stage1(budget), base_yaml, runs)
    s2 = train_stage(stage2(budget, runs), base_yaml, runs)
    phases["train_s"] = s1["process_s"] + s2["process_s"]

    val = [(path, label) for path, label, split in rows if split == "val"]
    run_dir = s2["run_dir"]
    log(f"vivit predict {run_dir} on {len(val)} val files")
    stdout, predict_s = vivit(
        ["predict", run_dir, *[p for p, _ in val], "--json"], work / "predict.log", cwd=videos
    )
    phases["predict_s"] = predict_s
    report = json.loads(stdout)
    scores = score(report["predictions"], dict(val))
    example, _ = vivit(["predict", run_dir, *[p for p, _ in val[:3]]], work / "ex.log", videos)
    log(f"predict top-1 {scores['top1']:.2f}% (eval {s2['top1']:.2f}%) on {scores['n']} files")

    result: dict[str, Any] = {
        "title": "vivit predict on held-out clips of the 6 forward synthetic classes",
        "command": command,
        "classes": classes,
        "codec": args.codec,
        "clips": counts,
        "video": {"frames": budget.video_frames, "size": budget.size, "fps": FPS},
        "seed": args.seed,
        "train_seed": args.train_seed,
        "spatial_weights": str(weights),
        "spatial_pretrain": _pretrain_meta(weights),
        "budget": describe(budget),
        "stage1": s1,
        "stage2": s2,
        "predict": {
            "checkpoint": report["checkpoint"],
            "step": report["step"],
            "s_per_video": predict_s / max(1, len(val)),
            **scores,
        },
        "eval_minus_predict_top1": s2["top1"] - scores["top1"],
        "example_text": example.strip().splitlines(),
        "phases_s": phases,
        "environment": env,
        "total_s": time.perf_counter() - t0,
    }
    atomic_write_text(out / "results.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "results.md", render_markdown(result))
    log(f"done in {result['total_s']:.0f} s: {out / 'results.md'}, results.json")
    return result


def _pretrain_meta(weights: Path) -> dict[str, Any] | None:
    """What `vivit pretrain` recorded beside the weights (image val top-1, steps), if anything."""
    meta = weights.with_suffix(".json")
    if not meta.is_file():
        return None
    found = json.loads(meta.read_text())
    return {k: found.get(k) for k in ("val_top1", "steps", "train_images", "classes")}


def render_markdown(r: dict[str, Any]) -> str:
    """The human summary of `results.json`."""
    env, p, s1, s2 = r["environment"], r["predict"], r["stage1"], r["stage2"]
    dev, ver = env["device"], env["versions"]
    b = r["budget"]
    pre = r["spatial_pretrain"]
    pretrain = (
        f"`vivit pretrain`: {pre['steps']} steps on {pre['train_images']} stills of "
        f"{len(pre['classes'])} shapes, image val top-1 {100 * pre['val_top1']:.1f}%"
        if pre
        else "no pretraining record beside the file"
    )
    per_class = ", ".join(f"{k} {v:.1f}%" for k, v in p["per_class_top1"].items())
    lines = [
        f"# {r['title']}",
        "",
        f"- device: {dev['name']} ("
        + (f"{dev['cores']} CPU cores)" if dev["kind"] == "cpu" else f"{dev['count']} GPU(s))"),
        f"- versions: python {ver['python']}, torch {ver['torch']}, timm {ver['timm']}, "
        f"deepspeed {ver['deepspeed']}, dali {ver['dali']}",
        f"- git commit: {env['git_commit']}; threads: {env['threads']}",
        f"- command: `{r['command']}`",
        f"- classes ({len(r['classes'])}, chance {100 / len(r['classes']):.1f}% top-1): "
        + ", ".join(r["classes"]),
        f"- clips: {r['clips']['train']} train / {r['clips']['val']} val (held out: their own "
        f"seed streams), {r['video']['frames']} frames at {r['video']['size']} px, "
        f"{r['video']['fps']:g} fps, {r['codec']} files; shards built with `--codec copy`",
        f"- spatial ViT: {b['spatial_model']} {b['spatial_kwargs']}, patch {b['patch']}, weights "
        f"`{r['spatial_weights']}` ({pretrain})",
        "",
        "| | frames | clips/step | steps | s/step (median) | process s | eval top-1 | eval top-5 |",
        "|---|---|---|---|---|---|---|---|",
        f"| stage 1 (full) | {s1['frames']} | {b['batch'] * b['frames'] // b['stage1_frames']} "
        f"| {s1['steps']} | {s1['step_time_median_s']:.3f} | {s1['process_s']:.0f} "
        f"| {s1['top1']:.2f} | {s1['top5']:.2f} |",
        f"| stage 2 (frozen + attn) | {s2['frames']} | {b['batch']} | {s2['steps']} "
        f"| {s2['step_time_median_s']:.3f} | {s2['process_s']:.0f} "
        f"| {s2['top1']:.2f} | {s2['top5']:.2f} |",
        "",
        f"**`vivit predict` on the {p['n']} held-out val files: top-1 {p['top1']:.2f}%, "
        f"top-5 {p['top5']:.2f}%** (stage 2's own evaluation: {s2['top1']:.2f}%; difference "
        f"{r['eval_minus_predict_top1']:+.2f} points). With 6 classes top-5 leaves out one "
        "class, so it says little; top-1 is the figure.",
        "",
        f"- per class top-1: {per_class}",
        "",
        "Confusion (rows: label, columns: predict's first class, files):",
        "",
        "| label | " + " | ".join(r["classes"]) + " |",
        "|---|" + "---|" * len(r["classes"]),
        *(
            f"| {label} | "
            + " | ".join(str(p["confusion"].get(label, {}).get(c, 0)) for c in r["classes"])
            + " |"
            for label in r["classes"]
        ),
        "",
        f"- decoders: {p['decoders']}; {p['s_per_video']:.3f} s per file for the whole "
        f"`vivit predict` process (start-up and model load included)",
        "- wall time: "
        + ", ".join(f"{k[:-2].replace('_', ' ')} {v:.0f} s" for k, v in r["phases_s"].items())
        + f"; total {r['total_s']:.0f} s",
        "",
        "Three files as a user sees them (`vivit predict RUN_DIR FILE ...`, run in the videos "
        "folder):",
        "",
        "```",
        *r["example_text"],
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.predict_check",
        description="vivit predict's top-1 on held-out video files of a task the tiny model "
        "learns (6 forward synthetic classes), against the training run's own evaluation.",
    )
    p.add_argument("--out", type=Path, required=True, help="results.json and results.md go here")
    p.add_argument(
        "--work",
        type=Path,
        default=None,
        help="videos, shards, runs (default runs/predict-check, -quick with --quick)",
    )
    p.add_argument("--quick", action="store_true", help="48/12 clips, 2+2 steps: a smoke run")
    p.add_argument(
        "--spatial-weights",
        type=Path,
        default=None,
        help="spatial ViT weights (default: build the demo's, under --work/cache)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the clips (and of pretraining)")
    p.add_argument("--train-seed", type=int, default=0, help="seed of the training runs")
    p.add_argument("--codec", choices=["vp9", "h264"], default="vp9", help="video files' codec")
    p.add_argument(
        "--stage2-steps",
        type=int,
        default=None,
        help="stage 2's steps (default: the demo budget's 200; warm-up and evaluations scale)",
    )
    args = p.parse_args(argv)
    if args.work is None:
        args.work = Path("runs/predict-check" + ("-quick" if args.quick else ""))
    command = " ".join(["python -m benchmarks.predict_check", *argv])
    try:
        run_check(args, command)
    except RuntimeError as err:
        print(f"predict_check: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
