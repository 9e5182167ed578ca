"""Label files of the supported datasets -> (video path, class name) items and a class index.

Every parse error names the file and the line, because label files are hand-edited and large.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("kinetics-csv", "ssv2-json", "ucf101", "csv")
_VIDEO_SUFFIXES = {".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv"}


class LabelFileError(ValueError):
    """A label file that cannot be read as its declared format."""


DIRECTION_WORDS = frozenset(
    {
        "left", "right", "leftward", "leftwards", "rightward", "rightwards",
        "clockwise", "anticlockwise", "counterclockwise", "cw", "ccw",
    }
)  # fmt: skip
"""Words whose meaning a horizontal flip reverses. Up/down are not among them: a horizontal
flip keeps vertical motion, and flagging "pick up" or "sit down" would switch off flipping for
Kinetics-like class sets for nothing. "counter-clockwise" is caught through "clockwise"."""

_WORD = re.compile(r"[a-z0-9]+")


def direction_classes(classes: list[str]) -> list[str]:
    """Classes whose name holds a direction word: a mirrored clip of one is another class."""
    return [c for c in classes if DIRECTION_WORDS.intersection(_WORD.findall(c.lower()))]


def parse_flip_pairs(text: str) -> list[tuple[str, str]]:
    """`left:right,cw:ccw` -> [("left", "right"), ("cw", "ccw")]; each side a word, phrase or
    whole class name."""
    pairs = []
    for part in text.split(","):
        if not part.strip():
            continue
        sides = [s.strip().lower() for s in part.split(":")]
        if len(sides) != 2 or not all(sides) or sides[0] == sides[1]:
            raise LabelFileError(
                f"--flip-pairs: bad pair {part.strip()!r}; expected A:B with A != B, "
                "e.g. left:right,cw:ccw"
            )
        pairs.append((sides[0], sides[1]))
    if not pairs:
        raise LabelFileError("--flip-pairs: no pairs given; e.g. left:right,cw:ccw")
    return pairs


def _normal(name: str) -> str:
    return " ".join(_WORD.findall(name.lower()))


def flip_class_pairs(classes: list[str], pairs: list[tuple[str, str]]) -> list[list[int]]:
    """Index pairs of classes that a flip turns into each other under the word `pairs`.

    Both sides of every pair are swapped at once on word boundaries (case and punctuation
    ignored), so "Pushing something from left to right" meets "... from right to left" and
    `rotate_cw` meets `rotate_ccw`. A pair that matches no two classes is a typo: an error.
    """
    index = {}
    for i, c in enumerate(classes):
        index.setdefault(_normal(c), i)
    swap = {}
    for a, b in pairs:
        a, b = _normal(a), _normal(b)
        swap[a], swap[b] = b, a
    alternatives = "|".join(re.escape(w) for w in sorted(swap, key=len, reverse=True))
    pattern = re.compile(rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])")
    found: set[tuple[int, int]] = set()
    used: set[str] = set()
    for i, c in enumerate(classes):
        name = _normal(c)
        hits = pattern.findall(name)
        j = index.get(pattern.sub(lambda m: swap[m.group(0)], name))
        if hits and j is not None and j != i:
            found.add((min(i, j), max(i, j)))
            used.update(hits)
    unused = [f"{a}:{b}" for a, b in pairs if _normal(a) not in used and _normal(b) not in used]
    if unused:
        raise LabelFileError(f"--flip-pairs {', '.join(unused)}: pairs no two classes")
    return [list(p) for p in sorted(found)]


@dataclass
class LabelSet:
    classes: list[str]
    items: list[tuple[Path, str]]
    """(video path, class name); the path may not exist (the build reports it as missing)."""
    flip_safe: bool = True
    """False when class names hold direction words: `data.flip=auto` then never flips."""
    flip_pairs: list[list[int]] = field(default_factory=list)
    """Class index pairs swapped by a flip (from `--flip-pairs`); used by `data.flip=always`."""
    notes: list[str] = field(default_factory=list)


def _check_header(path: Path, header: list[str], required: set[str], allowed: set[str]) -> None:
    cols = [c.strip() for c in header]
    unknown = [c for c in cols if c not in allowed]
    missing = required - set(cols)
    if unknown or missing:
        raise LabelFileError(
            f"{path}:1: bad header {cols}: unknown columns {unknown}, missing {sorted(missing)}; "
            f"expected {sorted(allowed)}"
        )


def _index_classes(path: Path, rows: list[tuple[int, str]], known: list[str] | None) -> list[str]:
    """Sorted class names of the rows, or `known` (an existing index) after checking every row."""
    if known is None:
        return sorted({label for _, label in rows})
    index = set(known)
    for line, label in rows:
        if label not in index:
            raise LabelFileError(f"{path}:{line}: class '{label}' is not in the class index")
    return list(known)


def _video_index(videos: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(videos.rglob("*")) if p.suffix.lower() in _VIDEO_SUFFIXES}


def _kinetics(path: Path, videos: Path, split: str, known: list[str] | None) -> LabelSet:
    allowed = {"label", "youtube_id", "time_start", "time_end", "split", "is_cc"}
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise LabelFileError(f"{path}:1: empty label file")
        _check_header(path, header, {"label", "youtube_id", "time_start", "time_end"}, allowed)
        cols = [c.strip() for c in header]
        all_rows = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(cols):
                raise LabelFileError(f"{path}:{line}: expected {len(cols)} fields, got {len(row)}")
            all_rows.append((line, dict(zip(cols, (v.strip() for v in row), strict=True))))
    classes = _index_classes(path, [(ln, r["label"]) for ln, r in all_rows], known)
    stems = _video_index(videos)
    by_prefix = sorted(stems)
    items = []
    for line, r in all_rows:
        if "split" in r and split and r["split"] != split:
            continue
        try:
            start, end = int(float(r["time_start"])), int(float(r["time_end"]))
        except ValueError as e:
            raise LabelFileError(f"{path}:{line}: bad time_start/time_end ({e})") from e
        stem = f"{r['youtube_id']}_{start:06d}_{end:06d}"
        found = stems.get(stem) or next(
            (stems[s] for s in by_prefix if s.startswith(r["youtube_id"])), None
        )
        items.append((found or videos / f"{stem}.mp4", r["label"]))
    return LabelSet(classes, items)


def _ssv2_mapping(path: Path) -> list[str] | None:
    for name in ("something-something-v2-labels.json", "labels.json"):
        candidate = path.parent / name
        if candidate.is_file() and candidate != path:
            mapping = json.loads(candidate.read_text())
            if not isinstance(mapping, dict):
                raise LabelFileError(f"{candidate}:1: expected an object {{template: index}}")
            return [k for k, _ in sorted(mapping.items(), key=lambda kv: int(kv[1]))]
    return None


def _ssv2_name(text: str) -> str:
    return text.replace("[", "").replace("]", "")


def _ssv2(path: Path, videos: Path, known: list[str] | None) -> LabelSet:
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LabelFileError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
    if not isinstance(entries, list):
        raise LabelFileError(f"{path}:1: expected a list of {{id, label|template}} objects")
    allowed = {"id", "label", "template", "placeholders"}
    rows = []
    for n, entry in enumerate(entries, start=1):
        where = f"{path}: entry {n}"
        if not isinstance(entry, dict) or "id" not in entry:
            raise LabelFileError(f"{where}: expected an object with 'id'")
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise LabelFileError(f"{where}: unknown keys {unknown}; expected {sorted(allowed)}")
        text = entry.get("template") or entry.get("label")
        if not text:
            raise LabelFileError(f"{where}: needs 'template' or 'label'")
        rows.append((n, str(entry["id"]), _ssv2_name(text)))
    known = known or _ssv2_mapping(path)
    classes = _index_classes(path, [(n, lab) for n, _, lab in rows], known)
    stems = _video_index(videos)
    items = [(stems.get(vid, videos / f"{vid}.webm"), lab) for _, vid, lab in rows]
    return LabelSet(classes, items)


def _ucf101(path: Path, videos: Path, known: list[str] | None) -> LabelSet:
    rows = []
    for line, text in enumerate(path.read_text().splitlines(), start=1):
        text = text.strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) > 2 or "/" not in parts[0]:
            raise LabelFileError(f"{path}:{line}: expected 'Class/video.avi [index]', got '{text}'")
        rows.append((line, parts[0], parts[0].split("/")[0]))
    class_ind = path.parent / "classInd.txt"
    if known is None and class_ind.is_file():
        known = []
        for line, text in enumerate(class_ind.read_text().splitlines(), start=1):
            if text.strip():
                parts = text.split()
                if len(parts) != 2:
                    raise LabelFileError(f"{class_ind}:{line}: expected 'index Class'")
                known.append(parts[1])
    classes = _index_classes(path, [(ln, c) for ln, _, c in rows], known)
    return LabelSet(classes, [(videos / rel, c) for _, rel, c in rows])


def _generic_csv(path: Path, videos: Path, split: str, known: list[str] | None) -> LabelSet:
    """`path,label[,split]`: with a split column, one file serves every split; the class index
    still comes from all rows, so every split's build numbers the classes alike."""
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise LabelFileError(f"{path}:1: empty label file")
        _check_header(path, header, {"path", "label"}, {"path", "label", "split"})
        cols = [c.strip() for c in header]
        rows = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(cols):
                raise LabelFileError(
                    f"{path}:{line}: expected {len(cols)} fields ({','.join(cols)}), got {len(row)}"
                )
            rec = dict(zip(cols, (v.strip() for v in row), strict=True))
            if "split" in rec and not rec["split"]:
                raise LabelFileError(f"{path}:{line}: empty split")
            rows.append((line, rec["path"], rec["label"], rec.get("split")))
    classes = _index_classes(path, [(ln, lab) for ln, _, lab, _ in rows], known)
    if "split" in cols:
        present = sorted({s for *_, s in rows})
        rows = [r for r in rows if r[3] == split]
        if not rows:
            raise LabelFileError(f"{path}: no rows of split '{split}' (splits here: {present})")
    return LabelSet(classes, [(videos / p, lab) for _, p, lab, _ in rows])


def read_labels(
    fmt: str,
    labels: str | Path,
    videos: str | Path,
    *,
    split: str = "train",
    known_classes: list[str] | None = None,
    flip_pairs: list[tuple[str, str]] | None = None,
) -> LabelSet:
    """Parse `labels` in format `fmt`; `known_classes` (e.g. from an existing manifest) fixes the index.

    Whatever the format, a class set with direction words is marked flip-unsafe; `flip_pairs`
    (word pairs, see `flip_class_pairs`) names which classes a flip swaps.
    """
    path, videos = Path(labels), Path(videos)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    if fmt == "kinetics-csv":
        labelset = _kinetics(path, videos, split, known_classes)
    elif fmt == "ssv2-json":
        labelset = _ssv2(path, videos, known_classes)
    elif fmt == "ucf101":
        labelset = _ucf101(path, videos, known_classes)
    elif fmt == "csv":
        labelset = _generic_csv(path, videos, split, known_classes)
    else:
        raise ValueError(f"unknown label format '{fmt}'; expected one of {FORMATS}")
    directional = direction_classes(labelset.classes)
    labelset.flip_safe = not directional
    if flip_pairs:
        labelset.flip_pairs = flip_class_pairs(labelset.classes, flip_pairs)
        paired = {labelset.classes[i] for pair in labelset.flip_pairs for i in pair}
        unpaired = [c for c in directional if c not in paired]
        if unpaired:
            labelset.notes.append(
                f"direction classes without a flip partner (kept as is when flipped): {unpaired}"
            )
    return labelset
