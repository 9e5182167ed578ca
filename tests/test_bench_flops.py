"""The written-out FLOPs formula equals the matmul FLOPs a small ViViT-FE really executes.

Counted by `tests.flop_count.matmul_flops` (torch's FlopCounterMode, plus CPU attention, which
torch < 2.15 does not count), restricted to the op families the formula covers.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.flops import dims_of, forward_flops, mfu, peak_bf16_tflops, train_step_flops
from core.adapter import AdapterConfig
from core.model import build_parts
from core.spatial import SpatialConfig
from core.temporal import TemporalConfig
from tests.flop_count import matmul_flops

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
    total, per_op = matmul_flops(fn)
    # Attention must be in the count (fused kernel or bmm): torch < 2.15 reports CPU's fused
    # attention as 0 FLOPs, and a total without it would hide a wrong attention term.
    assert any("attention" in op or op in ("bmm", "baddbmm") for op in per_op), per_op
    return total


@pytest.mark.parametrize(("adapter", "width"), [("none", None), ("mlp", None), ("attn", 64)])
def test_forward_formula_matches_flop_counter(adapter: str, width: int | None) -> None:
    model = _model(adapter, width)
    frames = torch.randn(BATCH, FRAMES, 3, 32, 32)
    counted = _counted(lambda: model(frames))
    formula = forward_flops(dims_of(model), FRAMES, BATCH)
    assert formula == counted


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
    dims = dims_of(model)
    formula = train_step_flops(dims, mode, FRAMES, BATCH)
    # The formula charges a full backward (2x forward); autograd skips exactly one matmul of
    # it: the input gradient of the patch embedding (the pixels need none), in full mode.
    skipped = 2 * BATCH * FRAMES * dims.patches * dims.patch_values * dims.spatial_width
    assert formula - (skipped if mode == "full" else 0) == counted
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
