"""Step time and memory vs frames, one PNG per backbone (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common.atomic import atomic_save_figure  # noqa: E402


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def plot_train(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """`train_<backbone>.png`: ms/step and peak / training memory against T, a line per variant."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("data_root") is None]
    written = []
    for backbone in sorted({r["backbone"] for r in ok}):
        mine = [r for r in ok if r["backbone"] == backbone]
        fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
        for variant in sorted({r["variant"] for r in mine}):
            pts = sorted(
                ((r["frames"], r) for r in mine if r["variant"] == variant), key=lambda p: p[0]
            )
            # One line per variant: the first micro-batch/precision seen for it keeps lines comparable.
            first = pts[0][1]
            pts = [
                (t, r)
                for t, r in pts
                if (r["micro_batch"], r["precision"], r["zero_stage"])
                == (first["micro_batch"], first["precision"], first["zero_stage"])
            ]
            xs = [t for t, _ in pts]
            (line,) = ax_t.plot(
                xs, [r["step_time_median_s"] * 1e3 for _, r in pts], "o-", label=variant
            )
            color = line.get_color()
            ax_m.plot(
                xs,
                [r["peak_mem_bytes"] / 2**20 for _, r in pts],
                "o-",
                color=color,
                label=f"{variant} peak",
            )
            ax_m.plot(
                xs,
                [r["train_mem_bytes"] / 2**20 for _, r in pts],
                "x--",
                color=color,
                label=f"{variant} training part",
            )
        b = mine[0]["micro_batch"]
        ax_t.set(
            xlabel="frames T", ylabel="ms / step (median)", title=f"{backbone}: step time, B={b}"
        )
        ax_m.set(
            xlabel="frames T", ylabel="MiB", title=f"{backbone}: memory ({mine[0]['mem_kind']})"
        )
        for ax in (ax_t, ax_m):
            ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"train_{_slug(backbone)}.png"
        atomic_save_figure(fig, path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def plot_time_to_accuracy(
    curves: dict[str, list[dict[str, Any]]],
    path: Path,
    title: str,
    target: float | None = None,
) -> Path:
    """Top-1 against training time and against training FLOPs, a line per arm.

    Each curve point has `train_time_s`, `flops`, `top1_mean` and `top1_sd` (over seeds): the
    line is the mean, the band +- one sd. `target` draws full fine-tuning's final top-1.
    """
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    colours = itertools.cycle(c["color"] for c in plt.rcParams["axes.prop_cycle"])
    for (name, curve), colour in zip(curves.items(), colours, strict=False):
        pts = [p for p in curve if p["top1_mean"] is not None]
        if not pts:
            continue
        for ax, key, scale in ((axes[0], "train_time_s", 1.0), (axes[1], "flops", 1e-12)):
            xs = [p[key] * scale for p in pts]
            mean = [p["top1_mean"] for p in pts]
            sd = [p["top1_sd"] or 0.0 for p in pts]
            ax.plot(xs, mean, "o-", color=colour, label=name, ms=4)
            ax.fill_between(
                xs,
                [m - s for m, s in zip(mean, sd, strict=True)],
                [m + s for m, s in zip(mean, sd, strict=True)],
                color=colour,
                alpha=0.18,
                lw=0,
            )
    for ax, xlabel in zip(axes, ("training time s", "training TFLOP"), strict=True):
        if target is not None:
            ax.axhline(target, color="grey", ls="--", lw=0.8, label="full's final top-1")
        ax.set(xlabel=xlabel, ylabel="val top-1 % (mean ± sd over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
