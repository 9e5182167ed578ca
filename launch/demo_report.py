"""The demo's report: results.json, results.md (tables, targets) and results.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt_s(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f}"


def table_rows(arms: dict[str, dict[str, Any]], baseline: str | None) -> list[list[str]]:
    base_time = arms[baseline]["train_time_s_mean"] if baseline in arms else None
    rows = []
    for name, a in arms.items():
        reach = a.get("time_to_full_top1_s")
        steps = " + ".join(
            f"cache {s['steps']} views@{s['frames']}f"
            if s.get("kind") == "cache"
            else f"{s['steps']}@{s['frames']}f {s['mode']}"
            for s in a["stages"]
        )
        row = [
            name,
            steps,
            f"{a['top1_mean']:.2f} ± {a['top1_sd']:.2f}",
            f"{a['train_time_s_mean']:.0f}",
            f"{a['train_flops'] / 1e12:.2f}",
        ]
        if baseline is not None:
            row += [
                _fmt_s(reach),
                "-" if reach is None or not base_time else f"{reach / base_time:.2f}x",
            ]
        row += [f"{a['trainable_params']:,}"]
        rows.append(row)
    return rows


def render_markdown(result: dict[str, Any], baseline: str | None) -> str:
    from benchmarks.report import markdown_table

    arms = result["arms"]
    first = next(iter(arms.values()))
    seeds = first["seeds"]
    env = result["environment"]
    header = ["arm", "stages (steps@frames)", "final top-1 % (mean ± sd)", "train time s"]
    header += ["train TFLOP"]
    if baseline is not None:
        header += [f"time to {baseline}'s final top-1 s", "/ full time"]
    header += ["trainable params"]
    lines = [f"# {result['title']}", ""]
    lines += [
        f"- seeds: {seeds}; {first['val_videos']} validation videos, "
        f"{result['budget']['eval_clips']} temporal views each (chance {100 / 12:.1f}%)",
        f"- device: {env['device'].get('name')} ({env['device'].get('kind')}, "
        f"{env['device'].get('cores', '-')} cores); commit {env.get('git_commit')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()),
        f"- command: `{result['command']}`; whole run {result['total_s']:.0f} s",
        "",
    ]
    lines += markdown_table(header, table_rows(arms, baseline))
    lines += [
        f"Train time ({result['clock']} clock): the trainer's "
        + ("step time" if result["clock"] == "wall" else "process CPU time of the steps")
        + " summed over every stage of the arm (a cache build's time included; evaluation, "
        "checkpoints and start-up excluded); a multi-stage curve starts at the previous "
        "stage's cost. "
        + (
            f"Time to {baseline}'s final top-1: where the arm's mean curve first reaches the "
            f"{baseline} arm's final mean top-1 (linear between evaluation points). "
            if baseline is not None
            else ""
        )
        + "FLOPs: "
        "benchmarks/flops.py's formula (backward = 2x forward; frozen spatial forward only).",
        "",
        "![top-1 vs training time and FLOPs](results.png)",
        "",
    ]
    if result.get("cache"):
        c = result["cache"]
        lines += [
            "## Stage 2 from cached tokens",
            "",
            f"`vivit cache build` encoded {c['clips']} clips x {c['views']} view(s) once in "
            f"{c['build_s']:.0f} s ({c['bytes_per_clip'] / 1e3:.1f} kB per clip on disk), "
            f"{c['build_epochs_equivalent']:.2f}x the time of one stage-2 epoch from videos. "
            f"Stage 2 ({c['stage2_epochs']:.2f} epochs): {c['stage2_time_s_videos']:.0f} s from "
            f"videos, {c['stage2_time_s_cache']:.0f} s from the cache: cache_speedup "
            f"{c['cache_speedup']:.2f}x per epoch. Whole recipe vs full fine-tuning: "
            f"{c['two_stage_vs_full']:.2f}x from videos, {c['whole_recipe_vs_full']:.2f}x "
            "cached (cache build included).",
            "",
        ]
    if result.get("verdict"):
        lines += ["## Against the targets", ""]
        lines += markdown_table(
            ["target", "measured", "verdict"],
            [[t["target"], t["value"], "met" if t["met"] else "MISSED"] for t in result["verdict"]],
        )
    lines += [
        f"Budget: `{json.dumps(result['budget'])}`",
        "",
        f"Spatial ViT pretraining: `{json.dumps(result['pretrain'])}`",
        "",
        f"MLflow: `mlflow ui --backend-store-uri {result['tracking_uri']}`",
        "",
    ]
    return "\n".join(lines)


def write_report(out: Path, result: dict[str, Any], baseline: str | None) -> None:
    """results.json, results.md and results.png, each written atomically."""
    from benchmarks.plots import plot_time_to_accuracy
    from common.atomic import atomic_write_text

    atomic_write_text(out / "results.json", json.dumps(result, indent=1, default=str) + "\n")
    atomic_write_text(out / "results.md", render_markdown(result, baseline))
    plot_time_to_accuracy(
        {name: a["curve_mean"] for name, a in result["arms"].items()},
        out / "results.png",
        result["title"],
        target=result["arms"][baseline]["top1_mean"] if baseline in result["arms"] else None,
    )
