"""One screen after the GPU check: each step's outcome, each GPU target met or missed, tests.

Reads what `run.sh` left in its work directory (steps.tsv, pytest.xml, results/results.json,
demo/results.json); writes summary.md. A missing input is reported as missing, never guessed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.report import data_over_tensor, ratio_rows, targets  # noqa: E402

MiB = 2**20
NCCL_SHUTDOWN = "destroy_process_group() was not called"
"""NCCL's exit warning: every `vivit train` of the 2026-11-26 check printed it; since 90d553b
train, eval and cache build leave their process group, so the check should show none."""
_WARNING = re.compile(r"warning|error\b|traceback", re.IGNORECASE)
_NUMBERS = re.compile(r"\d+")


def _steps(path: Path) -> list[str]:
    lines = ["| step | exit | seconds | limit s |", "|---|---|---|---|"]
    if not path.is_file():
        return ["no steps.tsv"]
    for raw in path.read_text().splitlines():
        name, rc, secs, limit = (raw.split("\t") + ["", "", "", ""])[:4]
        shown = {"0": "ok", "124": "TIMED OUT"}.get(
            rc, rc if not rc.isdigit() else f"FAILED ({rc})"
        )
        lines.append(f"| {name} | {shown} | {secs} | {limit} |")
    return lines


def _pytest(path: Path) -> list[str]:
    if not path.is_file():
        return ["pytest: no report (step not run or killed)"]
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return ["pytest: unreadable report"]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    lines = [
        f"pytest: {counts['tests']} tests, {counts['failures']} failed, {counts['errors']} errors, "
        f"{counts['skipped']} skipped"
    ]
    for case in suite.iter("testcase"):
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            msg = (bad.get("message") or "").splitlines()[0][:160] if bad.get("message") else ""
            lines.append(f"- FAILED {case.get('classname')}::{case.get('name')}: {msg}")
        elif case.find("skipped") is None and "gpu" in (case.get("classname") or ""):
            lines.append(f"- passed {case.get('classname')}::{case.get('name')}")
    return lines


def _train(results: dict[str, Any]) -> list[str]:
    rows = results.get("train", {}).get("rows", [])
    if not rows:
        return ["bench train: no rows"]
    lines = [
        "| config | data | status | ms/step | peak MiB | MFU | spatial fwd MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = r["status"] == "ok"
        lines.append(
            f"| {r['name']} | {'loader' if r.get('data_root') else 'tensor'} | {r['status']}"
            + (f": {str(r.get('error', ''))[:80]}" if not ok else "")
            + f" | {r['step_time_median_s'] * 1e3:.1f}" * ok
            + " | -" * (not ok)
            + (f" | {r['peak_mem_bytes'] / MiB:.0f}" if ok else " | -")
            + (f" | {r['mfu']:.1%}" if ok and r.get("mfu") is not None else " | -")
            + (f" | {r['spatial_fwd_mfu']:.1%} |" if ok and r.get("spatial_fwd_mfu") else " | - |")
        )
    for r in ratio_rows([r for r in rows if r.get("data_root") is None]):
        lines.append(
            f"- {r['variant']} / full: step {r['step_time_ratio']:.3f}, peak memory "
            f"{r['peak_mem_ratio']:.3f}"
        )
    for r in rows:
        if r["status"] == "ok" and r.get("phase_s"):
            p = r["phase_s"]
            spatial = p.get("spatial_forward")
            lines.append(
                f"- {r['variant']} step phases (ms): forward {p['forward'] * 1e3:.1f}"
                + (f" (spatial {spatial * 1e3:.1f})" if spatial is not None else "")
                + f", backward {p['backward'] * 1e3:.1f}, optimizer {p['optimizer'] * 1e3:.1f}"
            )
    for r in data_over_tensor(rows):
        lines.append(
            f"- {r['variant']} loader-inclusive / tensor step: {r['data_over_tensor']:.3f} "
            f"({r['decoder']}, wait {(r['data_wait_median_s'] or 0) * 1e3:.1f} ms)"
        )
    return lines


def _optimizers(results: dict[str, Any], torch_adamw: Path) -> list[str]:
    """The method's tensor step under torch's AdamW (`bench_adam`) beside bench train's."""
    if not torch_adamw.is_file():
        return []
    theirs = json.loads(torch_adamw.read_text()).get("train", {}).get("rows", [])
    rows = results.get("train", {}).get("rows", [])
    ours = {r["name"]: r for r in rows if not r.get("data_root")}  # its loader row shares the name
    lines = []
    for r in theirs:
        base = ours.get(r["name"])
        if r["status"] != "ok" or r.get("data_root") or not base or base["status"] != "ok":
            continue
        lines.append(
            f"- {r['variant']} tensor step: {r['step_time_median_s'] * 1e3:.1f} ms with torch "
            f"AdamW vs {base['step_time_median_s'] * 1e3:.1f} ms in bench train"
        )
    return lines


def _cache(section: dict[str, Any]) -> list[str]:
    """`bench_cache`: build clips/s, the stage-2 step from videos and from the token cache."""
    build = section.get("build", {})
    if not build:
        return ["bench cache: no figures"]
    if build.get("status") != "ok":
        return [f"bench cache: build {build.get('status')} ({build.get('error', '')})"]
    lines = [
        f"- cache build: {build['build_clips_per_s']:.1f} clips/s, "
        f"{build['bytes_per_clip'] / 1e3:.1f} kB per clip view ({build['patch_tokens']} patch tokens)"
    ]
    if section.get("cache_speedup") is None:
        rows = [section.get(k, {}) for k in ("videos", "cache")]
        return lines + [f"- step rows: {', '.join(str(r.get('status')) for r in rows)}"]
    lines.append(
        f"- stage-2 step, loader-inclusive: {section['videos_clips_per_s']:.1f} clips/s from videos, "
        f"{section['cache_clips_per_s']:.1f} from the cache -> cache_speedup "
        f"{section['cache_speedup']:.2f}x; the build costs {section['build_epochs_equivalent']:.2f} "
        "epochs from videos"
    )
    return lines


def _decode(path: Path) -> list[str]:
    """`bench_decode`: whether DALI seeks (the last frame of a long video costs about what the
    first does) and what a clip costs against PyAV with key-frame jumps."""
    if not path.is_file():
        return ["bench decode: no results.json"]
    section = json.loads(path.read_text()).get("decode", {})
    dali = section.get("dali") or "DALI"
    lines = []
    for r in section.get("one_frame", []):
        late = r.get("dali_late_over_early")
        lines.append(
            f"- {r['length']}-frame videos, one frame: {dali} first {_ms(r.get('dali_early_ms'))}, "
            f"last {_ms(r.get('dali_late_ms'))} (last/first {_x(late)}), last from the cut video "
            f"{_ms(r.get('dali_cut_late_ms'))}; PyAV jumps last/first "
            f"{_x(r.get('pyav_seek_late_over_early'))}"
        )
    for r in section.get("rows", []):
        lines.append(
            f"- {r['length']} frames, T={r['frames']}: {dali} {_ms(r.get('dali_ms'))} per clip, "
            f"on the cut video {_ms(r.get('dali_cut_ms'))} (cut included), "
            f"PyAV jumps {_ms(r.get('pyav_seek_ms'))}, PyAV from the start "
            f"{_ms(r.get('pyav_from_start_ms'))}"
        )
    return lines or ["bench decode: no rows"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _demo(path: Path) -> list[str]:
    if not path.is_file():
        return ["demo: no results.json"]
    res = json.loads(path.read_text())
    lines = [f"demo ({res.get('title', '')}):"]
    arms = res.get("arms")
    if isinstance(arms, dict):
        for name, a in arms.items():
            lines.append(
                f"- {name}: top-1 {a.get('top1_mean')}, train {a.get('train_time_s_mean')} s"
            )
    for r in res.get("rows", []):
        lines.append(
            f"- {r.get('arm')}: top-1 {r.get('top1', 0):.2f}%, train {r.get('train_time_s', 0):.1f} s, "
            f"median step {r.get('step_time_median_s', 0) * 1e3:.1f} ms"
        )
    return lines


def _warnings(log: Path | None, shown: int = 12) -> list[str]:
    """The warning and error lines of run.log, numbers masked so that repeats group (pids,
    timestamps), most frequent first; NCCL's exit warning counted on its own."""
    if log is None or not log.is_file():
        return ["run.log: not found"]
    counts: Counter[str] = Counter()
    nccl = 0
    for line in log.read_text(errors="replace").splitlines():
        nccl += NCCL_SHUTDOWN in line
        if _WARNING.search(line):
            counts[_NUMBERS.sub("#", line.strip()).replace("`", "'")[:200]] += 1
    lines = [f"- NCCL's '{NCCL_SHUTDOWN}': {nccl} time(s) (expected 0)"]
    lines += [f"- {n}x `{text}`" for text, n in counts.most_common(shown)]
    if len(counts) > shown:
        lines.append(f"- and {len(counts) - shown} more distinct lines")
    return lines


def summarise(work: Path, results_dir: Path, dry_run: bool, log: Path | None = None) -> str:
    res_path = results_dir / "results.json"
    results = json.loads(res_path.read_text()) if res_path.is_file() else {}
    env = results.get("environment", {})
    lines = [
        "# vivit GPU check" + (" (DRY RUN on CPU: tiny sizes, no GPU figures)" if dry_run else ""),
        "",
        f"- device: {env.get('device', {}).get('name')}; versions: "
        + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()),
        f"- commit: {env.get('git_commit')}",
        "",
        "## Steps",
        "",
        *_steps(work / "steps.tsv"),
        "",
        "## Targets",
        "",
    ]
    tgt = targets(results) if results else []
    lines += [
        f"- {t['target']} [{t['where']}]: {t['value'] if t['value'] is None else format(t['value'], '.3f')} -> {t['verdict']}"
        for t in tgt
    ] or ["no target figures (see Steps)"]
    for name, part in (("data", results.get("data", {})), ("frames", results.get("frames", {}))):
        if name == "data" and part.get("result"):
            r = part["result"]
            lines.append(
                f"- data pipeline: {r.get('dali_decoder')} {r.get('dali_clips_per_s', 0):.1f} clips/s vs "
                f"PyAV DataLoader {r.get('pyav_clips_per_s', 0):.1f} clips/s ({r.get('dali_over_pyav', 0):.2f}x); "
                f"DALI on whole videos (data.gop_trim=false) {r.get('dali_whole_videos_clips_per_s', 0):.1f} clips/s"
            )
            if "dali_stage1_clips_per_s" in r:
                lines.append(
                    f"- stage-1 shape (T={r['stage1_frames']}, B={r['stage1_batch_size']}): DALI "
                    f"{r['dali_stage1_clips_per_s']:.1f} clips/s, {r['dali_stage1_repeat_aug']} clips "
                    f"per decoded video (data.repeat_aug) {r['dali_stage1_repeat_clips_per_s']:.1f} "
                    f"clips/s ({r['stage1_repeat_over_plain']:.2f}x)"
                )
            sweep = r.get("dali_clips_per_s_by_pipelines", {})
            if len(sweep) > 1:
                lines.append(
                    "- DALI clips/s by data.dali_pipelines: "
                    + ", ".join(f"{n}: {rate:.1f}" for n, rate in sweep.items())
                )
        if name == "frames":
            for s in part.get("summary", []):
                lines.append(
                    f"- frames at {s['budget_bytes'] / 2**30:.0f} GiB, B={s['micro_batch']}: full T<={s['full_frames']}, "
                    f"{s['variant']} T<={s['frozen_frames']}"
                    + (" (cap)" if s.get("frozen_capped") else "")
                )
    lines += ["", "## Training step (bench train)", "", *_train(results)]
    lines += [*_optimizers(results, results_dir / "torch-adamw" / "results.json"), ""]
    lines += [
        "## Stage 2 from cached tokens (bench cache)",
        "",
        *_cache(results.get("cache", {})),
        "",
    ]
    lines += [
        "## Decoding a clip (bench decode)",
        "",
        *_decode(results_dir / "decode" / "results.json"),
        "",
    ]
    lines += ["## Tests", "", *_pytest(work / "pytest.xml"), ""]
    lines += ["## Demo --quick", "", *_demo(work / "demo" / "results.json"), ""]
    lines += ["## Warnings and errors in run.log", "", *_warnings(log), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dry-run", type=int, default=0)
    p.add_argument("--log", type=Path, default=None, help="run.log, scanned for warnings")
    args = p.parse_args(argv)
    text = summarise(args.work, args.results, bool(args.dry_run), args.log)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
