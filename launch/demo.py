"""`vivit demo`: the frozen-spatial two-stage method against full fine-tuning, end to end.

Builds the synthetic action set and pretrains a tiny spatial ViT (both cached under the
output directory, keyed on the options), then trains each arm as its own `vivit train`
process (so peak memory is per run), evaluates all with the trainer's multi-view protocol,
and writes `results.md`, `results.json` and `results.png`. Every run is an MLflow run of one
experiment in `OUT/mlflow.db`: `mlflow ui --backend-store-uri sqlite:///OUT/mlflow.db`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common.atomic import atomic_save_figure, atomic_write_text
from launch.recipes import (
    SPATIAL_KWARGS,
    SPATIAL_MODEL,
    Arm,
    Budget,
    Stage,
    base_overrides,
    budget_for,
    cache_key,
    demo_arms,
    describe,
)

EXPERIMENT = "vivit-demo"


class StageFailed(RuntimeError):
    """A `vivit train` subprocess exited non-zero; the message carries its log tail."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- data + pretrained weights


def prepare_inputs(budget: Budget, cache_root: Path, seed: int) -> tuple[Path, Path]:
    """(shard dir, spatial weights), built once per option set and reused afterwards."""
    from data.synthetic import make_synthetic
    from launch.image_pretrain import PretrainConfig, pretrain

    cache = cache_root / cache_key(budget, seed)
    data_root, weights = cache / "synth", cache / "spatial.safetensors"
    if (data_root / "manifest.json").is_file():
        log(f"reusing shards {data_root}")
    else:
        log(f"building synthetic shards ({budget.clips} train / {budget.val_clips} val clips)")
        tmp = cache / f".synth.building-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        make_synthetic(
            tmp,
            clips=budget.clips,
            val_clips=budget.val_clips,
            frames=budget.video_frames,
            size=budget.size,
            seed=seed,
            images=budget.images,
        )
        shutil.rmtree(data_root, ignore_errors=True)
        os.replace(tmp, data_root)
    if weights.is_file() and weights.with_suffix(".json").is_file():
        meta = json.loads(weights.with_suffix(".json").read_text())
        log(f"reusing spatial weights {weights} (image val top-1 {meta['val_top1']:.3f})")
    else:
        log(f"pretraining the spatial ViT on {data_root / 'images'}")
        pretrain(
            PretrainConfig(
                images=str(data_root / "images"),
                model=SPATIAL_MODEL,
                out=str(weights),
                img_size=budget.size,
                patch_size=budget.patch,
                model_kwargs=dict(SPATIAL_KWARGS),
                steps=budget.pretrain_steps,
                batch_size=budget.pretrain_batch,
                lr=budget.pretrain_lr,
                min_scale=0.35,
                seed=seed,
            ),
            log=log,
        )
    return data_root, weights


# ---------------------------------------------------------------- MLflow store


def tracking_uri(out: Path) -> str:
    """A SQLite store (MLflow 3.x refuses new file stores without an opt-out variable)."""
    return f"sqlite:///{(out / 'mlflow.db').resolve()}"


def ensure_experiment(uri: str, name: str, artifacts: Path) -> str:
    """Create the experiment with artifacts under the output dir (else they land in ./mlruns)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifacts.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(name, artifact_location=artifacts.resolve().as_uri())


def mlflow_run_names(uri: str, name: str) -> list[str]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r.info.run_name for r in runs]


# ---------------------------------------------------------------- running the arms


def write_base_config(path: Path, overrides: list[str]) -> None:
    """Resolve the shared overrides once (a bad key fails here, before any run) and save them."""
    from core.config import load_config
    from core.configtools import dump_yaml

    dump_yaml(load_config(None, overrides), path)


def run_stage(stage: Stage, base_yaml: Path, runs_dir: Path, run_prefix: str) -> dict[str, Any]:
    """One fresh `vivit train` process; returns its summary.json plus the process time."""
    run_dir = runs_dir / stage.run
    shutil.rmtree(run_dir, ignore_errors=True)
    runs_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "launch.train", str(base_yaml), *stage.overrides]
    cmd += [f"out_dir={run_dir}", f"tracking.run_name={run_prefix}{stage.run}"]
    log_path = runs_dir / f"{stage.run}.log"
    log(f"train {stage.run}: {' '.join(stage.overrides)}")
    start = time.perf_counter()
    with open(log_path, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    process_s = time.perf_counter() - start
    summary_path = run_dir / "summary.json"
    if proc.returncode != 0 or not summary_path.is_file():
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-25:])
        raise StageFailed(f"{stage.run} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    summary = json.loads(summary_path.read_text())
    summary["process_s"] = process_s
    summary["run"] = stage.run
    log(
        f"  {stage.run}: top-1 {summary['top1']:.2f}  train {summary['train_time_s']:.1f}s  "
        f"step {summary['step_time_median_s']:.3f}s  peak {summary['peak_mem_bytes'] / 2**20:.0f} MiB"
    )
    return summary


def run_arms(
    arms: list[Arm], base_yaml: Path, runs_dir: Path, run_prefix: str
) -> dict[str, dict[str, Any]]:
    """Run every stage once (a stage shared by several arms, like stage 1, runs once)."""
    done: dict[str, dict[str, Any]] = {}
    for arm in arms:
        for stage in arm.stages:
            if stage.run not in done:
                done[stage.run] = run_stage(stage, base_yaml, runs_dir, run_prefix)
    return done


def _train_mem(s: dict[str, Any]) -> float:
    """Memory the training added over the process's state at its first step, when reported."""
    above = s.get("peak_mem_above_start_bytes")
    return float(above) if isinstance(above, (int, float)) else math.nan


def arm_row(arm: Arm, summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Accuracy from the last stage; times summed over stages; memory the max over stages."""
    stages = [summaries[s.run] for s in arm.stages]
    last = stages[-1]
    n = int(last.get("val_videos") or 0)
    p = last["top1"] / 100.0
    return {
        "arm": arm.name,
        "label": arm.label,
        "top1": last["top1"],
        "top1_se": 100.0 * math.sqrt(p * (1 - p) / n) if n else math.nan,
        "top5": last["top5"],
        "val_videos": n,
        "train_time_s": sum(s["train_time_s"] for s in stages),
        "wall_s": sum(s["wall_s"] for s in stages),
        "process_s": sum(s["process_s"] for s in stages),
        "step_time_median_s": last["step_time_median_s"],
        "stage_step_times_s": [s["step_time_median_s"] for s in stages],
        "peak_mem_bytes": max(s["peak_mem_bytes"] for s in stages),
        "train_mem_bytes": max(_train_mem(s) for s in stages),
        "peak_mem_kind": last.get("peak_mem_kind", ""),
        "trainable_params": last["trainable_params"],
        "frozen_params": last["frozen_params"],
        "steps": [s["steps"] for s in stages],
        "frames": [s["frames"] for s in stages],
        "runs": [s["run"] for s in stages],
    }


# ---------------------------------------------------------------- report


def _fmt_mem(b: float) -> str:
    return "n/a" if not math.isfinite(b) else f"{b / 2**20:.0f}"


def markdown_table(rows: list[dict[str, Any]], baseline: dict[str, Any] | None) -> str:
    head = (
        "| arm | top-1 % (±SE) | top-5 % | train time s | median step s | train mem MiB |"
        " process peak MiB | trainable params |"
    )
    if baseline is not None:
        head += " time / full | train mem / full |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        steps = " + ".join(f"{t:.3f}" for t in r["stage_step_times_s"])
        line = (
            f"| {r['arm']} | {r['top1']:.2f} (±{r['top1_se']:.2f}) | {r['top5']:.2f} | "
            f"{r['train_time_s']:.1f} | {steps} | {_fmt_mem(r['train_mem_bytes'])} | "
            f"{_fmt_mem(r['peak_mem_bytes'])} | {r['trainable_params']:,} |"
        )
        if baseline is not None:
            line += (
                f" {r['train_time_s'] / baseline['train_time_s']:.2f}x |"
                f" {_ratio(r['train_mem_bytes'], baseline['train_mem_bytes'])} |"
            )
        lines.append(line)
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if math.isfinite(a) and math.isfinite(b) and b > 0 else "n/a"


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The demo's claims, computed from the measured rows (never adjusted)."""
    by = {r["arm"]: r for r in rows}
    full, naive, method = by["full"], by["frozen-naive"], by["two-stage"]
    se = math.sqrt(full["top1_se"] ** 2 + method["top1_se"] ** 2)
    out = {
        "method_minus_full_top1": method["top1"] - full["top1"],
        "naive_minus_full_top1": naive["top1"] - full["top1"],
        "difference_se": se,
        "time_ratio": method["train_time_s"] / full["train_time_s"],
        "wall_ratio": method["wall_s"] / full["wall_s"],
        "process_mem_ratio": method["peak_mem_bytes"] / full["peak_mem_bytes"],
        "train_mem_ratio": method["train_mem_bytes"] / full["train_mem_bytes"]
        if math.isfinite(method["train_mem_bytes"]) and math.isfinite(full["train_mem_bytes"])
        else math.nan,
    }
    # What training adds (activations, gradients, optimiser state) is what freezing saves; on
    # CPU the process peak is mostly imports (torch, DALI, DeepSpeed), the same for every arm.
    trained = math.isfinite(out["train_mem_ratio"])
    out["mem_ratio"] = out["train_mem_ratio"] if trained else out["process_mem_ratio"]
    out["mem_kind"] = "training-added" if trained else "process peak"
    out["accuracy_ok"] = out["method_minus_full_top1"] >= -1.0
    out["naive_below"] = out["naive_minus_full_top1"] < -max(1.0, 2 * se)
    out["time_ok"] = out["time_ratio"] <= 0.6
    out["mem_below"] = out["mem_ratio"] < 0.9
    return out


def verdict_lines(v: dict[str, Any]) -> list[str]:
    def mark(ok: bool) -> str:
        return "meets" if ok else "MISSES"

    return [
        f"- method − full top-1: {v['method_minus_full_top1']:+.2f} points "
        f"(±{v['difference_se']:.2f} SE; target ≥ −1): {mark(v['accuracy_ok'])}",
        f"- naive freezing − full top-1: {v['naive_minus_full_top1']:+.2f} points "
        f"(target: clearly below): {mark(v['naive_below'])}",
        f"- method / full training time: {v['time_ratio']:.2f}x (target ≤ 0.6x; whole runs "
        f"incl. eval and start-up: {v['wall_ratio']:.2f}x): {mark(v['time_ok'])}",
        f"- method / full peak memory ({v['mem_kind']}): {v['mem_ratio']:.2f}x (target: clearly "
        f"below; process peak incl. imports: {v['process_mem_ratio']:.2f}x): "
        f"{mark(v['mem_below'])}",
    ]


def environment() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Bar chart: top-1, training time, peak memory, trainable parameters per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["arm"] for r in rows]
    panels = [
        ("top-1 %", [r["top1"] for r in rows]),
        ("training time s", [r["train_time_s"] for r in rows]),
        ("train memory MiB", [r["train_mem_bytes"] / 2**20 for r in rows]),
        ("trainable params (k)", [r["trainable_params"] / 1e3 for r in rows]),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(4 * 4, 3.6))
    colours = [f"C{i}" for i in range(len(rows))]
    for ax, (label, values) in zip(axes, panels, strict=True):
        ax.bar(range(len(values)), values, color=colours)
        ax.set_xticks(range(len(values)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(label)
        for i, v in enumerate(values):
            ax.annotate(f"{v:.1f}", (i, v), ha="center", va="bottom", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=110)
    plt.close(fig)


def write_report(
    out: Path, title: str, rows: list[dict[str, Any]], extra: dict[str, Any], baseline: bool
) -> dict[str, Any]:
    """results.json, results.md and results.png, each written to a temporary name first."""
    base = next((r for r in rows if r["arm"] == "full"), None) if baseline else None
    v = verdict(rows) if baseline else None
    result = {"title": title, "rows": rows, "verdict": v, **extra, "environment": environment()}
    md = [f"# {title}", "", markdown_table(rows, base), ""]
    if v is not None:
        md += ["## Against the targets", "", *verdict_lines(v), ""]
    md += [
        f"Chance is {100 / 12:.1f}% (12 classes). Accuracy: multi-view eval on "
        f"{rows[0]['val_videos']} validation videos (±: one binomial standard error). Train time: "
        "the trainer's step time summed over all stages (eval, checkpoints and start-up excluded). "
        f"Memory ({rows[0]['peak_mem_kind']}, max over stages): train mem is the peak above "
        "the process's size at its first step (what training adds: activations, gradients, "
        "optimiser state); process peak also counts imports and data setup.",
        "",
        f"Budget: `{json.dumps(extra.get('budget', {}))}`",
        "",
        f"MLflow: `mlflow ui --backend-store-uri {extra.get('tracking_uri', '')}`",
        "",
    ]
    for name, text in (
        ("results.json", json.dumps(result, indent=2, default=str) + "\n"),
        ("results.md", "\n".join(md)),
    ):
        atomic_write_text(out / name, text)
    plot(rows, out / "results.png", title)
    return result


# ---------------------------------------------------------------- entry point


def run_experiment(
    out: Path,
    quick: bool,
    seed: int,
    experiment: str,
    arms_for: Any,
    title: str,
    baseline: bool,
) -> dict[str, Any]:
    """Shared by demo and ablate: inputs, base config, arms, report."""
    budget = budget_for(quick)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data_root, weights = prepare_inputs(budget, out / "cache", seed)
    uri = tracking_uri(out)
    ensure_experiment(uri, experiment, out / "mlartifacts")
    base_yaml = out / "base.yaml"
    write_base_config(
        base_yaml,
        base_overrides(budget, data_root.resolve(), weights.resolve(), seed, uri, experiment),
    )
    runs_dir = out / "runs"
    arms = arms_for(budget, runs_dir.resolve())
    summaries = run_arms(arms, base_yaml, runs_dir, run_prefix=f"{budget.name}/")
    rows = [arm_row(arm, summaries) for arm in arms]
    pretrain_meta = json.loads(weights.with_suffix(".json").read_text())
    extra = {
        "budget": describe(budget),
        "seed": seed,
        "pretrain": {k: pretrain_meta[k] for k in ("val_top1", "steps", "train_s")},
        "tracking_uri": uri,
        "experiment": experiment,
        "mlflow_runs": sorted(mlflow_run_names(uri, experiment)),
        "total_s": time.perf_counter() - t0,
    }
    result = write_report(out, title, rows, extra, baseline)
    print()
    print((out / "results.md").read_text())
    log(f"done in {extra['total_s']:.0f}s: {out / 'results.md'}, results.json, results.png")
    return result


def build_parser(prog: str, default_out: str, what: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=what)
    p.add_argument("--quick", action="store_true", help="CI-sized smoke run (a few minutes)")
    p.add_argument(
        "--out",
        default=None,
        help=f"output dir (default {default_out}, -quick suffix with --quick)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p


def run_command(
    argv: list[str],
    prog: str,
    default_out: str,
    description: str,
    experiment: str,
    arms: Any,
    title: str,
    baseline: bool,
) -> int:
    """The shared CLI body of `vivit demo` and `vivit ablate`."""
    args = build_parser(prog, default_out, description).parse_args(argv)
    out = Path(args.out or (f"{default_out}-quick" if args.quick else default_out))
    try:
        run_experiment(out, args.quick, args.seed, experiment, arms, title, baseline=baseline)
    except StageFailed as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    return run_command(
        argv,
        "vivit demo",
        "runs/demo",
        "Full fine-tuning vs naive freezing vs the two-stage frozen-spatial method on the "
        "built-in synthetic action set; writes results.md/json/png and an MLflow store.",
        EXPERIMENT,
        demo_arms,
        "vivit demo: frozen-spatial two-stage vs full fine-tuning",
        baseline=True,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
