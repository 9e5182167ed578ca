"""The results directory: `benchmarks/results/<model>_<hardware>_<date>/` with JSON, Markdown, PNGs.

Each `vivit bench` subcommand adds its own section to `results.json` (earlier sections from
other subcommands in the same directory are kept), then results.md and the plots are
rebuilt from the whole file.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path
from typing import Any

from benchmarks.plots import plot_train
from benchmarks.report import render, targets
from benchmarks.system import REPO, hardware_tag
from common.atomic import atomic_write_text

RESULTS_ROOT = REPO / "benchmarks" / "results"


def default_dir(model_label: str, device: dict[str, Any], today: dt.date | None = None) -> Path:
    model = re.sub(r"[^A-Za-z0-9]+", "-", model_label).strip("-").lower()
    date = (today or dt.date.today()).isoformat()
    return RESULTS_ROOT / f"{model}_{hardware_tag(device)}_{date}"


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null so the file stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def write_section(
    out_dir: Path, name: str, section: dict[str, Any], environment: dict[str, Any]
) -> dict[str, Any]:
    """Merge `section` into out_dir/results.json and rebuild results.md and the plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    results["name"] = out_dir.name
    results["environment"] = environment
    section = {**section, "environment": environment}
    results[name] = section
    commands = [c for c in results.get("commands", []) if c != environment["command"]]
    results["commands"] = [*commands, environment["command"]]
    results["targets"] = targets(results)
    results = _clean(results)
    _write_text(path, json.dumps(results, indent=1) + "\n")
    _write_text(out_dir / "results.md", render(results))
    if "train" in results:
        plot_train(results["train"]["rows"], out_dir)
    return results
