"""Run-directory files: `metrics.jsonl` (append, one object per line) and atomic JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary name and rename, so readers never see half a file."""
    atomic_write_text(
        path, json.dumps({k: _clean(v) for k, v in data.items()}, indent=2, default=str)
    )


class MetricsLog:
    """Appends one JSON object per logged step or eval (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as fh:
                fh.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")

    def truncate_after(self, step: int) -> int:
        """Drop the records of steps after `step` (a resumed run logs them again) and any line
        a killed process left half written; returns how many lines were dropped."""
        if not self.enabled or not self.path.is_file():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
                keep = int(record["step"]) <= step
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                keep = False
            if keep:
                kept.append(line)
            else:
                dropped += 1
        if dropped:
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        return dropped
