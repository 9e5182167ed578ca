"""results.json in, results.md out: tables per section, frozen/full ratios, targets met or missed."""

from __future__ import annotations

from typing import Any

MiB = 2**20

TARGETS = {
    "step_time": 1 / 3,
    "memory": 1 / 4,
    "frames": 4.0,
    "spatial_mfu": 0.5,
    "data": 1.2,
    "data_over_tensor_gpu": 1.05,
    "data_over_tensor_cpu": 1.15,
    "cache_speedup": 5.0,
}


def _f(value: Any, fmt: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, fmt)
    return str(value)


def _mib(value: Any) -> str:
    return "-" if value is None else f"{value / MiB:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def _group_key(row: dict[str, Any]) -> tuple:
    return (
        row["backbone"],
        row["frames"],
        row["micro_batch"],
        row["precision"],
        row["zero_stage"],
        row.get("data_root"),
    )


def data_over_tensor(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each data-fed row against the same configuration on in-memory tensors (same run).

    `data_over_tensor` = median step time including the wait for the next batch from the
    real loader / median step time on a tensor already on the device: what the input
    pipeline adds to a training step.
    """
    tensor = {
        (r["variant"], *_group_key(r)[:-1]): r
        for r in rows
        if r.get("data_root") is None and r["status"] == "ok"
    }
    out = []
    for r in rows:
        if r.get("data_root") is None or r["status"] != "ok":
            continue
        base = tensor.get((r["variant"], *_group_key(r)[:-1]))
        if base is None:
            continue
        fed = r.get("data_step_time_median_s") or r["step_time_median_s"]
        out.append(
            {
                "backbone": r["backbone"],
                "variant": r["variant"],
                "frames": r["frames"],
                "micro_batch": r["micro_batch"],
                "decoder": r.get("data_decoder"),
                "tensor_step_s": base["step_time_median_s"],
                "data_step_s": fed,
                "data_wait_median_s": r.get("data_wait_median_s"),
                "data_over_tensor": fed / base["step_time_median_s"],
            }
        )
    return out


def ratio_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """frozen/full ratios of step time and memory for every configuration that has both."""
    full = {_group_key(r): r for r in rows if r["mode"] == "full" and r["status"] == "ok"}
    out = []
    for r in rows:
        base = full.get(_group_key(r))
        if r["mode"] != "frozen" or r["status"] != "ok" or base is None:
            continue
        out.append(
            {
                "backbone": r["backbone"],
                "variant": r["variant"],
                "frames": r["frames"],
                "micro_batch": r["micro_batch"],
                "precision": r["precision"],
                "zero_stage": r["zero_stage"],
                "step_time_ratio": r["step_time_median_s"] / base["step_time_median_s"],
                "peak_mem_ratio": r["peak_mem_bytes"] / base["peak_mem_bytes"],
                "train_mem_ratio": r["train_mem_bytes"] / base["train_mem_bytes"]
                if base["train_mem_bytes"]
                else None,
                "speedup": base["step_time_median_s"] / r["step_time_median_s"],
                "cpu_time_ratio": r["step_cpu_time_median_s"] / base["step_cpu_time_median_s"]
                if r.get("mem_kind") == "cpu_peak_rss" and base.get("step_cpu_time_median_s")
                else None,
            }
        )
    return out


def _verdict(value: float | None, target: float, higher_is_better: bool) -> str:
    if value is None:
        return "no figure"
    met = value >= target if higher_is_better else value <= target
    if met:
        return "met"
    factor = target / value if higher_is_better else value / target
    return f"missed by {factor:.2f}x"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each issue target with the figure measured for it (best method variant, headline rows)."""
    out: list[dict[str, Any]] = []
    env = results.get("environment", {})
    device_kind = env.get("device", {}).get("kind", "cpu")
    mem_key = "peak_mem_ratio" if device_kind == "cuda" else "train_mem_ratio"
    train = results.get("train", {}).get("rows", [])
    tensor_rows = [r for r in train if r.get("data_root") is None]
    ratios = [r for r in ratio_rows(tensor_rows) if r["variant"] != "frozen+none"]
    by_backbone: dict[str, list[dict[str, Any]]] = {}
    for r in ratios:
        by_backbone.setdefault(r["backbone"], []).append(r)
    for backbone, rs in by_backbone.items():
        top = max(r["frames"] for r in rs)
        rs = [r for r in rs if r["frames"] == top]
        step = max(r["step_time_ratio"] for r in rs)
        mem = max((r[mem_key] for r in rs if r[mem_key] is not None), default=None)
        where = (
            f"{backbone}, T={top}, worst adapter of {', '.join(sorted(r['variant'] for r in rs))}"
        )
        out.append(
            {
                "target": "method step time <= 1/3 of full",
                "where": where,
                "value": step,
                "verdict": _verdict(step, TARGETS["step_time"], False),
            }
        )
        cpu = [r["cpu_time_ratio"] for r in rs if r["cpu_time_ratio"] is not None]
        if cpu:
            out.append(
                {
                    "target": "method step time <= 1/3 of full, in process CPU time (shared CPU)",
                    "where": where,
                    "value": max(cpu),
                    "verdict": _verdict(max(cpu), TARGETS["step_time"], False),
                }
            )
        out.append(
            {
                "target": "method peak memory <= 1/4 of full (same micro-batch)"
                + ("" if device_kind == "cuda" else "; CPU: training part of RSS"),
                "where": where,
                "value": mem,
                "verdict": _verdict(mem, TARGETS["memory"], False),
            }
        )
    for row in results.get("frames", {}).get("summary", []):
        if row.get("frames_ratio") is not None:
            out.append(
                {
                    "target": ">= 4x frames in the same memory",
                    "where": f"{row['backbone']}, B={row['micro_batch']}, budget "
                    f"{row['budget_bytes'] / 2**30:.2f} GiB",
                    "value": row["frames_ratio"],
                    "verdict": _verdict(row["frames_ratio"], TARGETS["frames"], True)
                    + (" (frozen hit the search cap)" if row.get("frozen_capped") else ""),
                }
            )
    spatial = [r for r in train if r["status"] == "ok" and r.get("spatial_fwd_mfu") is not None]
    for backbone in sorted({r["backbone"] for r in spatial}):
        best = max(r["spatial_fwd_mfu"] for r in spatial if r["backbone"] == backbone)
        out.append(
            {
                "target": "frozen spatial forward >= 50% of bf16 peak (MFU)",
                "where": backbone,
                "value": best,
                "verdict": _verdict(best, TARGETS["spatial_mfu"], True),
            }
        )
    limit = TARGETS["data_over_tensor_gpu" if device_kind == "cuda" else "data_over_tensor_cpu"]
    for r in data_over_tensor(train):
        if r["variant"] != "frozen+attn":
            continue
        out.append(
            {
                "target": f"loader-inclusive step <= {limit}x the step on in-memory tensors",
                "where": f"{r['backbone']}, {r['variant']}, T={r['frames']}, B={r['micro_batch']}, "
                f"decoder {r['decoder']}",
                "value": r["data_over_tensor"],
                "verdict": _verdict(r["data_over_tensor"], limit, False),
            }
        )
    for section, key, target, limit in (
        (
            "data",
            "consumption_ratio",
            "data pipeline >= 1.2x the clips/s the method's step consumes",
            TARGETS["data"],
        ),
        (
            "cache",
            "cache_speedup",
            "stage-2 time per epoch from videos / from the token cache >= 5",
            TARGETS["cache_speedup"],
        ),
    ):
        part = results.get(section, {})
        if part.get(key) is not None:
            value = part[key]
            verdict = _verdict(value, limit, True)
            out.append(
                {
                    "target": target,
                    "where": part.get("where", ""),
                    "value": value,
                    "verdict": verdict,
                }
            )
    return out


def _train_md(section: dict[str, Any]) -> list[str]:
    rows = section["rows"]
    lines = ["## Training step (`vivit bench train`)", ""]
    lines += [
        f"Median of {rows[0]['timed_steps'] if rows else '-'} synchronised steps after warm-up "
        "(wall time; on CPU also the process CPU time, steadier on a shared machine). "
        f"Memory: {section.get('memory_note', '')}",
        "",
        f"FLOPs formula: {section.get('flops_formula', '')}",
        "",
    ]
    body = []
    for r in rows:
        if r["status"] != "ok":
            body.append(
                [
                    *_config_cells(r),
                    r["precision"],
                    _f(r["zero_stage"]),
                    r["status"].upper(),
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                ]
            )
            continue
        body.append(
            [
                *_config_cells(r),
                r["precision"],
                _f(r["zero_stage"]),
                f"{r['step_time_median_s'] * 1e3:.1f}",
                _f(
                    r.get("step_cpu_time_median_s", 0) * 1e3
                    if r.get("mem_kind") == "cpu_peak_rss"
                    else None,
                    ".1f",
                ),
                f"{r['clips_per_s']:.2f}",
                _mib(r["peak_mem_bytes"]),
                _mib(r["train_mem_bytes"]),
                _f(r["tflops"], ".3f"),
                _f(r.get("mfu"), ".1%"),
                _f(r.get("spatial_fwd_mfu"), ".1%"),
                _f(r.get("data_wait_share"), ".1%"),
            ]
        )
    lines += _table(
        [
            "backbone",
            "variant",
            "T",
            "B",
            "precision",
            "ZeRO",
            "ms/step",
            "CPU ms/step",
            "clips/s",
            "peak MiB",
            "train MiB",
            "TFLOP/s",
            "MFU",
            "spatial fwd MFU",
            "data wait",
        ],
        body,
    )
    ratios = ratio_rows(rows)
    if ratios:
        lines += ["### frozen / full ratios (same backbone, T, B, precision, ZeRO)", ""]
        lines += _table(
            [
                "backbone",
                "variant",
                "T",
                "B",
                "step time",
                "speed-up",
                "CPU time",
                "peak mem",
                "train mem",
            ],
            [
                [
                    *_config_cells(r),
                    f"{r['step_time_ratio']:.3f}",
                    f"{r['speedup']:.2f}x",
                    _f(r["cpu_time_ratio"], ".3f"),
                    f"{r['peak_mem_ratio']:.3f}",
                    _f(r["train_mem_ratio"], ".3f"),
                ]
                for r in ratios
            ],
        )
    fed = data_over_tensor(rows)
    if fed:
        lines += ["### real data path / in-memory tensors (same configuration, same run)", ""]
        lines += _table(
            [
                "backbone",
                "variant",
                "T",
                "B",
                "decoder",
                "tensor ms",
                "data ms",
                "wait ms",
                "ratio",
            ],
            [
                [
                    *_config_cells(r),
                    str(r["decoder"]),
                    f"{r['tensor_step_s'] * 1e3:.1f}",
                    f"{r['data_step_s'] * 1e3:.1f}",
                    _f((r["data_wait_median_s"] or 0) * 1e3, ".1f"),
                    f"{r['data_over_tensor']:.3f}",
                ]
                for r in fed
            ],
        )
    phased = [r for r in rows if r["status"] == "ok" and r.get("phase_s")]
    if phased:
        lines += [
            "### Where a step goes (in-memory tensors; median ms of each phase, timed apart)",
            "",
            "`forward` includes the loss and, for the frozen variants, the spatial forward under "
            "no_grad (shown apart); `rest of forward` is the adapter, temporal transformer and head.",
            "",
        ]
        lines += _table(
            [
                "backbone",
                "variant",
                "T",
                "B",
                "step",
                "forward",
                "spatial fwd",
                "rest of forward",
                "backward",
                "optimizer",
            ],
            [[*_phase_cells(r)] for r in phased],
        )
    return lines


def _config_cells(r: dict[str, Any]) -> list[str]:
    """The cells that name a configuration, first in every per-configuration table."""
    return [r["backbone"], r["variant"], str(r["frames"]), str(r["micro_batch"])]


def _phase_cells(r: dict[str, Any]) -> list[str]:
    p = r["phase_s"]
    spatial = p.get("spatial_forward")
    return [
        *_config_cells(r),
        f"{r['step_time_median_s'] * 1e3:.1f}",
        f"{p['forward'] * 1e3:.1f}",
        _f(None if spatial is None else spatial * 1e3, ".1f"),
        _f(None if spatial is None else max(0.0, p["forward"] - spatial) * 1e3, ".1f"),
        f"{p['backward'] * 1e3:.1f}",
        f"{p['optimizer'] * 1e3:.1f}",
    ]


def _frames_md(section: dict[str, Any]) -> list[str]:
    lines = ["## Frames and micro-batch in a memory budget (`vivit bench frames`)", ""]
    lines += [section.get("note", ""), ""]
    lines += _table(
        ["backbone", "variant", "budget GiB", "max T (B fixed)", "max B (T fixed)", "probes"],
        [
            [
                r["backbone"],
                r["variant"],
                f"{r['budget_bytes'] / 2**30:.2f}",
                f"{_f(r['max_frames'])} (B={r['micro_batch']})"
                + (" cap" if r["frames_capped"] else ""),
                f"{_f(r['max_batch'])} (T={r['batch_frames']})"
                + (" cap" if r["batch_capped"] else ""),
                str(r["probes"]),
            ]
            for r in section.get("limits", [])
        ],
    )
    if section.get("summary"):
        lines += _table(
            [
                "backbone",
                "max T full",
                "max T frozen",
                "frozen/full frames",
                "max B full",
                "max B frozen",
                "frozen/full batch",
            ],
            [
                [
                    r["backbone"],
                    _f(r["full_frames"]),
                    _f(r["frozen_frames"]),
                    (">= " if r.get("frozen_capped") else "") + _f(r["frames_ratio"], ".2f"),
                    _f(r["full_batch"]),
                    _f(r["frozen_batch"]),
                    _f(r["batch_ratio"], ".2f"),
                ]
                for r in section["summary"]
            ],
        )
    return lines


def _recipe_md(section: dict[str, Any]) -> list[str]:
    lines = ["## Whole-recipe cost (`vivit bench recipe`)", ""]
    lines += [f"Formula: {section['formula']}", ""]
    lines += _table(
        [
            "backbone",
            "T",
            "B",
            "stage-1 B",
            "epochs",
            "clips/epoch",
            "stage-1 share",
            "method h",
            "full h",
            "time ratio",
            "method peak MiB",
            "full peak MiB",
            "memory ratio",
        ],
        [
            [
                r["backbone"],
                str(r["frames"]),
                str(r["micro_batch"]),
                str(r.get("stage1_micro_batch", r["micro_batch"])),
                str(r["epochs"]),
                str(r["clips_per_epoch"]),
                f"{r['stage1_share']:.2f}",
                _f(r.get("method_hours"), ".3g"),
                _f(r.get("full_hours"), ".3g"),
                _f(r.get("time_ratio"), ".3f"),
                _mib(r.get("method_peak_bytes")),
                _mib(r.get("full_peak_bytes")),
                _f(r.get("memory_ratio"), ".3f"),
            ]
            for r in section["rows"]
        ],
    )
    lines += ["Measured steps:", ""]
    lines += _table(
        ["part", "config", "status", "ms/step", "peak MiB", "train MiB"],
        [
            [
                p["part"],
                p["name"],
                p["status"],
                _f(p.get("step_time_median_s", 0) * 1e3, ".1f") if p["status"] == "ok" else "-",
                _mib(p.get("peak_mem_bytes")),
                _mib(p.get("train_mem_bytes")),
            ]
            for p in section.get("parts", [])
        ],
    )
    return lines


def _cache_md(section: dict[str, Any]) -> list[str]:
    lines = ["## Stage 2 from cached spatial tokens (`vivit bench cache`)", ""]
    build = section.get("build", {})
    if build.get("status") != "ok":
        return lines + [f"cache build: {build.get('status')} ({build.get('error', '')})", ""]
    rows = [
        ["cache build", f"{_f(build['build_clips_per_s'])} clips/s", ""],
        ["stored per clip", f"{build['bytes_per_clip'] / 1e3:.1f} kB", build["patch_tokens"]],
    ]
    for name in ("videos", "cache"):
        row = section.get(name, {})
        what = f"stage-2 step from {'the cache' if name == 'cache' else 'videos'}"
        if row.get("status") == "ok":
            wait = f"loader-inclusive; wait {row['data_wait_median_s'] * 1e3:.1f} ms"
            rows.append([what, f"{row['data_step_time_median_s'] * 1e3:.1f} ms", wait])
        else:
            rows.append([what, str(row.get("status", "-")), str(row.get("error", ""))])
    if section.get("cache_speedup") is not None:
        even = section["break_even_epochs"]
        rows += [
            ["cache_speedup (per epoch)", f"{section['cache_speedup']:.2f}x", section["where"]],
            ["build cost", f"{section['build_epochs_equivalent']:.2f} epochs from videos", ""],
            ["cache pays for itself after", "never" if even is None else f"{even:.2f} epochs", ""],
        ]
    return lines + _table(["figure", "value", "note"], rows)


def _data_md(section: dict[str, Any]) -> list[str]:
    lines = ["## Data pipeline (`vivit bench data`)", ""]
    res = section.get("result", {})
    lines += _table(
        ["figure", "value"], [[k, _f(v)] for k, v in res.items() if not isinstance(v, (dict, list))]
    )
    for n, rate in res.get("dali_clips_per_s_by_pipelines", {}).items():
        lines.append(f"- DALI with data.dali_pipelines={n}: {_f(rate)} clips/s")
    if res.get("dali_clips_per_s_by_pipelines"):
        lines.append("")
    if section.get("consumption_ratio") is not None:
        lines += [
            f"Delivered / consumed by the method's step ({section.get('where', '')}): "
            f"{section['consumption_ratio']:.2f}x",
            "",
        ]
    return lines


def _decode_md(section: dict[str, Any]) -> list[str]:
    dali = section.get("dali") or "DALI (not installed)"
    lines = ["## Decoding a clip (`vivit bench decode`)", "", section.get("note", ""), ""]
    lines += _table(
        [
            "video frames",
            "T",
            dali,
            f"{dali}, cut to key-frame groups",
            "PyAV, key-frame jumps",
            "PyAV, from the start",
            "from start / jumps",
            f"{dali} / jumps",
            f"{dali} whole / cut",
        ],
        [
            [
                str(r["length"]),
                str(r["frames"]),
                _f(r["dali_ms"]),
                _f(r.get("dali_cut_ms")),
                _f(r["pyav_seek_ms"]),
                _f(r["pyav_from_start_ms"]),
                _f(r["from_start_over_seek"]),
                _f(r["dali_over_pyav_seek"]),
                _f(r.get("dali_over_dali_cut")),
            ]
            for r in section.get("rows", [])
        ],
    )
    lines += ["One frame, the first vs the last of the video (ms per clip):", ""]
    lines += _table(
        [
            "video frames",
            f"{dali} first",
            f"{dali} last",
            f"{dali} last, cut",
            "last / first",
            "PyAV jumps first",
            "PyAV jumps last",
            "last / first",
        ],
        [
            [
                str(r["length"]),
                _f(r["dali_early_ms"]),
                _f(r["dali_late_ms"]),
                _f(r.get("dali_cut_late_ms")),
                _f(r["dali_late_over_early"]),
                _f(r["pyav_seek_early_ms"]),
                _f(r["pyav_seek_late_ms"]),
                _f(r["pyav_seek_late_over_early"]),
            ]
            for r in section.get("one_frame", [])
        ],
    )
    return lines


def render(results: dict[str, Any]) -> str:
    """The whole results.md."""
    env = results.get("environment", {})
    dev = env.get("device", {})
    versions = env.get("versions", {})
    lines = [
        f"# frozen-vivit benchmarks: {results.get('name', '')}",
        "",
        f"- device: {dev.get('name')} ({dev.get('kind')}"
        + (f", {dev['cores']} cores" if "cores" in dev else "")
        + f", {(dev.get('memory_bytes') or 0) / 2**30:.0f} GiB)",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- git commit: {env.get('git_commit')}",
        f"- CPU threads per configuration process: {env.get('cpu_threads_per_config')}",
        "- commands: " + "; ".join(f"`{c}`" for c in results.get("commands", [])),
        "",
    ]
    tgt = targets(results)
    if tgt:
        lines += ["## Targets", ""]
        if dev.get("kind") != "cuda":
            lines += [
                "The targets are set for a GPU (bf16, ZeRO-2). This is a CPU run: the same ratios "
                "are shown for the small backbones measured here, and MFU targets have no figure.",
                "",
            ]
        lines += _table(
            ["target", "where", "measured", "verdict"],
            [[t["target"], t["where"], _f(t["value"], ".3f"), t["verdict"]] for t in tgt],
        )
    for key, fn in (
        ("train", _train_md),
        ("frames", _frames_md),
        ("recipe", _recipe_md),
        ("data", _data_md),
        ("cache", _cache_md),
        ("decode", _decode_md),
    ):
        if key in results:
            lines += fn(results[key])
    return "\n".join(lines) + "\n"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table (header, separator, rows) followed by a blank line."""
    return _table(header, rows)
