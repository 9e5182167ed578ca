"""Parameter groups: decay by rule, frozen parameters excluded, per-part learning rates."""

from __future__ import annotations

import pytest
import torch

from core.freezing import freeze_spatial, trainable_module
from core.model import build_model
from core.params import param_groups
from tests.model_helpers import CLASSES, tiny_config

LR, WD = 1e-3, 0.05


def _names(module: torch.nn.Module, group: dict) -> list[str]:
    by_id = {id(p): n for n, p in module.named_parameters()}
    return [by_id[id(p)] for p in group["params"]]


def _check_decay_rules(module: torch.nn.Module, groups: list[dict]) -> None:
    seen: list[str] = []
    for group in groups:
        names = _names(module, group)
        seen += names
        assert group["lr"] == pytest.approx(LR * group["lr_scale"])
        if group["weight_decay"] > 0:
            for name, param in zip(names, group["params"], strict=True):
                assert param.ndim >= 2, f"{name} (norm/bias) is decayed"
                assert not name.endswith(("pos_embed", "cls_token", "query")), name
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable), "every trainable param exactly once"


@pytest.mark.parametrize("kind", ["mlp", "attn"])
def test_frozen_groups_hold_only_head_params(kind: str) -> None:
    model = build_model(tiny_config(kind), CLASSES)
    freeze_spatial(model)
    head = trainable_module(model, "frozen")
    groups = param_groups(head, WD, LR, spatial_lr_mult=0.1, layer_decay=0.75)
    _check_decay_rules(head, groups)
    frozen_ids = {id(p) for p in model.spatial.parameters()}
    assert not any(id(p) in frozen_ids for g in groups for p in g["params"])
    assert {g["lr"] for g in groups} == {LR}
    no_decay = {n for g in groups if g["weight_decay"] == 0 for n in _names(head, g)}
    assert {"temporal.pos_embed", "temporal.cls_token", "head.bias"} <= no_decay
    if kind == "attn":
        assert "adapter.query" in no_decay
    decay = {n for g in groups if g["weight_decay"] > 0 for n in _names(head, g)}
    assert "head.weight" in decay and "temporal.blocks.0.attn.qkv.weight" in decay


def test_full_mode_spatial_lr_multiplier_and_layer_decay() -> None:
    model = build_model(tiny_config("mlp", mode="full"), CLASSES)
    groups = param_groups(model, WD, LR, spatial_lr_mult=0.1)
    _check_decay_rules(model, groups)
    for group in groups:
        spatial = all(n.startswith("spatial.") for n in _names(model, group))
        assert group["lr"] == pytest.approx(LR * 0.1 if spatial else LR), group["name"]
    assert {"spatial.vit.pos_embed", "spatial.vit.cls_token"} <= {
        n for g in groups if g["weight_decay"] == 0 for n in _names(model, g)
    }

    layered = param_groups(model, WD, LR, spatial_lr_mult=0.1, layer_decay=0.5)
    _check_decay_rules(model, layered)
    lr_of = {n: g["lr"] for g in layered for n in _names(model, g)}
    depth = model.spatial.depth
    for i in range(depth):
        assert lr_of[f"spatial.vit.blocks.{i}.attn.qkv.weight"] == pytest.approx(
            LR * 0.1 * 0.5 ** (depth - i)
        )
    assert lr_of["spatial.vit.patch_embed.proj.weight"] == pytest.approx(
        LR * 0.1 * 0.5 ** (depth + 1)
    )
    assert lr_of["spatial.vit.norm.weight"] == pytest.approx(LR * 0.1)
    assert lr_of["temporal_head.head.weight"] == pytest.approx(LR)


def test_params_without_grad_are_left_out() -> None:
    model = build_model(tiny_config("mlp", mode="full"), CLASSES)
    model.spatial.vit.blocks[0].requires_grad_(False)
    groups = param_groups(model, WD, LR, spatial_lr_mult=0.1)
    names = {n for g in groups for n in _names(model, g)}
    assert not any(n.startswith("spatial.vit.blocks.0.") for n in names)
    assert "spatial.vit.blocks.1.attn.qkv.weight" in names
    torch.optim.AdamW(groups, lr=LR)  # groups are valid optimiser input
