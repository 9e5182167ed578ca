"""`vivit shards inspect`: check a shard directory against its manifest and summarise it.

Disagreement between manifest and tars (counts, keys, missing or extra shards) is an error,
because readers trust the manifest's counts to split evaluation exactly across ranks.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import av

from data.labels import direction_classes
from data.manifest import VIDEO_EXTS, read_manifest


@dataclass
class InspectReport:
    summary: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    decode_failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problems and no test-decode failures (either makes `vivit shards inspect` fail)."""
        return not self.problems and not self.decode_failures


def _records(tar_path: Path) -> dict[str, dict[str, bytes]]:
    records: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            f = tar.extractfile(member)
            assert f is not None
            records.setdefault(key, {})[ext] = f.read()
    return records


def _decode_count(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as c:
        return sum(1 for _ in c.decode(video=0))


def _range(values: list) -> list | None:
    return [min(values), max(values)] if values else None


def flip_lines(summary: dict) -> list[str]:
    """What a horizontal flip does to this class set, for `vivit shards inspect`."""
    pairs = summary["flip_pairs"]
    paired = {c for pair in pairs for c in pair}
    lines = []
    if summary["direction_classes"]:
        lines.append(f"direction classes: {', '.join(summary['direction_classes'])}")
    if pairs:
        shown = ", ".join(f"{a} <-> {b}" for a, b in pairs)
        lines.append(f"flip pairs (relabelled under data.flip=always): {shown}")
    unpaired = [c for c in summary["direction_classes"] if c not in paired]
    if unpaired:
        lines.append(f"no flip partner (data.flip=always keeps their label): {', '.join(unpaired)}")
    if not summary["flip_safe"]:
        lines.append("data.flip=auto does not flip this set")
    return lines


def inspect_shards(root: str | Path, *, decode_samples: int = 8) -> InspectReport:
    root = Path(root)
    report = InspectReport()
    manifest = read_manifest(root)
    num_classes = len(manifest["classes"])
    classes = manifest["classes"]
    report.summary = {
        "classes": classes,
        "flip_safe": manifest["flip_safe"],
        "direction_classes": direction_classes(classes),
        "flip_pairs": [[classes[a], classes[b]] for a, b in manifest["flip_pairs"]],
        "splits": {},
    }
    listed: set[str] = set()
    for split, entry in manifest["splits"].items():
        seen_keys: set[str] = set()
        codecs, sizes, durations, labels = set(), [], [], set()
        decoded = 0
        total = 0
        for shard in entry["shards"]:
            listed.add(shard["name"])
            path = root / shard["name"]
            if not path.is_file():
                report.problems.append(
                    f"{split}: shard {shard['name']} listed in manifest is missing"
                )
                continue
            try:
                records = _records(path)
            except tarfile.TarError as e:
                report.problems.append(
                    f"{split}: shard {shard['name']} is not a readable tar ({e})"
                )
                continue
            if len(records) != shard["count"]:
                report.problems.append(
                    f"{split}: shard {shard['name']} has {len(records)} records, manifest says {shard['count']}"
                )
            total += len(records)
            for key, files in records.items():
                where = f"{split}: {shard['name']} key {key}"
                if key in seen_keys:
                    report.problems.append(f"{where}: duplicate key")
                seen_keys.add(key)
                video_ext = next((e for e in VIDEO_EXTS if e in files), None)
                if video_ext is None or "cls" not in files or "json" not in files:
                    report.problems.append(f"{where}: incomplete record (has {sorted(files)})")
                    continue
                try:
                    label = int(files["cls"])
                    meta = json.loads(files["json"])
                except ValueError as e:
                    report.problems.append(f"{where}: unreadable cls/json ({e})")
                    continue
                if not 0 <= label < num_classes:
                    report.problems.append(f"{where}: class {label} outside 0..{num_classes - 1}")
                labels.add(label)
                codecs.add(meta.get("codec", "?"))
                sizes.append((meta.get("width", 0), meta.get("height", 0)))
                if meta.get("fps"):
                    durations.append(round(meta["frames"] / meta["fps"], 3))
                if decoded < decode_samples:
                    decoded += 1
                    try:
                        n = _decode_count(files[video_ext])
                        if n == 0:
                            raise ValueError("no frames")
                    except Exception as e:
                        report.decode_failures.append(f"{where}: {type(e).__name__}: {e}")
        if total != entry.get("count", total):
            report.problems.append(
                f"{split}: {total} records in shards, manifest total says {entry['count']}"
            )
        report.summary["splits"][split] = {
            "shards": len(entry["shards"]),
            "samples": total,
            "classes_present": len(labels),
            "codecs": sorted(codecs),
            "width_range": _range([w for w, _ in sizes]),
            "height_range": _range([h for _, h in sizes]),
            "duration_s_range": _range(durations),
            "decoded_ok": decoded
            - sum(1 for f in report.decode_failures if f.startswith(f"{split}:")),
        }
    for tar_path in sorted(root.glob("*.tar")):
        if tar_path.name not in listed:
            report.problems.append(f"shard {tar_path.name} is not listed in the manifest")
    return report
