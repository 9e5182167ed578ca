"""`vivit shards {build,inspect,synth}`: make and check WebDataset video shard directories."""

from __future__ import annotations

import argparse
import json
import os
import sys

from data.build import BuildOptions, build_shards
from data.inspect import flip_lines, inspect_shards
from data.labels import FORMATS, LabelFileError, parse_flip_pairs
from data.synthetic import make_synthetic


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vivit shards", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser(
        "build", help="videos + label file -> shards, manifest.json, build-report.json"
    )
    b.add_argument("--videos", required=True, help="folder holding the videos")
    b.add_argument("--labels", required=True, help="label file (format given by --format)")
    b.add_argument("--format", required=True, choices=FORMATS)
    b.add_argument("--out", required=True, help="shard directory (other splits there are kept)")
    b.add_argument(
        "--split",
        default="train",
        help="split to build; with --format csv, rows whose `split` column differs are ignored",
    )
    b.add_argument(
        "--flip-pairs",
        default=None,
        metavar="A:B,...",
        help="words (or class names) a horizontal flip swaps, e.g. left:right,cw:ccw; stored "
        "in the manifest so data.flip=always relabels a flipped clip",
    )
    b.add_argument(
        "--codec",
        default="h264",
        choices=["copy", "h264", "vp9"],
        help="re-encode (short GOP, no B-frames, no audio) or keep the stream",
    )
    b.add_argument("--short-side", type=int, default=None, help="resize so the short side is N px")
    b.add_argument("--fps", type=float, default=None, help="drop frames down to this rate")
    b.add_argument("--gop", type=int, default=8, help="key frame every N frames")
    b.add_argument("--max-seconds", type=float, default=None, help="keep at most S seconds")
    b.add_argument("--shard-size", type=float, default=256.0, help="target shard size in MB")
    b.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    b.add_argument("--strict", action="store_true", help="exit non-zero if any video is skipped")
    b.add_argument(
        "--min-frames",
        type=int,
        default=2,
        help="skip (and report) videos with fewer decoded frames, e.g. a still image named .mp4",
    )
    b.add_argument(
        "--allow-outside",
        action="store_true",
        help="read label rows whose path lies outside --videos (refused by default)",
    )
    b.add_argument(
        "--drop-conflicts",
        action="store_true",
        help="leave out videos listed under two labels (by default the build refuses them)",
    )

    i = sub.add_parser(
        "inspect", help="summarise a shard directory and check it against its manifest"
    )
    i.add_argument("dir")
    i.add_argument("--decode", type=int, default=8, help="records to test-decode per split")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")

    s = sub.add_parser("synth", help="write the built-in synthetic action set (+ still images)")
    s.add_argument("--out", required=True)
    s.add_argument("--clips", type=int, default=512)
    s.add_argument("--val-clips", type=int, default=None, help="default: clips / 4")
    s.add_argument("--frames", type=int, default=16)
    s.add_argument("--size", type=int, default=32)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--codec", default="vp9", choices=["vp9", "h264"])
    s.add_argument("--objects", default=None, help="folder of object-class subfolders of images")
    return p


def _build(a: argparse.Namespace) -> int:
    try:
        opts = BuildOptions(
            codec=a.codec,
            short_side=a.short_side,
            fps=a.fps,
            gop=a.gop,
            max_seconds=a.max_seconds,
            shard_size_mb=a.shard_size,
            min_frames=a.min_frames,
        )
        pairs = parse_flip_pairs(a.flip_pairs) if a.flip_pairs is not None else None
        res = build_shards(
            a.videos,
            a.labels,
            a.format,
            a.out,
            split=a.split,
            options=opts,
            workers=a.workers,
            flip_pairs=pairs,
            allow_outside=a.allow_outside,
            drop_conflicts=a.drop_conflicts,
        )
    except (LabelFileError, FileNotFoundError, ValueError) as e:
        print(f"vivit shards build: {e}", file=sys.stderr)
        return 2
    total = res.written + res.resumed
    print(
        f"{a.split}: wrote {res.written} videos ({res.resumed} already in complete shards), "
        f"skipped {len(res.skipped)}; {len(res.manifest['classes'])} classes -> {a.out}"
    )
    for note in res.notes:
        print(f"  note: {note}")
    rows = res.rows
    if rows.get("duplicate_rows"):
        print(
            f"  duplicates: {rows['duplicate_rows']} repeated label row(s) of "
            f"{len(rows['duplicates'])} video(s) built once"
        )
    for c in rows.get("conflicts_dropped", []):
        print(f"  left out {c['path']}: listed under {len(c['labels'])} labels {c['labels']}")
    if rows.get("outside_videos"):
        print(f"  read {len(rows['outside_videos'])} video(s) outside --videos (--allow-outside)")
    for s in res.skipped[:10]:
        print(f"  skipped {s['path']}: {s['reason']}")
    if len(res.skipped) > 10:
        print(f"  ... see {a.out}/build-report.json")
    if total == 0:
        return 1
    return 1 if a.strict and res.skipped else 0


def _inspect(a: argparse.Namespace) -> int:
    try:
        rep = inspect_shards(a.dir, decode_samples=a.decode)
    except (FileNotFoundError, ValueError) as e:
        print(f"vivit shards inspect: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(
            json.dumps(
                {**rep.summary, "problems": rep.problems, "decode_failures": rep.decode_failures},
                indent=2,
            )
        )
    else:
        print(f"{len(rep.summary['classes'])} classes, flip_safe={rep.summary['flip_safe']}")
        for line in flip_lines(rep.summary):
            print(f"  {line}")
        for split, s in rep.summary["splits"].items():
            print(
                f"  {split}: {s['samples']} samples in {s['shards']} shards, "
                f"{s['classes_present']} classes, codecs {s['codecs']}, "
                f"width {s['width_range']}, height {s['height_range']}, "
                f"duration_s {s['duration_s_range']}, decoded ok {s['decoded_ok']}"
            )
        for f in rep.decode_failures:
            print(f"  decode failure: {f}")
        for p in rep.problems:
            print(f"  PROBLEM: {p}")
    if not rep.ok:
        print(
            f"vivit shards inspect: {len(rep.problems)} problem(s), "
            f"{len(rep.decode_failures)} decode failure(s) in {a.dir}",
            file=sys.stderr,
        )
    return 0 if rep.ok else 1


def _synth(a: argparse.Namespace) -> int:
    val = a.val_clips if a.val_clips is not None else max(1, a.clips // 4)
    try:
        out = make_synthetic(
            a.out,
            clips=a.clips,
            val_clips=val,
            frames=a.frames,
            size=a.size,
            seed=a.seed,
            codec=a.codec,
            objects_dir=a.objects,
        )
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"vivit shards synth: {e}", file=sys.stderr)
        return 2
    print(f"synthetic set: {a.clips} train + {val} val clips of {a.frames}x{a.size}px -> {out}")
    return 0


def main(argv: list[str]) -> int:
    a = _parser().parse_args(argv)
    return {"build": _build, "inspect": _inspect, "synth": _synth}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
