"""`temporal.kind=mean`: the spatial-only (bag-of-frames) baseline of Scenic ViViT."""

from __future__ import annotations

import pytest
import torch

from benchmarks.flops import dims_of, train_step_flops
from core.config import load_config
from core.freezing import freeze_spatial, trainable_module
from core.model import build_model
from core.params import count_params
from core.temporal import FrameMean, TemporalConfig, TemporalTransformer
from tests.model_helpers import CLASSES, FRAMES, tiny_config, tiny_frames


def _nonzero_head(model) -> None:
    torch.nn.init.normal_(model.temporal_head.head.weight, std=0.5)


def test_mean_baseline_is_order_blind_and_the_transformer_is_not() -> None:
    torch.manual_seed(0)
    frames = tiny_frames(batch=3)
    reverse = frames.flip(1)
    outputs = {}
    for kind in ("mean", "transformer"):
        model = build_model(tiny_config(temporal=TemporalConfig(kind=kind, depth=2)), CLASSES)
        _nonzero_head(model)
        model.eval()
        with torch.no_grad():
            outputs[kind] = (model(frames), model(reverse))
        assert outputs[kind][0].shape == (3, CLASSES)
    assert torch.allclose(*outputs["mean"], atol=1e-5)
    assert not torch.allclose(*outputs["transformer"], atol=1e-3)


def test_mean_baseline_has_no_temporal_parameters_and_trains_the_head() -> None:
    cfg = tiny_config(temporal=TemporalConfig(kind="mean"))
    model = build_model(cfg, CLASSES)
    assert isinstance(model.temporal_head.temporal, FrameMean)
    assert not list(model.temporal_head.temporal.parameters())
    freeze_spatial(model)
    trainable = trainable_module(model, "frozen")
    assert count_params(trainable)[0] == 96 * CLASSES + CLASSES  # the linear head only
    _nonzero_head(model)
    logits = model(tiny_frames())
    logits.sum().backward()
    assert model.temporal_head.head.weight.grad.abs().sum() > 0
    transformer = build_model(tiny_config(), CLASSES)
    assert isinstance(transformer.temporal_head.temporal, TemporalTransformer)
    mean_flops = train_step_flops(dims_of(model), "frozen", FRAMES, 2)
    full_flops = train_step_flops(dims_of(transformer), "frozen", FRAMES, 2)
    assert 0 < mean_flops < full_flops


def test_mean_kind_is_a_config_key_and_rejects_what_it_cannot_do() -> None:
    cfg = load_config("configs/tiny.yaml", ["temporal.kind=mean"])
    assert cfg.temporal.kind == "mean"
    with pytest.raises(ValueError, match="temporal.kind=mean"):
        TemporalConfig(kind="mean", init="image")
    with pytest.raises(ValueError, match="temporal.kind"):
        TemporalConfig(kind="lstm")  # type: ignore[arg-type]
