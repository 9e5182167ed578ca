"""Temporal init: image blocks copied exactly; checkpoints (stage 1 -> stage 2) loaded faithfully."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from core.init import find_checkpoint, read_checkpoint_weights
from core.model import build_model
from core.spatial import file_sha256
from core.temporal import TemporalConfig
from tests.model_helpers import CLASSES, tiny_config, tiny_spatial


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Give every tensor a distinct non-init value so a copy cannot pass by accident."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))


def _write_checkpoint(
    ckpt: Path, state: dict[str, torch.Tensor], meta: dict | None = None, complete: bool = True
) -> Path:
    ckpt.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(ckpt / "model.safetensors"))
    if complete:
        (ckpt / "meta.json").write_text(json.dumps(meta or {"step": 0, "mode": "full"}))
    return ckpt


def _stage1(seed: int = 1, adapter: str = "none"):
    model = build_model(tiny_config(adapter, frames=4, mode="full"), CLASSES)
    _randomise(model, seed)
    return model


def test_image_init_copies_last_blocks_exactly() -> None:
    model = build_model(tiny_config(temporal=TemporalConfig(depth=2, init="image")), CLASSES)
    vit, temporal = model.spatial.vit, model.temporal_head.temporal
    for i, block in enumerate(temporal.blocks):
        source = vit.blocks[2 + i].state_dict()
        for name, value in block.state_dict().items():
            assert torch.equal(value, source[name]), f"block {i} {name}"
    for name, value in temporal.norm.state_dict().items():
        assert torch.equal(value, vit.norm.state_dict()[name])
    random = build_model(tiny_config(), CLASSES)
    assert not torch.equal(
        random.temporal_head.temporal.blocks[0].attn.qkv.weight,
        random.spatial.vit.blocks[2].attn.qkv.weight,
    )


def test_image_init_rejects_what_cannot_be_copied() -> None:
    with pytest.raises(ValueError, match="only 4 blocks"):
        build_model(tiny_config(temporal=TemporalConfig(depth=5, init="image")), CLASSES)
    with pytest.raises(ValueError, match="temporal.heads=1"):
        build_model(tiny_config(temporal=TemporalConfig(depth=2, init="image", heads=1)), CLASSES)
    with pytest.raises(ValueError, match="mlp_ratio"):
        build_model(
            tiny_config(temporal=TemporalConfig(depth=2, init="image", mlp_ratio=2.0)), CLASSES
        )


def test_find_checkpoint_picks_newest_complete(tmp_path) -> None:
    state = {"temporal_head.x": torch.zeros(1)}
    _write_checkpoint(tmp_path / "checkpoints" / "step_0000005", state, {"step": 5})
    newest = _write_checkpoint(tmp_path / "checkpoints" / "step_0000010", state, {"step": 10})
    _write_checkpoint(tmp_path / "checkpoints" / "step_0000020", state, complete=False)
    assert find_checkpoint(tmp_path) == newest
    assert find_checkpoint(newest) == newest
    assert read_checkpoint_weights(tmp_path)[1] == {"step": 10}
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        find_checkpoint(tmp_path / "checkpoints" / "step_0000020")


def test_checkpoint_init_loads_stage1_into_longer_stage2(tmp_path) -> None:
    stage1 = _stage1()
    _write_checkpoint(
        tmp_path / "run" / "checkpoints" / "step_0000100",
        stage1.state_dict(),
        {"step": 100, "mode": "full", "spatial_weights": None},
    )
    temporal_cfg = TemporalConfig(depth=2, init="checkpoint", checkpoint=str(tmp_path / "run"))
    stage2 = build_model(tiny_config("mlp", frames=8, temporal=temporal_cfg), CLASSES)

    old, new = stage1.state_dict(), stage2.state_dict()
    for name, value in new.items():
        if name.startswith("spatial.") or (
            name.startswith("temporal_head.") and "pos_embed" not in name and "adapter" not in name
        ):
            assert torch.equal(value, old[name]), name
    pos_old = old["temporal_head.temporal.pos_embed"][0]
    pos_new = new["temporal_head.temporal.pos_embed"][0]
    assert pos_new.shape == (9, 96)
    torch.testing.assert_close(pos_new[0], pos_old[0])  # CLS slot
    torch.testing.assert_close(pos_new[1], pos_old[1])  # first frame
    torch.testing.assert_close(pos_new[8], pos_old[4])  # last frame
    expected = pos_old[1] + (pos_old[2] - pos_old[1]) * (3 / 7)  # frame 1 of 8 = 3/7 of the way
    torch.testing.assert_close(pos_new[2], expected)
    adapter = stage2.temporal_head.adapter  # inserted in stage 2: still the identity
    assert torch.count_nonzero(adapter.up.weight) == 0


def test_checkpoint_init_without_spatial_or_with_other_classes(tmp_path) -> None:
    stage1 = _stage1()
    run = tmp_path / "run"
    _write_checkpoint(run / "checkpoints" / "step_0000001", stage1.state_dict())
    cfg = TemporalConfig(depth=2, init="checkpoint", checkpoint=str(run), load_spatial=False)
    stage2 = build_model(tiny_config(temporal=cfg), CLASSES + 2)
    assert not torch.equal(
        stage2.spatial.vit.blocks[0].mlp.fc1.weight, stage1.spatial.vit.blocks[0].mlp.fc1.weight
    )
    assert torch.equal(
        stage2.temporal_head.temporal.blocks[1].mlp.fc2.weight,
        stage1.temporal_head.temporal.blocks[1].mlp.fc2.weight,
    )
    assert torch.count_nonzero(stage2.temporal_head.head.weight) == 0


def test_checkpoint_init_takes_spatial_weights_named_in_meta(tmp_path) -> None:
    stage1 = _stage1()
    weights = tmp_path / "spatial.safetensors"
    save_file({k: v.contiguous() for k, v in stage1.spatial.vit.state_dict().items()}, str(weights))
    head_only = {k: v for k, v in stage1.state_dict().items() if k.startswith("temporal_head.")}
    meta = {"step": 3, "mode": "frozen", "spatial_weights": {"path": str(weights), "sha256": ""}}
    meta["spatial_weights"]["sha256"] = file_sha256(weights)
    ckpt = _write_checkpoint(tmp_path / "good", head_only, meta)
    cfg = TemporalConfig(depth=2, init="checkpoint", checkpoint=str(ckpt))
    stage2 = build_model(tiny_config(temporal=cfg), CLASSES)
    assert torch.equal(stage2.spatial.vit.pos_embed, stage1.spatial.vit.pos_embed)

    meta["spatial_weights"]["sha256"] = "0" * 64
    bad = _write_checkpoint(tmp_path / "bad", head_only, meta)
    cfg = TemporalConfig(depth=2, init="checkpoint", checkpoint=str(bad))
    with pytest.raises(ValueError, match="sha256"):
        build_model(tiny_config(temporal=cfg), CLASSES)


def test_checkpoint_init_names_bad_keys(tmp_path) -> None:
    state = _stage1().state_dict()
    del state["temporal_head.temporal.blocks.1.attn.proj.weight"]
    state["temporal_head.temporal.surprise"] = torch.zeros(3)
    ckpt = _write_checkpoint(tmp_path / "ckpt", state)
    cfg = TemporalConfig(depth=2, init="checkpoint", checkpoint=str(ckpt))
    with pytest.raises(ValueError, match="blocks.1.attn.proj.weight") as info:
        build_model(tiny_config(temporal=cfg), CLASSES)
    assert "temporal_head.temporal.surprise" in str(info.value)

    spatial_bad = {k: v for k, v in _stage1().state_dict().items() if "blocks.3." not in k}
    ckpt = _write_checkpoint(tmp_path / "ckpt2", spatial_bad)
    cfg = TemporalConfig(depth=2, init="checkpoint", checkpoint=str(ckpt))
    with pytest.raises(ValueError, match="missing keys: blocks.3"):
        build_model(tiny_config(spatial=tiny_spatial(), temporal=cfg), CLASSES)
