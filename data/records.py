"""What a shard record must hold to be trained on: a label in range, metadata within sane bounds.

A record that fails is a bad record: the loader skips and counts it (`bad_label_skipped`,
`bad_meta_skipped` in its stats) and training goes on. Metadata only steers frame sampling and
the crop's aspect ratio; the crop itself is relative to the decoded frame, so metadata that
disagrees with the video within these bounds cannot make a decoder read outside the frame.
"""

from __future__ import annotations

import json
import math

MAX_FRAMES = 1_000_000
"""More frames than any real clip (~9 h at 30 fps): larger counts are corrupt metadata."""
MAX_SIDE = 16_384
"""Largest frame width/height accepted in metadata (16K video)."""


class BadRecord(ValueError):
    """A record whose label or metadata cannot be trained on; `kind` is `label` or `meta`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def skip_limit(shards: list[tuple[str, int]]) -> int:
    """Unusable records in a row that stop a stream: more than a whole pass over `shards`
    (`(path, records)` pairs), and never fewer than 1000."""
    return max(1000, sum(count for _, count in shards))


class SkipGuard:
    """Counts records skipped since the last usable one, so that a stream of nothing but bad
    records (a corrupt or mislabelled split) is an error instead of an endless silent loop."""

    def __init__(self, limit: int, counters: dict[str, int], where: str = "") -> None:
        self.limit, self.counters, self.where = limit, counters, where
        self.since_good = 0

    def good(self) -> None:
        self.since_good = 0

    def skipped(self, n: int = 1) -> None:
        self.since_good += n
        if self.since_good > self.limit:
            counts = {k: v for k, v in self.counters.items() if k.endswith("_skipped")}
            raise RuntimeError(
                f"no usable record in the last {self.since_good} read{self.where} ({counts}): "
                "the split is corrupt or mislabelled (the first bad record is logged above)"
            )


def record_label(raw: bytes, num_classes: int) -> int:
    """The `.cls` member as a class index in `[0, num_classes)`."""
    text = bytes(raw).decode("utf-8", "replace").strip()
    try:
        label = int(text)
    except ValueError:
        raise BadRecord("label", f".cls {text[:40]!r} is not an integer") from None
    if not 0 <= label < num_classes:
        raise BadRecord("label", f".cls {label} outside [0, {num_classes})")
    return label


def _bounded_int(meta: dict, key: str, limit: int) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRecord("meta", f".json {key}={value!r} is not a number")
    if not math.isfinite(value) or value != int(value) or not 1 <= value <= limit:
        raise BadRecord("meta", f".json {key}={value!r} outside 1..{limit}")
    return int(value)


def record_meta(raw: bytes) -> dict:
    """The `.json` member with `frames`, `height`, `width` checked to be whole numbers in bounds."""
    try:
        meta = json.loads(bytes(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRecord("meta", f".json is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise BadRecord("meta", f".json is a {type(meta).__name__}, expected an object")
    meta["frames"] = _bounded_int(meta, "frames", MAX_FRAMES)
    meta["height"] = _bounded_int(meta, "height", MAX_SIDE)
    meta["width"] = _bounded_int(meta, "width", MAX_SIDE)
    return meta
