"""Token cache build, data side: source shards -> K views per clip -> decoded, normalised
frames -> the caller's spatial forward -> token shards (`data.cache_format`).

The spatial forward is passed in (`encode`): it belongs to `core/`, which `data/` never
imports; `launch/cache.py` composes the two. The unit of work, of resume and of the split
across ranks is one source shard: shard `u` goes to rank `u % world`, and within a rank to
DataLoader worker `i` of `n` by its position in the rank's list. A shard's view tars are
written under temporary names and renamed, then its part marker is written; a killed build
leaves temporaries (removed at the next start) and redoes only the shards without a marker.

View `i` of a clip is a pure function of (seed, clip key, i) and the clip's own metadata
(`cache_views`), so it does not depend on ranks, workers, order or resumption.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from common.atomic import atomic_write_json
from common.seeding import numpy_rng, text_key
from data.augment import Box, normalise
from data.batcher import to_device
from data.cache_format import (
    CACHE_MANIFEST,
    EMBED,
    FORMAT,
    PATCHES,
    STATE,
    TOKEN_DTYPES,
    VERSION,
    CacheError,
    CacheMismatch,
    encode_array,
    part_path,
    view_prefix,
    view_shard_name,
)
from data.config import DataConfig
from data.dali_decode import gpu_decodable
from data.dali_pool import AnyDaliDecoder, dali_decoder
from data.fork import start_workers, stop_workers, worker_loader
from data.gop_trim import View, views_for_decoder
from data.job_decode import decode_jobs
from data.jobs import ClipJob, flip_policy, train_view
from data.manifest import VIDEO_EXTS, read_manifest, split_shards
from data.prefetch import Prefetcher
from data.pyav_decode import decode_views
from data.records import BadRecord, record_label, record_meta
from data.shard_writer import ShardWriter
from data.sources import _decoder_choice
from data.stream import tar_samples

log = logging.getLogger(__name__)

Encode = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""Normalised frames `B x T x C x H x W` -> (frame embeddings `B x T x D`, patches `B x T x N x D`)."""


@dataclass(frozen=True)
class Unit:
    """One source shard: the unit of work, of resume and of the split across ranks."""

    index: int
    path: str
    count: int


def cache_views(
    seed: int,
    key: str,
    meta: dict,
    label: int,
    *,
    views: int,
    frames: int,
    sampling: str,
    stride: int,
    min_scale: float,
    flip: tuple[bool, list[int]],
) -> list[tuple[np.ndarray, Box, int]]:
    """The `views` cached views of clip `key`: view i from its own stream (seed, key, i)."""
    return [
        train_view(
            meta,
            label,
            numpy_rng(seed, "cache-view", text_key(key), i),
            frames=frames,
            sampling=sampling,
            stride=stride,
            min_scale=min_scale,
            flip=flip,
        )
        for i in range(views)
    ]


@dataclass(frozen=True)
class CacheJob:
    """One clip of the build: made in a worker, decoded and written in the main process."""

    unit: int
    """Index of the source shard it comes from."""
    key: str
    views: list[View]
    """The K views in the video's own frame numbers: written with the tokens."""
    clip: ClipJob
    """What is decoded: the K views, each a clip with its own label, in the numbers of the
    video DALI is handed (cut where `data.gop_trim` allows), or decoded by PyAV already."""


class CacheJobs(torch.utils.data.IterableDataset):
    """Worker side: this worker's source shards -> per clip its key, K views and labels, with
    the encoded bytes (for DALI) or the views decoded by PyAV; an end marker after each shard."""

    def __init__(
        self,
        units: list[Unit],
        cfg: DataConfig,
        *,
        views: int,
        seed: int,
        size: int,
        flip: tuple[bool, list[int]],
        num_classes: int,
        dali_codecs: frozenset[str] | None,
        gpu: bool,
    ):
        self.units, self.cfg, self.views, self.seed, self.size = units, cfg, views, seed, size
        self.flip, self.num_classes = flip, num_classes
        self.dali_codecs, self.gpu = dali_codecs, gpu

    def _job(self, unit: int, sample: dict) -> CacheJob:
        ext = next(e for e in VIDEO_EXTS if e in sample)
        label = record_label(sample["cls"], self.num_classes)
        meta = record_meta(sample["json"])
        cfg = self.cfg
        chosen = cache_views(
            self.seed,
            sample["__key__"],
            meta,
            label,
            views=self.views,
            frames=cfg.frames,
            sampling=cfg.sampling,
            stride=cfg.stride,
            min_scale=cfg.min_scale,
            flip=self.flip,
        )
        views = [(idx, box) for idx, box, _ in chosen]
        labels = tuple(lab for _, _, lab in chosen)
        data, codec = bytes(sample[ext]), meta.get("codec", "?")
        dali = self.dali_codecs is not None and codec in self.dali_codecs
        if dali and (not self.gpu or gpu_decodable(codec, meta["width"], meta["height"])):
            data, decode = views_for_decoder(data, views, codec, cfg.gop_trim)
            clip = ClipJob(decode, labels, data=data)  # decoded by DALI in the main process
        else:
            clip = ClipJob(views, labels, frames=decode_views(data, views, self.size).numpy())
        return CacheJob(unit, sample["__key__"], views, clip)

    def __iter__(self) -> Iterator[CacheJob | dict]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for unit in self.units[wid::nw]:
            errors = [0]
            for sample in tar_samples(unit.path, errors):
                try:
                    yield self._job(unit.index, sample)
                except BadRecord as e:
                    yield {"unit": unit.index, "__bad__": e.kind, "detail": str(e)}
                except Exception as e:  # unreadable clip: skipped and counted, never a crash
                    log.debug("skipping record %s: %s", sample.get("__key__"), e)
                    yield {"unit": unit.index, "__corrupt__": 1}
            yield {"unit": unit.index, "__end__": True, "read_errors": errors[0]}


class _UnitOut:
    """The K view tars of one source shard, and its counters until its part marker is written."""

    def __init__(self, out: Path, split: str, unit: Unit, views: int):
        self.unit = unit
        self.writers = [
            ShardWriter(out, view_prefix(split, v), max_bytes=1 << 62, start_index=unit.index)
            for v in range(views)
        ]
        self.clips = 0
        self.skipped = {"corrupt": 0, "bad_label": 0, "bad_meta": 0}


def remove_temporaries(out: Path, split: str, unit: int, views: int) -> None:
    """Leftovers of a killed write of source shard `unit` (hidden `.NAME.tmp*` files)."""
    for v in range(views):
        for tmp in out.glob(f".{view_shard_name(split, v, unit)}.tmp*"):
            tmp.unlink(missing_ok=True)


def build_state(spec: dict, source: Path, split: str, views: int, seed: int, dtype: str) -> dict:
    return {
        "spec": spec,
        "source": str(source.resolve()),
        "token_dtype": dtype,
        "splits": {split: {"views": views, "seed": seed}},
    }


def check_state(out: Path, state: dict, split: str) -> None:
    """A cache directory is built with one set of settings: refuse to mix in other ones."""
    path = out / STATE
    if not path.is_file():
        atomic_write_json(path, state)
        return
    old = json.loads(path.read_text())
    fields = {f"spec.{k}": (old.get("spec", {}).get(k), v) for k, v in state["spec"].items()}
    fields["source"] = (old.get("source"), state["source"])
    fields["token_dtype"] = (old.get("token_dtype"), state["token_dtype"])
    if split in old.get("splits", {}):
        for k, v in state["splits"][split].items():
            fields[f"{split}.{k}"] = (old["splits"][split].get(k), v)
    for field, (before, now) in fields.items():
        if json.dumps(before, sort_keys=True) != json.dumps(now, sort_keys=True):
            raise CacheMismatch(out, field.removeprefix("spec."), before, now)
    merged = old | {"splits": old.get("splits", {}) | state["splits"]}
    atomic_write_json(path, merged)


class CacheBuilder:
    """Main-process side of one rank's build of one split (see the module docstring)."""

    def __init__(
        self,
        cfg: DataConfig,
        out: str | os.PathLike,
        *,
        split: str,
        views: int,
        seed: int,
        encode: Encode,
        spec: dict[str, Any],
        size: int,
        mean: tuple,
        std: tuple,
        device: torch.device,
        dtype: torch.dtype,
        rank: int = 0,
        world: int = 1,
        batch_clips: int = 8,
        token_dtype: str = "float16",
        progress: bool = True,
    ):
        if cfg.root is None:
            raise ValueError("data.root is not set (the shards the cache is built from)")
        if views < 1 or batch_clips < 1:
            raise ValueError(f"--views and --batch must be >= 1, got {views} and {batch_clips}")
        if token_dtype not in TOKEN_DTYPES:
            raise ValueError(f"token dtype must be one of {sorted(TOKEN_DTYPES)}")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world size {world}")
        self.cfg, self.out, self.split = cfg, Path(out), split
        self.views, self.seed, self.encode, self.spec = views, seed, encode, spec
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self.device, self.dtype = device, dtype
        self.rank, self.world, self.batch_clips = rank, world, batch_clips
        self.token_dtype, self.progress = token_dtype, progress
        self.source = Path(cfg.root)
        self.manifest = read_manifest(self.source)
        self.units = [
            Unit(i, path, count)
            for i, (path, count) in enumerate(split_shards(self.manifest, self.source, split))
        ]
        self.dali_codecs = _decoder_choice(cfg, device)
        self._dali: AnyDaliDecoder | None = None
        if self.dali_codecs is not None:
            self._dali = dali_decoder(
                max_batch=batch_clips,
                size=size,
                device=device,
                num_threads=cfg.resolved_dali_threads(),
                pipelines=cfg.dali_pipelines,
                views=views,  # one item per clip: the union of its K views decoded once
            )

    def close(self) -> None:
        """Release the DALI pipeline (safe to call twice)."""
        if self._dali is not None:
            self._dali.close()
        self._dali = None

    def __enter__(self) -> CacheBuilder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def mine(self) -> list[Unit]:
        """This rank's source shards."""
        return [u for u in self.units if u.index % self.world == self.rank]

    def done(self, unit: Unit) -> bool:
        return part_path(self.out, self.split, unit.index).is_file()

    def run(self) -> dict[str, Any]:
        """Build this rank's missing shards; returns what it did (clips, seconds, skipped)."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / ".parts").mkdir(exist_ok=True)
        state = build_state(
            self.spec, self.source, self.split, self.views, self.seed, self.token_dtype
        )
        check_state(self.out, state, self.split)
        mine = self.mine()
        todo = [u for u in mine if not self.done(u)]
        for unit in todo:
            remove_temporaries(self.out, self.split, unit.index, self.views)
        t0, c0 = time.perf_counter(), time.process_time()
        clips = self._build(todo) if todo else 0
        return {
            "rank": self.rank,
            "units": len(mine),
            "units_built": len(todo),
            "units_resumed": len(mine) - len(todo),
            "clips": clips,
            "views": clips * self.views,
            "build_s": time.perf_counter() - t0,
            "build_cpu_s": time.process_time() - c0,
        }

    def _build(self, todo: list[Unit]) -> int:
        flip = flip_policy(self.cfg.flip, self.manifest)
        jobs = CacheJobs(
            todo,
            self.cfg,
            views=self.views,
            seed=self.seed,
            size=self.size,
            flip=flip,
            num_classes=len(self.manifest["classes"]),
            dali_codecs=self.dali_codecs,
            gpu=self.device.type == "cuda",
        )
        workers = min(self.cfg.resolved_workers(), len(todo))
        loader = worker_loader(jobs, workers, prefetch_factor=4, nice=self.cfg.loader_nice)
        open_units = {u.index: _UnitOut(self.out, self.split, u, self.views) for u in todo}
        bar = tqdm(
            total=sum(u.count for u in todo),
            desc=f"cache {self.split} [rank {self.rank}/{self.world}]",
            unit="clip",
            disable=not self.progress or self.rank != 0,
            dynamic_ncols=True,
        )
        written = 0
        items = start_workers(loader)
        # decoding batch k+1 (producer thread) overlaps the spatial forward and writing of
        # batch k; `data.prefetch=0` runs both in this thread, in the same order
        decoded = Prefetcher(
            lambda: self._decoded(items),
            depth=self.cfg.prefetch,
            device=self.device,
            name="vivit-cache-decode",
            nice=self.cfg.loader_nice,
        )
        try:
            for event in decoded:
                if event[0] == "batch":
                    _, jobs, clips = event
                    written += self._write(jobs, clips, open_units)
                    bar.update(len(jobs))
                elif event[0] == "end":
                    item = event[1]
                    self._finish(open_units.pop(item["unit"]), item["read_errors"])
                else:  # "skip": a bad or corrupt record, counted
                    item = event[1]
                    unit = open_units[item["unit"]]
                    kind = item.get("__bad__", "corrupt")
                    if not sum(unit.skipped.values()):
                        log.warning("cache build: skipping a record of %s", unit.unit.path)
                    unit.skipped[kind if kind in unit.skipped else "corrupt"] += 1
                    bar.update(1)
        except BaseException:
            for index in open_units:  # nothing half-written stays behind under a final name
                remove_temporaries(self.out, self.split, index, self.views)
            raise
        finally:  # after an error too: workers left to exit cost 5 s there (data/fork.py)
            decoded.close()  # the producer reads the workers: stopped first
            stop_workers(items)
            bar.close()
        return written

    def _decoded(self, items: Iterator[CacheJob | dict]) -> Iterator[tuple]:
        """The workers' items in order, clips decoded a batch at a time: `("batch", jobs,
        clips)`, `("end", marker)` once a source shard is all read, `("skip", item)`."""
        pending: list[CacheJob] = []
        for item in items:
            if isinstance(item, CacheJob):
                pending.append(item)
                if len(pending) >= self.batch_clips:
                    yield "batch", pending, self._decode(pending)
                    pending = []
            elif "__end__" in item:
                if pending:
                    yield "batch", pending, self._decode(pending)
                    pending = []
                yield "end", item
            else:  # a bad or corrupt record's marker
                yield "skip", item

    def _decode(self, jobs: list[CacheJob]) -> list[torch.Tensor | None]:
        """uint8 `K x T x C x S x S` per job (None: neither DALI nor PyAV could decode it).

        A clip is one DALI item (`DaliClipDecoder(views=K)`): its video is decoded once for all
        K views, whatever their frames and crop boxes."""
        clips = [j.clip for j in jobs]
        return [d.views for d in decode_jobs(clips, self._dali, self.size, one_item=True)]

    def _write(
        self, jobs: list[CacheJob], clips: list[torch.Tensor | None], units: dict[int, _UnitOut]
    ) -> int:
        """Encode and write the decoded `clips` of `jobs`; returns the clips written."""
        good = [(job, clip) for job, clip in zip(jobs, clips, strict=True) if clip is not None]
        for job, clip in zip(jobs, clips, strict=True):
            if clip is None:
                units[job.unit].skipped["corrupt"] += 1
        if not good:
            return 0
        frames = to_device([clip for _, clip in good], self.device)  # n x K x T x C x S x S
        n, k = frames.shape[:2]
        frames = normalise(frames.flatten(0, 1), self.mean, self.std, self.dtype)
        with torch.no_grad():
            embed, patches = self.encode(frames)
        np_dtype = TOKEN_DTYPES[self.token_dtype]
        embed = embed.float().cpu().numpy().astype(np_dtype).reshape(n, k, *embed.shape[1:])
        patches = patches.float().cpu().numpy().astype(np_dtype)
        patches = patches.reshape(n, k, *patches.shape[1:])
        for j, (job, _) in enumerate(good):
            if not (np.isfinite(embed[j]).all() and np.isfinite(patches[j]).all()):
                raise CacheError(
                    f"clip {job.key}: tokens are not finite in {self.token_dtype} (overflow?); "
                    "build with --dtype float32"
                )
            unit = units[job.unit]
            for v in range(k):
                idx, box = job.views[v]
                meta = {
                    "view": v,
                    "frames": [int(i) for i in idx],
                    "box": [float(b) for b in box],
                    "flip": bool(box[1] > box[3]),
                }
                files = {
                    "cls": str(job.clip.labels[v]).encode(),
                    "json": json.dumps(meta).encode(),
                    EMBED: encode_array(embed[j, v]),
                }
                if patches.shape[3] > 0:
                    files[PATCHES] = encode_array(patches[j, v])
                unit.writers[v].write(job.key, files)
            unit.clips += 1
        return len(good)

    def _finish(self, unit: _UnitOut, read_errors: int) -> None:
        """Rename the unit's view tars into place, then write its part marker."""
        shards = []
        for v, writer in enumerate(unit.writers):
            for entry in writer.close():
                shards.append({**entry, "view": v})
        size = sum((self.out / s["name"]).stat().st_size for s in shards)
        atomic_write_json(
            part_path(self.out, self.split, unit.unit.index),
            {
                "unit": unit.unit.index,
                "source": Path(unit.unit.path).name,
                "clips": unit.clips,
                "skipped": unit.skipped | {"read_errors": read_errors},
                "shards": shards,
                "bytes": size,
                "rank": self.rank,
            },
        )


def finish_cache(
    out: str | os.PathLike,
    source: str | os.PathLike,
    split: str,
    *,
    views: int,
    seed: int,
    spec: dict[str, Any],
    token_dtype: str,
    layout: dict[str, Any],
    build: dict[str, Any],
) -> dict:
    """Merge the part markers of `split` into `cache.json` (rank 0, after every rank is done).

    Fails, naming them, when some source shard has no part marker yet (a rank failed).
    """
    out, source = Path(out), Path(source)
    manifest_src = read_manifest(source)
    count = len(split_shards(manifest_src, source, split))
    parts, missing = [], []
    for unit in range(count):
        path = part_path(out, split, unit)
        if path.is_file():
            parts.append(json.loads(path.read_text()))
        else:
            missing.append(unit)
    if missing:
        raise CacheError(
            f"token cache {out}: source shard(s) {missing[:10]} of split '{split}' are not "
            "built (a rank failed?): re-run the build to finish them"
        )
    path = out / CACHE_MANIFEST
    manifest = json.loads(path.read_text()) if path.is_file() else {"splits": {}}
    shards = sorted((s for p in parts for s in p["shards"]), key=lambda s: (s["view"], s["name"]))
    clips = sum(p["clips"] for p in parts)
    skipped: dict[str, int] = {}
    for p in parts:
        for k, v in p["skipped"].items():
            skipped[k] = skipped.get(k, 0) + v
    size = sum(p["bytes"] for p in parts)
    manifest.update(
        {
            "format": FORMAT,
            "version": VERSION,
            "spec": spec,
            "classes": manifest_src["classes"],
            "source": {"root": str(source.resolve()), "num_classes": len(manifest_src["classes"])},
            "token_dtype": token_dtype,
            "layout": layout,
        }
    )
    manifest["splits"][split] = {
        "views": views,
        "seed": seed,
        "clips": clips,
        "skipped": skipped,
        "bytes": size,
        "bytes_per_clip": size / clips if clips else 0.0,
        "shards": [{"name": s["name"], "view": s["view"], "count": s["count"]} for s in shards],
        "build": build,
    }
    atomic_write_json(path, manifest)
    return manifest
