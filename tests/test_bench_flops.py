"""The written-out FLOPs formula agrees with PyTorch's own FLOP counter on a small ViViT-FE."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.flops import dims_of, forward_flops, mfu, peak_bf16_tflops, train_step_flops
from core.adapter import AdapterConfig
from core.model import build_parts
from core.spatial import SpatialConfig
from core.temporal import TemporalConfig

FRAMES, BATCH, CLASSES = 6, 2, 7


def _model(adapter: str, temporal_width: int | None = None):
    torch.manual_seed(0)
    spatial = SpatialConfig(
        model="vit_tiny_patch16_224",
        img_size=32,
        patch_size=8,
        model_kwargs={"depth": 3, "embed_dim": 96, "num_heads": 3},
    )
    temporal = TemporalConfig(depth=2, width=temporal_width)
    return build_parts(
        spatial, AdapterConfig(kind=adapter, bottleneck=16, heads=4), temporal, FRAMES, CLASSES
    )


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize(("adapter", "width"), [("none", None), ("mlp", None), ("attn", 64)])
def test_forward_formula_matches_flop_counter(adapter: str, width: int | None) -> None:
    model = _model(adapter, width)
    frames = torch.randn(BATCH, FRAMES, 3, 32, 32)
    counted = _counted(lambda: model(frames))
    formula = forward_flops(dims_of(model), FRAMES, BATCH)
    assert formula == pytest.approx(counted, rel=0.01)


@pytest.mark.parametrize("mode", ["full", "frozen"])
def test_train_step_formula_matches_flop_counter(mode: str) -> None:
    model = _model("attn")
    if mode == "frozen":
        model.spatial.requires_grad_(False)
        model.spatial.frozen = True
    frames = torch.randn(BATCH, FRAMES, 3, 32, 32)
    labels = torch.randint(0, CLASSES, (BATCH,))

    def step() -> None:
        torch.nn.functional.cross_entropy(model(frames), labels).backward()

    counted = _counted(step)
    formula = train_step_flops(dims_of(model), mode, FRAMES, BATCH)
    # The formula charges a full backward (2x forward); autograd skips the input gradient
    # of the very first layer, so the counter sits a little below it.
    assert formula == pytest.approx(counted, rel=0.04)
    if mode == "frozen":
        full = train_step_flops(dims_of(model), "full", FRAMES, BATCH)
        assert formula < 0.5 * full


def test_peak_table_and_mfu() -> None:
    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_bf16_tflops("Tesla T4") is None
    assert mfu(989e12 * 0.5, 1.0, "NVIDIA H200") == pytest.approx(0.5)
    assert mfu(1e12, 1.0, "some cpu") is None
