"""GPU-only paths (skipped without CUDA; run on a GPU machine with `pytest -m gpu`):
DALI `mixed` (NVDEC) decoding of H.264 with exact frame selection, bf16 frozen-mode steps,
ZeRO-2 on one GPU, checkpoint/resume on GPU."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from core.checkpoint import resume_checkpoint, save_checkpoint
from tests.data_helpers import index_frames, level
from tests.engine_helpers import NUM_CLASSES, tiny_trainer
from tests.tensor_batches import TensorBatches

pytestmark = pytest.mark.gpu
REQUEST = [5, 0, 0, 7, 3, 3, 1, 6]


def test_dali_mixed_decodes_h264_exact_frames() -> None:
    from data.dali_decode import DaliClipDecoder
    from data.transcode import encode_frames

    # 64 px: NVDEC refuses H.264 below 48x16 (seen on the H100; see test below).
    data = encode_frames(index_frames(8, 64), fps=8, codec="h264", gop=4, lossless=False)
    dec = DaliClipDecoder(max_batch=1, size=32, device=torch.device("cuda:0"), num_threads=2)
    clips, bad = dec.decode([(data, np.array(REQUEST), (0, 0, 1, 1))])
    assert bad == [] and clips.device.type == "cuda"
    values = clips[0, :, 0, 16, 16].float().cpu()
    expected = torch.tensor([float(level(i)) for i in REQUEST])
    assert torch.allclose(values, expected, atol=6), "lossy H.264: levels are far apart, atol small"


def test_dali_mixed_decodes_a_cut_h264_video_as_the_whole_one() -> None:
    """NVDEC on the key-frame groups `data.gop_trim` cuts out: the same pixels as on the whole
    video (checked on the CPU decoder in tests/test_gop_trim.py; NVDEC is another decoder)."""
    from data.dali_decode import DaliClipDecoder
    from data.gop_trim import trim_views
    from data.transcode import encode_frames

    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 255, (120, 8, 8, 3)).astype(np.uint8)
    frames = np.repeat(np.repeat(blocks, 8, 1), 8, 2)  # 64 px: above NVDEC's minimum
    data = encode_frames(frames, fps=25, codec="h264", gop=8)
    views = [
        (np.array([3, 40, 90, 119]), (0, 0, 1, 1)),
        (np.array([60, 61, 62, 9]), (0.1, 0, 1, 1)),
    ]
    cut = trim_views(data, views, "h264")
    assert cut is not None
    dec = DaliClipDecoder(max_batch=2, size=32, device=torch.device("cuda:0"), num_threads=2)
    whole, bad = dec.decode([(data, idx, box) for idx, box in views])
    part, bad_cut = dec.decode([(cut[0], idx, box) for idx, box in cut[1]])
    assert bad == bad_cut == [] and torch.equal(whole, part)


def test_dali_mixed_decodes_repeated_views_as_each_view_alone() -> None:
    """`data.repeat_aug` and the cache build on NVDEC: k views of one video in one item (frames
    gathered on the GPU, a resize per view) give what decoding each view alone gives (checked on
    the CPU decoder in tests/test_data_decode.py)."""
    from data.dali_decode import DaliClipDecoder
    from data.transcode import encode_frames

    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 255, (16, 8, 8, 3)).astype(np.uint8)
    data = encode_frames(np.repeat(np.repeat(blocks, 8, 1), 8, 2), fps=8, codec="h264", gop=4)
    views = [np.array([1, 9]), np.array([3, 3]), np.array([14, 0])]
    boxes = np.array([[0, 0, 1, 1], [0.2, 0.1, 0.9, 0.8], [1, 0, 0, 1]], np.float32)
    cuda = torch.device("cuda:0")
    dec = DaliClipDecoder(max_batch=2, size=32, device=cuda, num_threads=2, views=3)
    one = DaliClipDecoder(max_batch=3, size=32, device=cuda, num_threads=2)
    got, bad = dec.decode([(data, np.concatenate(views), boxes)] * 2)
    alone, bad_alone = one.decode(list(zip([data] * 3, views, boxes, strict=True)))
    assert bad == bad_alone == [] and got.shape == (2, 6, 3, 32, 32)
    assert torch.equal(got[0].reshape(3, 2, 3, 32, 32), alone) and torch.equal(got[0], got[1])


def _steps(trainer, n: int, start: int = 0) -> list[float]:
    stream = TensorBatches(NUM_CLASSES, 4, 4, 32, seed=5).batches(start)
    return [float(trainer.train_step(*next(stream))) for _ in range(n)]


def test_bf16_frozen_training_zero2_on_one_gpu() -> None:
    trainer = tiny_trainer(
        "mode=frozen", "engine.ds_config=ds_configs/zero2_bf16.json", "engine.precision=auto"
    )
    assert trainer.device.type == "cuda" and trainer.dtype == torch.bfloat16
    spatial = trainer.model.spatial
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in spatial.parameters())
    before = {k: v.clone() for k, v in spatial.state_dict().items()}
    losses = _steps(trainer, 4)
    assert all(math.isfinite(x) for x in losses)
    assert trainer.engine.zero_optimization_stage() == 2
    assert all(torch.equal(v, before[k]) for k, v in spatial.state_dict().items())


def test_resume_on_gpu(tmp_path: Path) -> None:
    overrides = (
        "mode=frozen",
        "engine.ds_config=ds_configs/zero2_bf16.json",
        "engine.precision=auto",
        "train.steps=4",
    )
    reference = _steps(tiny_trainer(*overrides), 4)
    first = tiny_trainer(*overrides)
    _steps(first, 2)
    saved = save_checkpoint(
        first.engine, tmp_path, 2, {"mode": "frozen", "spatial_weights": None}, 0, 2
    )
    second = tiny_trainer(*overrides)
    second.step = resume_checkpoint(second.engine, saved, rank=0)
    assert _steps(second, 2, start=2) == pytest.approx(reference[2:], abs=1e-3)


@pytest.mark.parametrize("impl", ["torch", "deepspeed"])
def test_bf16_frozen_mode_learns_temporal_task(impl: str) -> None:
    """The CPU test of the same name in bf16 on the GPU. On the first H100 run (FusedAdam,
    bf16, ZeRO-2) the loss stayed at ln 4 for 60 steps: this checks both optimisers."""
    trainer = tiny_trainer(
        "mode=frozen",
        "adapter.kind=mlp",
        "optim.lr=3e-3",
        "train.steps=60",
        "engine.precision=auto",
        f"optim.impl={impl}",
    )
    assert trainer.dtype == torch.bfloat16
    losses = _steps(trainer, 60)
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10


def _h264_train_source(root: Path, *, size: int, clips: int, device: torch.device):
    """A bf16 training source on synthetic H.264 shards of `size` px, batches of 4 at T=4."""
    from data.config import DataConfig
    from data.loader import open_train_batches
    from data.synthetic import make_synthetic

    make_synthetic(
        root, clips=clips, val_clips=clips // 4, frames=8, size=size, seed=0, codec="h264"
    )
    return open_train_batches(
        DataConfig(root=str(root), frames=4, workers=1),
        batch_size=4,
        img_size=size,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        rank=0,
        world_size=1,
        seed=0,
        device=device,
        dtype=torch.bfloat16,
    )


def test_clips_below_nvdec_minimum_are_decoded_on_the_cpu(tmp_path: Path) -> None:
    """On the H100, 32 px clips made every DALI mixed batch fail (NVDEC's minimum is 48x16 for
    H.264) and the demo stopped with "no usable record": they must reach training via PyAV."""
    src = _h264_train_source(tmp_path / "s", size=32, clips=16, device=torch.device("cuda:0"))
    frames, labels = next(iter(src.batches(0)))
    assert frames.shape == (4, 4, 3, 32, 32) and frames.is_cuda and labels.is_cuda
    assert src.decoder == "dali-mixed" and src.stats()["corrupt_skipped"] == 0
    src.close()


def test_dali_mixed_source_on_an_unindexed_cuda_device(tmp_path: Path) -> None:
    """`vivit bench data` passes torch.device("cuda"): on the H100 (2026-11-27) the prefetch
    thread refused it (set_device needs an index) and, once past that, to_device took the
    NVDEC clips on cuda:0 for host clips ("cuda" != "cuda:0") and stacked an empty list."""
    src = _h264_train_source(tmp_path / "s", size=64, clips=8, device=torch.device("cuda"))
    frames, labels = next(iter(src.batches(0)))
    assert frames.shape == (4, 4, 3, 64, 64) and frames.is_cuda and labels.is_cuda
    assert src.decoder == "dali-mixed"
    src.close()
