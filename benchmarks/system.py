"""Where a benchmark ran: device, library versions, commit, command line (goes into results.json)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """HEAD (with `-dirty` for uncommitted changes), or `VIVIT_GIT_COMMIT` when set: the GPU
    machine runs a copy of the working tree whose git state is not the one being measured."""
    pinned = os.environ.get("VIVIT_GIT_COMMIT", "").strip()
    if pinned:
        return pinned
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def device_info() -> dict[str, object]:
    """The accelerator this process sees (GPU 0, else the CPU)."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return {
            "kind": "cuda",
            "name": torch.cuda.get_device_name(0),
            "memory_bytes": int(props.total_memory),
            "count": torch.cuda.device_count(),
        }
    return {
        "kind": "cpu",
        "name": _cpu_name(),
        "cores": len(os.sched_getaffinity(0)),
        "memory_bytes": _total_ram(),
    }


def _total_ram() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def hardware_tag(info: dict[str, object]) -> str:
    """Short file-name-safe hardware name, e.g. `h100-80gb-hbm3` or `cpu-2core`."""
    if info["kind"] == "cuda":
        name = str(info["name"]).lower().replace("nvidia", "")
        return re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "gpu"
    return f"cpu-{info['cores']}core"


def threads() -> dict[str, object]:
    """Intra-op threads of this process and the OMP_NUM_THREADS its child runs inherit: on a
    2-core CPU a data worker beside a 2-thread step contends for a core, so timings depend on it."""
    import torch

    return {"torch": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def environment(argv: list[str]) -> dict[str, object]:
    """Everything needed to reproduce or compare a results.json."""
    return {
        "device": device_info(),
        "threads": threads(),
        "versions": {
            "python": platform.python_version(),
            "torch": _version("torch"),
            "deepspeed": _version("deepspeed"),
            "timm": _version("timm"),
            "dali": _version("nvidia-dali-cuda130") or _version("nvidia-dali-cuda120"),
            "webdataset": _version("webdataset"),
        },
        "git_commit": _git_commit(),
        "command": " ".join(["vivit", "bench", *argv]),
        "python_executable": sys.executable,
        "platform": platform.platform(),
    }
