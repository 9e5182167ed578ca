"""Freezing: frozen weights never change and get no grad; every trainable part learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.freezing import count_params, freeze_spatial, trainable_module
from core.model import build_model
from core.params import param_groups
from tests.model_helpers import CLASSES, tiny_config, tiny_frames

STEPS = 3
"""Zero head, zero up-projection: grads reach the head at step 1, the adapter's inner layers by 3."""


def _train(model, module, steps: int = STEPS) -> list[float]:
    optimizer = torch.optim.AdamW(param_groups(module, 0.05, 1e-2, spatial_lr_mult=0.1), lr=1e-2)
    labels = torch.arange(2) % CLASSES
    losses = []
    model.train()
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(tiny_frames(seed=step)), labels)
        loss.backward()
        losses.append(loss.item())
        if step < steps - 1:
            optimizer.step()
    return losses


@pytest.mark.parametrize("kind", ["none", "mlp", "attn"])
def test_frozen_training_touches_only_trainable_parts(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(kind), CLASSES)
    freeze_spatial(model, torch.float32)
    module = trainable_module(model, "frozen")
    assert module is model.temporal_head
    before = {k: v.clone() for k, v in model.spatial.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.temporal_head.state_dict().items()}

    losses = _train(model, module)

    assert all(torch.isfinite(torch.tensor(losses)))
    assert not model.spatial.training and model.temporal_head.training
    for name, param in model.spatial.named_parameters():
        assert not param.requires_grad and param.grad is None, name
    for name, value in model.spatial.state_dict().items():
        assert torch.equal(value, before[name]), f"frozen {name} changed"
    for name, param in model.temporal_head.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"{name} got a zero gradient"
    changed = [
        k for k, v in model.temporal_head.state_dict().items() if not torch.equal(v, head_before[k])
    ]
    assert "head.weight" in changed and any(k.startswith("temporal.blocks") for k in changed)


def test_full_mode_trains_spatial_too() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config("mlp", mode="full"), CLASSES)
    module = trainable_module(model, "full")
    assert module is model
    before = model.spatial.vit.blocks[0].attn.qkv.weight.clone()
    _train(model, module)
    assert model.spatial.training
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert not torch.equal(before, model.spatial.vit.blocks[0].attn.qkv.weight)


def test_half_precision_frozen_spatial_feeds_fp32_head() -> None:
    model = build_model(tiny_config("attn"), CLASSES)
    freeze_spatial(model, torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.spatial.parameters())
    assert all(p.dtype == torch.float32 for p in model.temporal_head.parameters())
    tokens = model.spatial(tiny_frames())
    assert tokens.cls.dtype == torch.bfloat16 and not tokens.cls.requires_grad
    logits = model(tiny_frames())
    assert logits.dtype == torch.float32
    logits.sum().backward()
    assert model.temporal_head.head.weight.grad is not None


def test_eval_mode_survives_train_and_counts() -> None:
    model = build_model(tiny_config("mlp"), CLASSES)
    total = sum(p.numel() for p in model.parameters())
    spatial_total = sum(p.numel() for p in model.spatial.parameters())
    assert count_params(model) == (total, 0)
    freeze_spatial(model, torch.float32)
    model.train()
    assert not any(m.training for m in model.spatial.modules())
    assert all(m.training for m in model.temporal_head.modules())
    assert count_params(model) == (total - spatial_total, spatial_total)
    assert count_params(trainable_module(model, "frozen")) == (total - spatial_total, 0)


def test_trainable_module_checks_mode() -> None:
    model = build_model(tiny_config(), CLASSES)
    with pytest.raises(ValueError, match="freeze_spatial"):
        trainable_module(model, "frozen")
    freeze_spatial(model)
    with pytest.raises(ValueError, match="mode=full"):
        trainable_module(model, "full")
    with pytest.raises(ValueError, match="expected full or frozen"):
        trainable_module(model, "half")  # type: ignore[arg-type]
