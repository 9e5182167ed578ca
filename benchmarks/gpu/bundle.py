"""The wheels the GPU machine lacks, packed to travel in as few device calls as possible.

The GPU machine has torch, timm and einops but no DeepSpeed, WebDataset, DALI or PyAV, reaches
no registry, and each device call carries at most 64 MiB. Wheels are zip files (deflate); the
same files unpacked, DALI's libraries for other Python versions dropped, and compressed with
xz take about a third less (DALI: 199 MB wheel -> ~133 MB), which saves a whole call.

`pack` (CPU machine): wheels directory -> `.gpu/call<N>/` folders, each under the carry limit,
plus `bundle.json` (archives, their pieces, sha256) in every folder. The last call (the one
that runs the check) holds the `base` archive whole, so DeepSpeed and the data libraries are
there even if an earlier call was lost; DALI's pieces fill the earlier calls.

`unpack` (GPU machine): reassembles each archive whose pieces are all present and sha256-exact
and extracts it into a `--target` directory, the layout `pip install --target` gives (a wheel
is a zip of exactly that tree). An incomplete archive is reported and skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

MiB = 2**20
CALL_LIMIT = 58 * MiB
"""Per call: the 64 MiB carry limit less the working tree (~1 MiB) and a safety margin."""
PYTHON_TAG = "cpython-312"
DALI_PREFIX = "nvidia_dali"


def _slim(name: str) -> bool:
    """True for files the GPU machine's Python 3.12 never loads (other CPython ABIs)."""
    base = name.rsplit("/", 1)[-1]
    return ".cpython-3" in base and PYTHON_TAG + "-" not in base


def _archive(wheels: list[Path]) -> bytes:
    """The unpacked trees of `wheels` as one tar.xz (members = paths under site-packages)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as zf:
                for info in zf.infolist():
                    if info.is_dir() or _slim(info.filename):
                        continue
                    data = zf.read(info)
                    member = tarfile.TarInfo(info.filename)
                    member.size = len(data)
                    member.mode = (
                        0o755 if info.filename.endswith(".so") or ".so." in info.filename else 0o644
                    )
                    tar.addfile(member, io.BytesIO(data))
    return lzma.compress(raw.getvalue(), preset=9)


def _cached_archive(wheels: list[Path], out: Path) -> bytes:
    """`_archive`, kept in `<out>.cache/` under a key of the wheels' names and sizes (xz of DALI
    takes minutes: re-running prepare.sh after adding a small wheel should not redo it)."""
    key = hashlib.sha256(json.dumps([(w.name, w.stat().st_size) for w in wheels]).encode())
    cached = out.with_name(out.name + ".cache") / f"{key.hexdigest()[:16]}.tar.xz"
    if cached.is_file():
        return cached.read_bytes()
    data = _archive(wheels)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(cached.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(cached)
    return data


def plan(base_size: int, dali_size: int, limit: int = CALL_LIMIT) -> list[dict[str, int]]:
    """Bytes of each archive per call: the last call holds all of `base` and what DALI fits."""
    if base_size > limit:
        raise SystemExit(f"base archive {base_size / MiB:.1f} MiB > {limit / MiB:.0f} MiB per call")
    last_dali = min(dali_size, limit - base_size)
    rest = dali_size - last_dali
    calls = []
    while rest > 0:
        calls.append({"dali": min(rest, limit)})
        rest -= calls[-1]["dali"]
    return [*calls, {"base": base_size, "dali": last_dali}]


def pack(wheels_dir: Path, out: Path, limit: int = CALL_LIMIT) -> list[Path]:
    """Build `.gpu/call<N>/` folders from the wheels in `wheels_dir`; return them in call order."""
    wheels = sorted(wheels_dir.glob("*.whl"))
    dali = [w for w in wheels if w.name.startswith(DALI_PREFIX)]
    base = [w for w in wheels if w not in dali]
    if not dali or not base:
        raise SystemExit(
            f"{wheels_dir}: expected DALI and base wheels, found {[w.name for w in wheels]}"
        )
    archives = {"base": _cached_archive(base, out), "dali": _cached_archive(dali, out)}
    calls = plan(len(archives["base"]), len(archives["dali"]), limit)
    manifest = {
        "archives": {
            name: {
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "wheels": [w.name for w in (base if name == "base" else dali)],
                "pieces": [],
            }
            for name, data in archives.items()
        },
        "calls": len(calls),
    }
    if out.exists():
        shutil.rmtree(out)
    folders = []
    offsets = dict.fromkeys(archives, 0)
    for n, call in enumerate(calls, 1):
        folder = out / f"call{n}"
        folder.mkdir(parents=True)
        for name, size in call.items():
            if size == 0:
                continue
            index = len(manifest["archives"][name]["pieces"])
            piece = f"{name}.tar.xz.{index:02d}"
            (folder / piece).write_bytes(archives[name][offsets[name] : offsets[name] + size])
            offsets[name] += size
            manifest["archives"][name]["pieces"].append(piece)
        folders.append(folder)
    for folder in folders:
        (folder / "bundle.json").write_text(json.dumps(manifest, indent=1))
    return folders


def unpack(sources: list[Path], target: Path) -> dict[str, str]:
    """Extract every complete archive found in `sources` into `target`; name -> status."""
    files: dict[str, Path] = {}
    manifest = None
    for src in sources:
        for f in sorted(src.glob("*")) if src.is_dir() else []:
            if f.name == "bundle.json":
                manifest = json.loads(f.read_text())
            else:
                files.setdefault(f.name, f)
    if manifest is None:
        raise SystemExit(f"no bundle.json in {', '.join(map(str, sources))}: run prepare.sh first")
    target.mkdir(parents=True, exist_ok=True)
    status = {}
    for name, info in manifest["archives"].items():
        missing = [p for p in info["pieces"] if p not in files]
        if missing:
            status[name] = f"incomplete: missing {', '.join(missing)} (skipped)"
            continue
        data = b"".join(files[p].read_bytes() for p in info["pieces"])
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            status[name] = "sha256 mismatch (skipped)"
            continue
        with tarfile.open(fileobj=io.BytesIO(lzma.decompress(data)), mode="r") as tar:
            tar.extractall(target, filter="data")
        status[name] = f"installed {len(info['wheels'])} wheels: " + ", ".join(info["wheels"])
    return status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python benchmarks/gpu/bundle.py", description=__doc__.splitlines()[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="wheels -> .gpu/call<N>/ (CPU machine)")
    a.add_argument("wheels", type=Path)
    a.add_argument("--out", type=Path, default=Path(".gpu"))
    b = sub.add_parser("unpack", help="call folders -> a site directory (GPU machine)")
    b.add_argument("sources", type=Path, nargs="+")
    b.add_argument("--target", type=Path, required=True)
    args = p.parse_args(argv)
    if args.cmd == "pack":
        for folder in pack(args.wheels, args.out):
            size = sum(f.stat().st_size for f in folder.iterdir())
            print(f"{folder}: {size / MiB:.1f} MiB")
        return 0
    status = unpack(args.sources, args.target)
    for name, what in status.items():
        print(f"{name}: {what}")
    return 0 if all(s.startswith("installed") for s in status.values()) else 3


if __name__ == "__main__":
    sys.exit(main())
