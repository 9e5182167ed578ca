"""ViViT-FE forward: spatial tokens equal timm's own, adapters start as identity, shapes, errors."""

from __future__ import annotations

import hashlib

import pytest
import timm
import torch
from safetensors.torch import save_file

from core.adapter import AdapterConfig, AttnPoolAdapter, MLPAdapter, build_adapter
from core.freezing import freeze_spatial
from core.model import build_model
from core.spatial import SpatialTransformer, file_sha256
from core.temporal import TemporalConfig, TemporalTransformer, sincos_1d
from tests.model_helpers import (
    CLASSES,
    FRAMES,
    IMG,
    PATCH,
    TINY_KWARGS,
    TINY_VIT,
    tiny_config,
    tiny_frames,
    tiny_spatial,
)


def plain_vit(img_size: int = IMG, num_classes: int = 0) -> torch.nn.Module:
    return timm.create_model(
        TINY_VIT, num_classes=num_classes, img_size=img_size, patch_size=PATCH, **TINY_KWARGS
    ).eval()


def test_frozen_spatial_equals_timm_forward_features() -> None:
    model = build_model(tiny_config(), CLASSES)
    freeze_spatial(model, torch.float32)
    reference = plain_vit()
    reference.load_state_dict(model.spatial.vit.state_dict())
    frames = tiny_frames()
    tokens = model.spatial(frames)
    expected = reference.forward_features(frames.flatten(0, 1))
    b, t = frames.shape[:2]
    assert tokens.cls.shape == (b, t, 96)
    assert tokens.patches.shape == (b, t, (IMG // PATCH) ** 2, 96)
    torch.testing.assert_close(tokens.cls, expected[:, 0].reshape(b, t, -1), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        tokens.patches, expected[:, 1:].reshape(b, t, -1, 96), rtol=0, atol=1e-6
    )
    assert not tokens.cls.requires_grad


def test_intermediate_layer_is_that_block_then_final_norm() -> None:
    last = SpatialTransformer(tiny_spatial(layer=3))
    default = SpatialTransformer(tiny_spatial())
    early = SpatialTransformer(tiny_spatial(layer=1))
    default.load_state_dict(last.state_dict())
    early.load_state_dict(last.state_dict())
    frames = tiny_frames(batch=1)
    with torch.no_grad():
        torch.testing.assert_close(last(frames).cls, default(frames).cls)
        vit = early.vit.eval()
        x = vit.norm_pre(vit._pos_embed(vit.patch_embed(frames.flatten(0, 1))))
        x = vit.norm(vit.blocks[1](vit.blocks[0](x)))
        got = early.eval()(frames)
    torch.testing.assert_close(got.cls[0], x[:, 0])
    torch.testing.assert_close(got.patches[0], x[:, 1:])
    with pytest.raises(ValueError, match="spatial.layer=4"):
        SpatialTransformer(tiny_spatial(layer=4))


def test_spatial_exposes_dims_and_normalisation() -> None:
    spatial = SpatialTransformer(tiny_spatial())
    assert (spatial.embed_dim, spatial.num_heads, spatial.depth) == (96, 3, 4)
    data_cfg = timm.data.resolve_model_data_config(spatial.vit)
    assert spatial.mean == tuple(data_cfg["mean"]) and len(spatial.std) == 3


@pytest.mark.parametrize("kind", ["none", "mlp", "attn"])
def test_adapters_start_as_identity(kind: str) -> None:
    adapter = build_adapter(AdapterConfig(kind=kind, bottleneck=16, heads=3), 96)
    cls, patches = torch.randn(2, FRAMES, 96), torch.randn(2, FRAMES, 16, 96)
    torch.testing.assert_close(adapter(cls, patches), cls, rtol=0, atol=0)


def test_adapter_param_counts() -> None:
    assert build_adapter(AdapterConfig(kind="none"), 96).num_params() == 0
    mlp = build_adapter(AdapterConfig(kind="mlp", bottleneck=16), 96)
    assert isinstance(mlp, MLPAdapter)
    assert mlp.num_params() == 2 * 96 + (96 * 16 + 16) + (16 * 96 + 96)
    attn = build_adapter(AdapterConfig(kind="attn", heads=3), 96)
    assert isinstance(attn, AttnPoolAdapter)
    assert attn.num_params() == 96 + 4 * 96 + (96 * 96 + 96) + (96 * 192 + 192) + (96 * 96 + 96)
    with pytest.raises(ValueError, match="adapter.heads=5"):
        build_adapter(AdapterConfig(kind="attn", heads=5), 96)


def test_attn_adapter_reads_patch_tokens_once_trained() -> None:
    adapter = build_adapter(AdapterConfig(kind="attn", heads=3), 96)
    torch.nn.init.normal_(adapter.proj.weight, std=0.1)
    cls, patches = torch.randn(1, 2, 96), torch.randn(1, 2, 16, 96)
    moved = patches.clone()
    moved[:, :, :8] = torch.randn(1, 2, 8, 96)  # new content in half the regions
    assert not torch.allclose(adapter(cls, patches), adapter(cls, moved))
    assert not torch.allclose(adapter(cls, patches), cls)


def test_model_logits_start_at_zero_and_have_class_shape() -> None:
    model = build_model(tiny_config("attn"), CLASSES)
    logits = model(tiny_frames())
    assert logits.shape == (2, CLASSES)
    assert torch.count_nonzero(logits) == 0


def test_temporal_checks_frame_count_and_uses_order() -> None:
    temporal = TemporalTransformer(TemporalConfig(depth=1), 96, FRAMES, 3).eval()
    with pytest.raises(ValueError, match="built for 4 frames"):
        temporal(torch.randn(1, 6, 96))
    tokens = torch.randn(1, FRAMES, 96)
    assert not torch.allclose(temporal(tokens), temporal(tokens.flip(1)))
    projected = TemporalTransformer(TemporalConfig(depth=1, width=64), 96, FRAMES, 3)
    assert projected(tokens).shape == (1, 64) and projected.num_heads == 1


def test_pos_init_sincos_and_normal() -> None:
    sincos = TemporalTransformer(TemporalConfig(depth=1), 96, 8, 3)
    torch.testing.assert_close(sincos.pos_embed.data[0], sincos_1d(9, 96))
    rows = sincos.pos_embed.data[0]
    assert torch.cdist(rows, rows).add(torch.eye(9) * 1e3).min() > 0.5
    normal = TemporalTransformer(TemporalConfig(depth=1, pos_init="normal"), 96, 8, 3)
    assert 0.01 < normal.pos_embed.std().item() < 0.03


def _timm_state_with_head() -> dict[str, torch.Tensor]:
    donor = plain_vit(num_classes=10)
    return {f"module.{k}": v.clone() for k, v in donor.state_dict().items()}


def test_weights_load_from_wrapped_torch_checkpoint(tmp_path) -> None:
    state = _timm_state_with_head()
    assert any(k.startswith("module.head.") for k in state)
    path = tmp_path / "vit.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    spatial = SpatialTransformer(tiny_spatial(weights=str(path)))
    for name, value in spatial.vit.state_dict().items():
        assert torch.equal(value, state[f"module.{name}"]), name


def test_weights_load_from_safetensors_and_resample_pos_embed(tmp_path) -> None:
    donor = plain_vit(img_size=48)
    path = tmp_path / "vit48.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    spatial = SpatialTransformer(tiny_spatial(weights=str(path)))
    assert spatial.vit.pos_embed.shape == (1, 1 + 16, 96)
    assert torch.equal(spatial.vit.blocks[2].mlp.fc1.weight, donor.blocks[2].mlp.fc1.weight)
    assert torch.equal(spatial.vit.pos_embed[0, 0], donor.pos_embed[0, 0])


def test_wrong_weights_file_names_file_and_missing_keys(tmp_path) -> None:
    state = {k: v for k, v in plain_vit().state_dict().items() if not k.startswith("blocks.3.")}
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "broken.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(ValueError, match="broken.safetensors") as info:
        SpatialTransformer(tiny_spatial(weights=str(path)))
    assert "blocks.3.attn.qkv.weight" in str(info.value)
    assert "extra.weight" in str(info.value)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="garbage.safetensors: not a readable weights file"):
        SpatialTransformer(tiny_spatial(weights=str(garbage)))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        SpatialTransformer(tiny_spatial(weights=str(tmp_path / "nope.pth")))


def test_file_sha256(tmp_path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"x" * 3_000_000)
    assert file_sha256(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
