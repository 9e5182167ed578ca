"""Token cache (`vivit cache build`, `data.cache`): views, tokens, training equivalence, refusal
of a stale cache, ranks, resume after a kill, the reader's determinism and the step's cost."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import data.cache_build
from common.seeding import numpy_rng, seed_torch
from core.cache_spec import cache_spec
from core.freezing import freeze_spatial
from core.model import build_model
from core.spatial import state_sha256
from data.augment import normalise
from data.cache_build import CacheBuilder, cache_views, finish_cache
from data.cache_format import (
    CACHE_MANIFEST,
    EMBED,
    PATCHES,
    CacheMismatch,
    decode_array,
    encode_array,
    part_path,
    read_cache_manifest,
    storage_rows,
    view_bytes,
    view_shard_name,
)
from data.gop_trim import views_for_decoder
from data.jobs import ClipJobs, flip_policy, train_view
from data.loader import open_cached_train_batches, read_manifest
from data.pyav_decode import decode_views
from data.stream import tar_samples
from tests.data_helpers import video_record, write_shard_set
from tests.engine_helpers import NUM_CLASSES, tiny_config

SHARDS, PER_SHARD, VIEWS = 3, 3, 2


def _clip(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (1, 32, 32, 3))
    drift = np.arange(8)[:, None, None, None] * rng.integers(-12, 12)
    return np.clip(base + drift, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 train shards of 3 lossless VP9 clips (8 frames, 32 px), 4 classes, and a val shard."""
    root = tmp_path_factory.mktemp("src")
    shards = [
        [
            (f"{s}{i:03d}_clip", video_record(_clip(10 * s + i), (s + i) % NUM_CLASSES))
            for i in range(PER_SHARD)
        ]
        for s in range(SHARDS)
    ]
    val = [[(f"v{i:03d}", video_record(_clip(100 + i), i % NUM_CLASSES)) for i in range(4)]]
    return write_shard_set(root, {"train": shards, "val": val}, list("abcd"))


def _cfg(source: Path, *extra: str):
    return tiny_config(
        f"data.root={source}",
        "data.synthetic=false",
        "data.decoder=pyav",
        "data.workers=0",
        "data.shuffle_buffer=4",
        *extra,
    )


def _model(cfg):
    """The frozen spatial exactly as the trainer builds it, and its weights' sha256."""
    seed_torch(cfg.seed, "model-init")
    model = build_model(cfg, NUM_CLASSES)
    sha = state_sha256(model.spatial)
    freeze_spatial(model, torch.float32)
    return model, sha


def _encode(spatial):
    def encode(frames):
        tokens = spatial(frames)
        return tokens.cls, tokens.patches

    return encode


def _build(cfg, out: Path, *, encode=None, rank=0, world=1, dtype="float16", views=VIEWS):
    model, sha = _model(cfg)
    spatial = model.spatial
    builder = CacheBuilder(
        cfg.data,
        out,
        split="train",
        views=views,
        seed=cfg.seed,
        encode=encode or _encode(spatial),
        spec=cache_spec(cfg, spatial, sha),
        size=cfg.spatial.img_size,
        mean=spatial.mean,
        std=spatial.std,
        device=torch.device("cpu"),
        dtype=torch.float32,
        rank=rank,
        world=world,
        batch_clips=2,
        token_dtype=dtype,
        progress=False,
    )
    with builder:
        return builder.run()


def _finish(cfg, out: Path, dtype="float16", views=VIEWS) -> dict:
    model, sha = _model(cfg)
    return finish_cache(
        out,
        cfg.data.root,
        "train",
        views=views,
        seed=cfg.seed,
        spec=cache_spec(cfg, model.spatial, sha),
        token_dtype=dtype,
        layout={},
        build={},
    )


def _records(out: Path) -> dict[tuple[str, int], dict]:
    """Every record of a cache, by (clip key, view)."""
    manifest = read_cache_manifest(out)
    records: dict[tuple[str, int], dict] = {}
    for shard in manifest["splits"]["train"]["shards"]:
        for sample in tar_samples(str(out / shard["name"]), [0]):
            view = json.loads(sample["json"])["view"]
            assert view == shard["view"]
            assert (sample["__key__"], view) not in records, "a clip x view twice"
            records[(sample["__key__"], view)] = sample
    return records


def _source_clips(source: Path) -> dict[str, dict]:
    clips = {}
    for s in range(SHARDS):
        for sample in tar_samples(str(source / f"train-{s:06d}.tar"), [0]):
            clips[sample["__key__"]] = sample
    return clips


def _views(cfg, key: str, sample: dict):
    meta = json.loads(sample["json"])
    return cache_views(
        cfg.seed,
        key,
        meta,
        int(sample["cls"]),
        views=VIEWS,
        frames=cfg.data.frames,
        sampling=cfg.data.sampling,
        stride=cfg.data.stride,
        min_scale=cfg.data.min_scale,
        flip=flip_policy(cfg.data.flip, read_manifest(cfg.data.root)),
    )


def _reference_frames(cfg, spatial, samples: list[tuple[str, dict]], view: int) -> torch.Tensor:
    """Normalised frames of view `view` of each clip, decoded as the build did (PyAV)."""
    clips = []
    for key, sample in samples:
        idx, box, _ = _views(cfg, key, sample)[view]
        clips.append(decode_views(sample["webm"], [(idx, box)], cfg.spatial.img_size)[0])
    return normalise(torch.stack(clips), spatial.mean, spatial.std, torch.float32)


# ---------------------------------------------------------------- views


def test_view_policy_is_the_training_policy() -> None:
    """A cached view is drawn exactly as `ClipJobs` draws a training view from the same rng."""
    jobs = ClipJobs(
        None,  # type: ignore[arg-type]
        train=True,
        frames=4,
        sampling="uniform",
        stride=2,
        size=32,
        min_scale=0.35,
        flip=(True, [1, 0, 2, 3]),
        eval_clips=1,
        eval_crops=1,
        dali_codecs=None,
        gpu=False,
        seed=0,
        start_step=0,
        num_classes=4,
    )
    meta = {"frames": 16, "height": 24, "width": 40}
    flips = 0
    for seed in range(40):
        [(idx, box)], (label,) = jobs._views(meta, np.random.default_rng(seed), 0)
        got = train_view(
            meta,
            0,
            np.random.default_rng(seed),
            frames=4,
            sampling="uniform",
            stride=2,
            min_scale=0.35,
            flip=(True, [1, 0, 2, 3]),
        )
        assert np.array_equal(got[0], idx) and got[1] == box and got[2] == label
        flips += label == 1
    assert 0 < flips < 40  # both branches were compared


def test_view_is_a_pure_function_of_seed_key_and_index() -> None:
    meta = {"frames": 16, "height": 32, "width": 32}
    kw = dict(frames=4, sampling="uniform", stride=2, min_scale=0.35, flip=(True, [1, 0]))

    def views(seed, key, k):
        return [(v[0].tolist(), v[1], v[2]) for v in cache_views(seed, key, meta, 0, views=k, **kw)]

    assert views(0, "a", 3) == views(0, "a", 3)
    assert views(0, "a", 2) == views(0, "a", 4)[:2]  # more views do not change the first ones
    assert views(0, "a", 3)[0] != views(0, "a", 3)[1]
    assert views(0, "a", 3) != views(0, "b", 3)
    assert views(0, "a", 3) != views(1, "a", 3)
    assert views(0, "a", 1)[0][0] == train_indices_of(0, "a", 0)


def train_indices_of(seed: int, key: str, view: int) -> list[int]:
    """View `view`'s frame indices drawn by hand from its named stream."""
    from common.seeding import text_key
    from data.sampling import train_indices

    rng = numpy_rng(seed, "cache-view", text_key(key), view)
    return train_indices(16, 4, "uniform", 2, rng).tolist()


# ---------------------------------------------------------------- tokens


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float16", 2e-3)])
def test_cached_tokens_equal_the_spatial_forward(source, tmp_path, dtype, tol) -> None:
    cfg = _cfg(source)
    out = tmp_path / "cache"
    report = _build(cfg, out, dtype=dtype)
    assert report["clips"] == SHARDS * PER_SHARD and report["units_built"] == SHARDS
    _finish(cfg, out, dtype)
    records = _records(out)
    assert len(records) == SHARDS * PER_SHARD * VIEWS
    model, _ = _model(cfg)
    clips = _source_clips(source)
    for view in range(VIEWS):
        samples = sorted(clips.items())
        frames = _reference_frames(cfg, model.spatial, samples, view)
        with torch.no_grad():
            ref = model.spatial(frames)
        for j, (key, sample) in enumerate(samples):
            rec = records[(key, view)]
            embed, patches = decode_array(rec[EMBED]), decode_array(rec[PATCHES])
            assert embed.dtype == np.dtype(dtype) and embed.shape == (4, 96)
            assert patches.shape == (4, 16, 96)
            torch.testing.assert_close(torch.tensor(embed).float(), ref.cls[j], rtol=tol, atol=tol)
            torch.testing.assert_close(
                torch.tensor(patches).float(), ref.patches[j], rtol=tol, atol=tol
            )
            meta = json.loads(rec["json"])
            idx, box, label = _views(cfg, key, sample)[view]
            assert meta["frames"] == idx.tolist() and int(rec["cls"]) == label


def test_dali_writes_each_view_as_if_decoded_alone(source, tmp_path) -> None:
    """DALI decodes a clip's K views as one item (the video once, a crop per view); the tokens
    are those of each view decoded on its own."""
    from data.dali_decode import DaliClipDecoder

    cfg = _cfg(source, "data.decoder=auto")
    out = tmp_path / "cache"
    _build(cfg, out, dtype="float32")
    _finish(cfg, out, "float32")
    records = _records(out)
    model, _ = _model(cfg)
    samples = sorted(_source_clips(source).items())
    alone = DaliClipDecoder(
        max_batch=len(samples), size=cfg.spatial.img_size, device=torch.device("cpu")
    )
    for view in range(VIEWS):
        items = [(s["webm"], *_views(cfg, key, s)[view][:2]) for key, s in samples]
        clips, bad = alone.decode(items)
        assert bad == []
        with torch.no_grad():
            ref = model.spatial(
                normalise(clips, model.spatial.mean, model.spatial.std, torch.float32)
            )
        for j, (key, _) in enumerate(samples):
            embed = torch.tensor(decode_array(records[(key, view)][EMBED]))
            torch.testing.assert_close(embed, ref.cls[j], rtol=1e-5, atol=1e-5)


def test_pooled_and_cls_only_layouts(source, tmp_path) -> None:
    """Pooled patch tokens are the average over each grid cell; CLS-only stores no patches."""
    cfg = _cfg(source, "spatial.patch_tokens=pooled", "spatial.pool_grid=2")
    model, _ = _model(cfg)
    whole = _model(_cfg(source))[0]
    frames = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        pooled, full = model.spatial(frames).patches, whole.spatial(frames).patches
    grid = full.reshape(1, 2, 4, 4, 96)
    top_left = grid[:, :, :2, :2].mean(dim=(2, 3))
    torch.testing.assert_close(pooled[:, :, 0], top_left)
    assert pooled.shape == (1, 2, 4, 96)
    out = tmp_path / "cls"
    cfg = _cfg(source, "spatial.patch_tokens=none", "adapter.kind=mlp")
    _build(cfg, out)
    _finish(cfg, out)
    rec = next(iter(_records(out).values()))
    assert PATCHES not in rec and decode_array(rec[EMBED]).shape == (4, 96)


def test_config_refuses_a_cache_outside_frozen_mode_and_attn_without_patches() -> None:
    with pytest.raises(ValueError, match="data.cache .* needs mode=frozen"):
        tiny_config("data.cache=/tmp/x", "mode=full")
    with pytest.raises(ValueError, match="adapter.kind=attn .*patch_tokens=none"):
        tiny_config("spatial.patch_tokens=none")
    with pytest.raises(ValueError, match="pool_grid"):
        tiny_config("spatial.patch_tokens=pooled", "spatial.pool_grid=0")


def test_spatial_sha256_is_stable_and_changes_with_any_weight(source) -> None:
    cfg = _cfg(source)
    a, sha = _model(cfg)
    b, same = _model(cfg)
    assert sha == same and len(sha) == 64
    with torch.no_grad():
        b.spatial.vit.blocks[0].mlp.fc1.weight[0, 0] += 1e-6
    assert state_sha256(b.spatial) != state_sha256(a.spatial)


def test_decoded_arrays_equal_numpys_whether_or_not_the_header_was_seen() -> None:
    rng = np.random.default_rng(0)
    arrays = [
        rng.standard_normal((4, 96)).astype(np.float16),
        rng.standard_normal((4, 16, 96)).astype(np.float32),
        np.arange(6, dtype=np.int64).reshape(2, 3),
    ]
    for array in arrays:
        for _ in range(2):  # the second decode reuses the header the first one parsed
            got = decode_array(encode_array(array))
            assert got.dtype == array.dtype and got.shape == array.shape
            assert np.array_equal(got, array) and not got.flags.writeable
        other = array + 1  # same header, other values: not served from the first payload
        assert np.array_equal(decode_array(encode_array(other)), other)
    fortran = np.asfortranarray(rng.standard_normal((3, 5)))
    buffer = io.BytesIO()
    np.save(buffer, fortran)
    assert np.array_equal(decode_array(buffer.getvalue()), fortran)
    payload = encode_array(arrays[0])
    with pytest.raises(ValueError, match="does not hold"):
        decode_array(payload[:-2])  # truncated after its header was seen
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        decode_array(buffer.getvalue())


def test_storage_figures_follow_the_layout() -> None:
    """ViViT-B/16 at 224 px, 32 frames, float16: the README's figures."""
    rows = {r["layout"]: r for r in storage_rows(32, 768, 196, clips=240_000, grids=(4,))}
    assert rows["CLS only"]["bytes_per_clip"] == 32 * 768 * 2 == 49_152
    assert rows["pooled 4x4"]["bytes_per_clip"] == 32 * 17 * 768 * 2
    assert rows["whole"]["bytes_per_clip"] == 32 * 197 * 768 * 2
    assert rows["whole"]["total_bytes"] == 240_000 * 9_682_944
    assert view_bytes(32, 768, 0) * 240_000 == pytest.approx(11.8e9, rel=0.01)


# ---------------------------------------------------------------- training from the cache


def _trainer(source, cache: Path | None):
    from core.trainer import Trainer

    extra = [f"data.cache={cache}"] if cache else []
    return Trainer(_cfg(source, *extra), num_classes=NUM_CLASSES)


def _cached_batch(out: Path, keys: list[str], view: int):
    records = _records(out)
    embed = torch.stack([torch.tensor(decode_array(records[(k, view)][EMBED])) for k in keys])
    patches = torch.stack([torch.tensor(decode_array(records[(k, view)][PATCHES])) for k in keys])
    labels = torch.tensor([int(records[(k, view)]["cls"]) for k in keys])
    return (embed, patches), labels


def test_training_step_from_the_cache_equals_one_from_videos(source, tmp_path) -> None:
    cfg = _cfg(source)
    out = tmp_path / "cache"
    _build(cfg, out)
    _finish(cfg, out)
    trainer = _trainer(source, out)
    assert trainer.spatial_sha256 == _model(cfg)[1]  # the trainer pins the same weights
    torch.manual_seed(1)
    with torch.no_grad():  # a trained-looking head: the zero-initialised one outputs zeros
        for p in trainer.engine.module.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    samples = sorted(_source_clips(source).items())[:4]
    frames = _reference_frames(cfg, trainer.model.spatial, samples, view=1)
    tokens, labels = _cached_batch(out, [k for k, _ in samples], view=1)
    assert tokens[0].dtype == torch.float16
    video_logits = trainer.eval_forward(frames)
    cache_logits = trainer.eval_forward(tokens)
    assert video_logits.abs().max() > 0.1
    torch.testing.assert_close(cache_logits, video_logits, rtol=2e-3, atol=2e-3)
    trainer.engine.train()
    video_loss = torch.nn.functional.cross_entropy(trainer.forward(frames).float(), labels)
    cache_loss = trainer.train_step(tokens, labels)  # the real step, through the engine
    torch.testing.assert_close(cache_loss, video_loss.detach(), rtol=2e-3, atol=2e-3)


def test_a_stale_cache_is_refused_naming_the_field(source, tmp_path) -> None:
    cfg = _cfg(source)
    out = tmp_path / "cache"
    _build(cfg, out)
    _finish(cfg, out)

    def expect(cfg, seed_cfg=None):
        model, sha = _model(seed_cfg or cfg)
        return cache_spec(cfg, model.spatial, sha)

    def refused(expectation) -> CacheMismatch:
        with pytest.raises(CacheMismatch) as err:
            open_cached_train_batches(
                dataclasses.replace(cfg.data, cache=str(out)),
                batch_size=2,
                rank=0,
                world_size=1,
                seed=0,
                device=torch.device("cpu"),
                expect=expectation,
                classes=list("abcd"),
            )
        return err.value

    ok = expect(cfg)
    frames8 = refused(expect(_cfg(source, "data.frames=8")))
    assert frames8.field == "data.frames" and (frames8.cached, frames8.run) == (4, 8)
    assert "data.frames=4" in str(frames8) and "data.frames=8" in str(frames8)
    other = refused(expect(cfg, _cfg(source, "seed=5")))  # other (random) spatial weights
    assert other.field == "spatial.sha256" and other.cached == ok["spatial.sha256"]
    pooled = refused(expect(_cfg(source, "spatial.patch_tokens=pooled")))
    assert pooled.field == "spatial.patch_tokens"
    size = refused(expect(_cfg(source, "spatial.img_size=48")))
    assert size.field == "spatial.img_size" and str(size).count("48") >= 1
    # building more into the same directory with other settings is refused as well
    with pytest.raises(CacheMismatch, match="data.frames"):
        _build(_cfg(source, "data.frames=8"), out)


# ---------------------------------------------------------------- ranks and resume


def test_two_ranks_build_disjoint_parts_whose_union_is_every_clip_view_once(
    source, tmp_path
) -> None:
    cfg = _cfg(source)
    split, single = tmp_path / "two", tmp_path / "one"
    reports = [_build(cfg, split, rank=r, world=2) for r in (0, 1)]
    assert [r["units"] for r in reports] == [2, 1]  # shards 0, 2 | 1
    assert sum(r["clips"] for r in reports) == SHARDS * PER_SHARD
    ranks = [json.loads(part_path(split, "train", u).read_text())["rank"] for u in range(SHARDS)]
    assert ranks == [0, 1, 0]
    _finish(cfg, split)
    _build(cfg, single)
    _finish(cfg, single)
    two, one = _records(split), _records(single)
    clips = _source_clips(source)
    assert set(two) == {(k, v) for k in clips for v in range(VIEWS)} == set(one)
    for key in two:
        assert two[key]["json"] == one[key]["json"]
        a, b = decode_array(two[key][EMBED]), decode_array(one[key][EMBED])
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-3)


class _Killed(BaseException):
    """Stands for SIGKILL: nothing in the build may catch it."""


def test_a_killed_build_resumes_without_redoing_complete_shards(source, tmp_path) -> None:
    cfg = _cfg(source)
    out = tmp_path / "cache"
    model, _ = _model(cfg)
    calls = []

    def dies_in_shard_1(frames):
        calls.append(len(frames))
        if len(calls) == 3:  # shard 0 took two forwards (2 + 1 clips, x 2 views)
            raise _Killed
        return _encode(model.spatial)(frames)

    with pytest.raises(_Killed):
        _build(cfg, out, encode=dies_in_shard_1)
    assert part_path(out, "train", 0).is_file() and not part_path(out, "train", 1).exists()
    assert not (out / view_shard_name("train", 0, 1)).exists()
    assert not (out / CACHE_MANIFEST).exists()
    done = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("train-*-000000.tar")}
    done[part_path(out, "train", 0)] = (0, part_path(out, "train", 0).stat().st_mtime_ns)
    assert len(done) == VIEWS + 1
    # a SIGKILL mid-write leaves a temporary behind; the next run removes it
    stale = out / f".{view_shard_name('train', 1, 2)}.tmp-999999"
    stale.write_bytes(b"half a tar")
    with pytest.raises(Exception, match="not built"):
        _finish(cfg, out)  # incomplete: no cache.json

    encoded = []

    def counting(frames):
        encoded.append(len(frames))
        return _encode(model.spatial)(frames)

    report = _build(cfg, out, encode=counting)
    assert report["units_resumed"] == 1 and report["units_built"] == 2
    assert sum(encoded) == 2 * PER_SHARD * VIEWS  # only shards 1 and 2 were encoded
    assert not stale.exists()
    for path, (ino, mtime) in done.items():
        assert path.stat().st_mtime_ns == mtime and (ino == 0 or path.stat().st_ino == ino)
    manifest = _finish(cfg, out)
    assert manifest["splits"]["train"]["clips"] == SHARDS * PER_SHARD
    assert len(_records(out)) == SHARDS * PER_SHARD * VIEWS


def test_decoding_ahead_writes_the_cache_the_synchronous_build_writes(source, tmp_path) -> None:
    """`data.prefetch` decodes batch k+1 in a thread while batch k is encoded and written:
    the same batches in the same order, so the same bytes."""
    ahead, inline = tmp_path / "ahead", tmp_path / "inline"
    _build(_cfg(source, "data.prefetch=2"), ahead)
    _build(_cfg(source, "data.prefetch=0"), inline)
    for out in (ahead, inline):
        _finish(_cfg(source), out)
    a, b = _records(ahead), _records(inline)
    assert len(a) == SHARDS * PER_SHARD * VIEWS and a.keys() == b.keys()
    for key, record in a.items():
        for name in ("cls", "json", EMBED, PATCHES):
            assert record[name] == b[key][name], (key, name)


def test_cut_videos_write_the_cache_whole_videos_write(tmp_path, monkeypatch) -> None:
    """`data.gop_trim`: DALI decodes only each clip's key-frame groups, yet the tokens and the
    frame numbers written with them are those of the whole video."""
    rng = np.random.default_rng(7)
    long = [
        np.clip(
            rng.integers(0, 256, (1, 32, 32, 3)) + 2 * np.arange(96)[:, None, None, None], 0, 255
        )
        for _ in range(3)
    ]
    recs = [
        (f"l{i:03d}", video_record(c.astype(np.uint8), i % NUM_CLASSES)) for i, c in enumerate(long)
    ]
    root = write_shard_set(tmp_path / "src", {"train": [recs], "val": [recs[:1]]}, list("abcd"))
    cuts: list[bool] = []

    def counted(video, views, codec, trim):
        handed = views_for_decoder(video, views, codec, trim)
        if trim:
            cuts.append(handed[0] is not video)
        return handed

    monkeypatch.setattr(data.cache_build, "views_for_decoder", counted)
    outs = {}
    for trim in ("true", "false"):
        outs[trim] = tmp_path / f"cut-{trim}"
        _build(_cfg(root, "data.decoder=auto", f"data.gop_trim={trim}"), outs[trim])
        _finish(_cfg(root), outs[trim])
    assert cuts == [True] * 3  # gop_trim=true only, every clip
    a, b = _records(outs["true"]), _records(outs["false"])
    assert len(a) == 3 * VIEWS and a.keys() == b.keys()
    for key, record in a.items():
        assert max(json.loads(record["json"])["frames"]) > 32  # the video's own numbering
        for name in ("cls", "json", EMBED, PATCHES):
            assert record[name] == b[key][name], (key, name)


@pytest.mark.timeout(120)
def test_a_decode_failing_ahead_is_the_build_error_not_a_hang(source, tmp_path, monkeypatch):
    cfg = _cfg(source, "data.prefetch=2")
    out = tmp_path / "cache"
    real = CacheBuilder._decode
    calls = []

    def fails_second(self, jobs):
        calls.append(threading.current_thread().name)
        if len(calls) == 2:
            raise RuntimeError("decoder broke")
        return real(self, jobs)

    monkeypatch.setattr(CacheBuilder, "_decode", fails_second)
    with pytest.raises(RuntimeError, match="decoder broke"):
        _build(cfg, out)
    assert calls == ["vivit-cache-decode"] * 2, "decoded in the background thread"
    assert not part_path(out, "train", 0).exists(), "shard 0 was not finished"
    assert not list(out.glob("*.tar")) and not list(out.glob(".*.tmp-*"))


# ---------------------------------------------------------------- reader


def _reader(source, out: Path, seed: int = 0, *extra: str):
    cfg = _cfg(source, f"data.cache={out}", *extra)
    model, sha = _model(cfg)
    return open_cached_train_batches(
        cfg.data,
        batch_size=4,
        rank=0,
        world_size=1,
        seed=seed,
        device=torch.device("cpu"),
        expect=cache_spec(cfg, model.spatial, sha),
        classes=list("abcd"),
    )


def test_reader_is_deterministic_per_seed_and_step_and_draws_every_view(source, tmp_path):
    cfg = _cfg(source)
    out = tmp_path / "cache"
    _build(cfg, out)
    _finish(cfg, out)
    by_embed = {decode_array(r[EMBED]).tobytes(): v for (_, v), r in _records(out).items()}

    def draws(seed: int, start: int, n: int = 6):
        with _reader(source, out, seed) as reader:
            it = reader.batches(start)
            try:
                return [next(it) for _ in range(n)]
            finally:
                it.close()

    first, again = draws(0, 3), draws(0, 3)
    for ((e1, p1), y1), ((e2, p2), y2) in zip(first, again, strict=True):
        assert torch.equal(e1, e2) and torch.equal(p1, p2) and torch.equal(y1, y2)
        assert e1.shape == (4, 4, 96) and p1.shape == (4, 4, 16, 96)
        assert e1.dtype == torch.float16
    other = draws(1, 3)
    assert any(not torch.equal(a[0][0], b[0][0]) for a, b in zip(first, other, strict=True))
    seen = {by_embed[e.numpy().tobytes()] for (embed, _), _ in draws(0, 0, 12) for e in embed}
    assert seen == set(range(VIEWS))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_reader_continues_exactly_where_the_checkpoint_left_it(source, tmp_path, workers):
    """The position a checkpoint stores replays the cache stream: after a resume the batches
    are those the uninterrupted run drew next (the stream seeded anew would give others)."""
    cfg = _cfg(source)
    out = tmp_path / "cache"
    _build(cfg, out)
    _finish(cfg, out)

    def draws(n: int, start: int = 0, position=None, save_after: int | None = None):
        saved = None
        with _reader(source, out, 0, f"data.workers={workers}") as reader:
            it = reader.batches(start, position)
            got = []
            for i in range(n):
                got.append(next(it))
                if i == save_after:
                    saved = json.loads(json.dumps(reader.position()))  # plain JSON, as saved
            it.close()
        return got, saved

    whole, saved = draws(7, save_after=2)
    assert saved is not None and saved["items"] >= 3 * 4 and saved["workers"] == workers
    assert saved["counters"]["clips"] == 3 * 4
    resumed, _ = draws(4, start=3, position=saved)
    anew, _ = draws(4, start=3)

    def same(a, b) -> bool:
        (ea, pa), ya = a
        (eb, pb), yb = b
        return torch.equal(ea, eb) and torch.equal(pa, pb) and torch.equal(ya, yb)

    assert all(same(a, b) for a, b in zip(whole[3:], resumed, strict=True))
    assert not all(same(a, b) for a, b in zip(whole[3:], anew, strict=True))


def test_a_cache_of_nothing_but_corrupt_tokens_is_an_error_not_a_hang(source, tmp_path):
    """Every token member unreadable: the reader counts them, then stops naming the cache."""
    import io
    import tarfile

    cfg = _cfg(source)
    out = tmp_path / "cache"
    _build(cfg, out)
    _finish(cfg, out)
    for shard in out.glob("*.tar"):
        with tarfile.open(shard) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
        with tarfile.open(shard, "w") as tar:
            for member, payload in members:
                if member.name.endswith(EMBED):
                    payload = b"not an array"
                    member.size = len(payload)
                tar.addfile(member, io.BytesIO(payload))
    with _reader(source, out) as reader:
        with pytest.raises(RuntimeError, match="no usable record .* from token cache"):
            next(iter(reader.batches(0)))
        assert reader.counters["corrupt_skipped"] > 1000


# ---------------------------------------------------------------- cost


def test_a_cached_step_skips_the_spatial_forward(source, tmp_path) -> None:
    """Trainer step only (no input pipeline): frames pay the frozen spatial forward, tokens do
    not. Counted with a hook (a timing threshold was flaky on a shared 2-core machine); the
    times are printed for the record."""
    cfg = _cfg(source)
    out = tmp_path / "cache"
    _build(cfg, out)
    _finish(cfg, out)
    trainer = _trainer(source, out)
    samples = sorted(_source_clips(source).items())[:4]
    frames = _reference_frames(cfg, trainer.model.spatial, samples, view=0)
    tokens, labels = _cached_batch(out, [k for k, _ in samples], view=0)
    calls = []
    hook = trainer.model.spatial.register_forward_hook(lambda *_: calls.append(1))

    def best_of(batch, n=5) -> tuple[float, int]:
        calls.clear()
        times = []
        for _ in range(n):  # process CPU time: steadier than wall time on a shared machine
            t0 = time.process_time()
            float(trainer.train_step(batch, labels))
            times.append(time.process_time() - t0)
        return min(times), len(calls)

    (from_frames, spatial_calls_frames), (from_cache, spatial_calls_cache) = (
        best_of(frames),
        best_of(tokens),
    )
    hook.remove()
    print(
        f"tiny config, 4 clips x 4 frames: step from frames {from_frames * 1e3:.1f} ms, "
        f"from cache {from_cache * 1e3:.1f} ms: {from_frames / from_cache:.2f}x"
    )
    assert spatial_calls_frames >= 5 and spatial_calls_cache == 0


# ---------------------------------------------------------------- the commands


@pytest.mark.slow
def test_cache_build_then_train_from_it_and_refuse_another_frame_count(source, tmp_path):
    """`vivit cache build` -> `vivit train data.cache=DIR` (evaluation from videos); a run with
    other frames is refused with exit 2, naming the field and both values."""
    import subprocess
    import sys

    from tests.test_train_cli import REPO, vivit

    out = tmp_path / "cache"
    common = [f"data.root={source}", "data.synthetic=false", "data.frames=4", "data.workers=0"]
    built = vivit(
        "cache",
        "build",
        "configs/tiny.yaml",
        "--out",
        str(out),
        "--views",
        "2",
        "--no-progress",
        *common,
    )
    assert "9 clips x 2 views" in built.stdout and "projected to 240,000 clips" in built.stdout
    manifest = json.loads((out / CACHE_MANIFEST).read_text())
    storage = manifest["splits"]["train"]["storage"]
    assert storage["payload_bytes_per_clip"] == 2 * view_bytes(4, 96, 16)
    assert storage["disk_bytes_per_clip"] >= storage["payload_bytes_per_clip"]
    assert manifest["splits"]["train"]["build"]["build_s"] > 0
    rebuilt = vivit(
        "cache",
        "build",
        "configs/tiny.yaml",
        "--out",
        str(out),
        "--views",
        "2",
        "--no-progress",
        *common,
    )
    assert "3 source shards already done" in rebuilt.stdout
    run = tmp_path / "run"
    train = [
        "configs/tiny.yaml",
        f"out_dir={run}",
        *common,
        "train.steps=4",
        "train.log_every=2",
        "optim.warmup_steps=1",
        "train.micro_batch_size=4",
        "train.progress=false",
        "tracking.enabled=false",
    ]
    vivit("train", *train, f"data.cache={out}")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["val_videos"] == 4 and summary["clips"] >= 16
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.cli",
            "train",
            *train,
            f"data.cache={out}",
            "data.frames=8",
            f"out_dir={tmp_path / 'refused'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "data.frames=4" in proc.stderr and "data.frames=8" in proc.stderr


@pytest.mark.distributed
@pytest.mark.slow
def test_two_launcher_ranks_build_one_cache(source, tmp_path) -> None:
    """`deepspeed --num_gpus 2 launch/cache.py build ...`: the ranks split the source shards
    and rank 0 writes the manifest once both are done."""
    from tests.test_distributed import deepspeed_launch

    out = tmp_path / "cache"
    deepspeed_launch(
        "launch/cache.py", "build", "configs/tiny.yaml", "--out", str(out), "--views", "2",
        "--no-progress", f"data.root={source}", "data.synthetic=false", "data.frames=4",
        "data.workers=0",
    )  # fmt: skip
    manifest = read_cache_manifest(out)
    train = manifest["splits"]["train"]
    assert train["clips"] == SHARDS * PER_SHARD and train["build"]["world_size"] == 2
    ranks = [json.loads(part_path(out, "train", u).read_text())["rank"] for u in range(SHARDS)]
    assert ranks == [0, 1, 0]
    assert len(_records(out)) == SHARDS * PER_SHARD * VIEWS
