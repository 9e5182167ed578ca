"""`vivit shards build`: label file + video folder -> WebDataset shards, manifest, build report.

Videos are prepared in a process pool (decode + re-encode is CPU-bound); the parent writes
shards in label-file order so the output is the same for any worker count.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from data.fork import forking
from data.labels import LabelFileError, read_labels
from data.manifest import (
    MANIFEST,
    empty_manifest,
    read_manifest,
    set_split,
    write_json_atomic,
)
from data.shard_writer import ShardWriter
from data.transcode import EncodedVideo, SkipVideo, prepare_video

REPORT = "build-report.json"


@dataclass
class BuildOptions:
    codec: str = "h264"
    short_side: int | None = None
    fps: float | None = None
    gop: int = 8
    max_seconds: float | None = None
    shard_size_mb: float = 256.0
    min_frames: int = 2
    """Videos with fewer decoded frames are skipped (a still image named `.mp4` has one)."""

    def __post_init__(self) -> None:
        if self.min_frames < 1:
            raise ValueError(f"--min-frames must be >= 1, got {self.min_frames}")


@dataclass
class BuildResult:
    written: int
    skipped: list[dict]
    resumed: int
    manifest: dict
    notes: list[str] = field(default_factory=list)
    """Warnings about the label file (e.g. direction classes left without a flip partner)."""
    rows: dict = field(default_factory=dict)
    """What `vet_rows` found: duplicate rows removed, conflicts dropped, rows outside --videos."""


def _safe_key(index: int, path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem)[:80]
    return f"{index:07d}_{stem}"


def _prepare(job: tuple[int, str, BuildOptions]) -> tuple[int, EncodedVideo | str]:
    index, path, opt = job
    try:
        return index, prepare_video(
            path,
            codec=opt.codec,
            short_side=opt.short_side,
            fps=opt.fps,
            gop=opt.gop,
            max_seconds=opt.max_seconds,
            min_frames=opt.min_frames,
        )
    except SkipVideo as e:
        return index, str(e)
    except Exception as e:  # a decoder crash on one odd file must not stop the build
        return index, f"error: {type(e).__name__}: {e}"


def vet_rows(
    items: list[tuple[Path, str]],
    videos: str | Path,
    *,
    allow_outside: bool = False,
    drop_conflicts: bool = False,
) -> tuple[list[tuple[Path, str]], dict]:
    """Check label rows before anything is read: (rows to build, report).

    A row whose path lies outside `videos` (`../x.mp4`, an absolute path; judged on the path as
    written, so symlinks placed inside `videos` are followed) is refused unless `allow_outside`.
    A repeated (video, label) row is built once and counted. One video under two labels is
    refused unless `drop_conflicts`, which leaves such videos out. Errors list the rows.
    """
    root = os.path.abspath(videos)
    kept: list[tuple[Path, str]] = []
    labels: dict[str, list[str]] = {}
    extra_rows: dict[tuple[str, str], int] = {}
    outside: list[str] = []
    for path, label in items:
        key = os.path.abspath(path)
        if key in labels:
            if label in labels[key]:
                extra_rows[(key, label)] = extra_rows.get((key, label), 0) + 1
            else:
                labels[key].append(label)
            continue
        labels[key] = [label]
        if os.path.commonpath([root, key]) != root:
            outside.append(str(path))
        kept.append((path, label))
    if outside and not allow_outside:
        shown = ", ".join(outside[:5]) + (
            f" (+{len(outside) - 5} more)" if len(outside) > 5 else ""
        )
        raise LabelFileError(
            f"{len(outside)} label row(s) point outside --videos {videos}: {shown}; fix the "
            "label file, or pass --allow-outside if these files are meant to be read"
        )
    conflicts = {k: v for k, v in labels.items() if len(v) > 1}
    if conflicts and not drop_conflicts:
        shown = "; ".join(f"{k}: {', '.join(v)}" for k, v in list(conflicts.items())[:5])
        more = f" (+{len(conflicts) - 5} more)" if len(conflicts) > 5 else ""
        raise LabelFileError(
            f"{len(conflicts)} video(s) listed under more than one label: {shown}{more}; fix the "
            "label file, or pass --drop-conflicts to leave these videos out"
        )
    if conflicts:
        kept = [(p, lab) for p, lab in kept if os.path.abspath(p) not in conflicts]
    report = {
        "duplicate_rows": sum(extra_rows.values()),
        "duplicates": [
            {"path": k, "label": lab, "extra_rows": n} for (k, lab), n in extra_rows.items()
        ],
        "conflicts_dropped": [{"path": k, "labels": v} for k, v in conflicts.items()],
        "outside_videos": outside,
    }
    return kept, report


def _complete_shards(out: Path, split: str) -> tuple[list[dict], set[str]]:
    """Shards finished by an earlier run (final names exist) and the sources they hold."""
    shards, sources = [], set()
    for tar_path in sorted(out.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9][0-9].tar")):
        count = 0
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    f = tar.extractfile(member)
                    assert f is not None
                    sources.add(json.loads(f.read())["source"])
                    count += 1
        shards.append({"name": tar_path.name, "count": count})
    return shards, sources


def _results(jobs: list, workers: int) -> Iterator[tuple[int, EncodedVideo | str]]:
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_prepare, jobs)
        return
    with forking():
        pool = mp.get_context("fork").Pool(workers)
    with pool:
        yield from pool.imap(_prepare, jobs, chunksize=1)


def build_shards(
    videos: str | Path,
    labels: str | Path,
    fmt: str,
    out: str | Path,
    *,
    split: str = "train",
    options: BuildOptions | None = None,
    workers: int = 1,
    progress: bool = True,
    flip_pairs: list[tuple[str, str]] | None = None,
    allow_outside: bool = False,
    drop_conflicts: bool = False,
) -> BuildResult:
    """Build one split into `out`; other splits already there keep their entries and classes.

    `flip_pairs` (e.g. `[("left", "right")]`) name the classes a horizontal flip swaps; they go
    to the manifest, replacing earlier ones, and `data.flip=always` relabels through them.
    The rows are vetted first (`vet_rows`); a refused label file leaves `out` untouched.
    """
    opt = options or BuildOptions()
    out = Path(out)
    manifest = read_manifest(out) if (out / MANIFEST).is_file() else None
    labelset = read_labels(
        fmt,
        labels,
        videos,
        split=split,
        known_classes=manifest["classes"] if manifest else None,
        flip_pairs=flip_pairs,
    )
    labelset.items, rows = vet_rows(
        labelset.items, videos, allow_outside=allow_outside, drop_conflicts=drop_conflicts
    )
    out.mkdir(parents=True, exist_ok=True)
    build_record = {**vars(opt), "format": fmt, "labels": str(labels), "videos": str(videos)}
    state_path = out / f".build-{split}.json"
    if state_path.is_file():
        previous = json.loads(state_path.read_text())
        if previous != json.loads(json.dumps(build_record)):
            raise ValueError(
                f"{out}: split '{split}' was started with other options ({state_path}); "
                "use a fresh --out directory"
            )
    write_json_atomic(state_path, build_record)

    done_shards, done_sources = _complete_shards(out, split)
    class_of = {c: i for i, c in enumerate(labelset.classes)}
    jobs = [
        (i, str(path), opt)
        for i, (path, _) in enumerate(labelset.items)
        if str(path) not in done_sources
    ]
    writer = ShardWriter(
        out, split, max_bytes=int(opt.shard_size_mb * 2**20), start_index=len(done_shards)
    )
    skipped: list[dict] = []
    codecs: set[str] = set()
    bar = tqdm(total=len(jobs), desc=f"shards {split}", unit="video", disable=not progress)
    for index, result in _results(jobs, workers):
        bar.update(1)
        path, label = labelset.items[index]
        if isinstance(result, str):
            skipped.append({"path": str(path), "reason": result})
            continue
        meta = {"label": label, "source": str(path), **result.meta}
        codecs.add(result.meta["codec"])
        writer.write(
            _safe_key(index, path),
            {
                result.ext: result.data,
                "cls": str(class_of[label]).encode(),
                "json": json.dumps(meta).encode(),
            },
        )
    bar.close()
    new_shards = writer.close()
    written = sum(s["count"] for s in new_shards)

    if manifest is None:
        manifest = empty_manifest(
            labelset.classes, codec=opt.codec, flip_safe=labelset.flip_safe, build=build_record
        )
    else:
        manifest["flip_safe"] = bool(manifest.get("flip_safe", True) and labelset.flip_safe)
    if flip_pairs:
        manifest["flip_pairs"] = labelset.flip_pairs
    manifest.setdefault("codecs", {})[split] = sorted(
        codecs | set(manifest.get("codecs", {}).get(split, []))
    )
    manifest.setdefault("builds", {})[split] = build_record
    set_split(manifest, split, done_shards + new_shards)
    if manifest["splits"][split]["count"] > 0:
        write_json_atomic(out / MANIFEST, manifest)

    report_path = out / REPORT
    report = json.loads(report_path.read_text()) if report_path.is_file() else {"splits": {}}
    report["splits"][split] = {
        "written": written,
        "resumed": sum(s["count"] for s in done_shards),
        "skipped": skipped,
        **rows,
    }
    write_json_atomic(report_path, report)
    return BuildResult(
        written, skipped, sum(s["count"] for s in done_shards), manifest, labelset.notes, rows
    )
