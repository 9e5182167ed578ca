"""Spatial transformer: any timm ViT applied per frame, returning CLS and patch tokens."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import timm
import timm.data
import torch
import torch.nn.functional as F
from safetensors.torch import load_file as load_safetensors
from timm.layers import resample_abs_pos_embed, resample_patch_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from core.configtools import ConfigError


@dataclass
class SpatialConfig:
    """The per-frame image ViT (timm) and where its weights come from."""

    model: str = "vit_tiny_patch16_224"
    """timm model name (a VisionTransformer variant)."""
    weights: str | None = None
    """Local weights file (safetensors or torch checkpoint, timm key names); never a hub download."""
    img_size: int = 224
    """Frame size (px) the ViT sees; decoded crops are resized to it."""
    patch_size: int | None = None
    """None keeps the model's own patch size."""
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra `timm.create_model` arguments, e.g. depth/embed_dim/num_heads for tiny debug ViTs."""
    layer: int = -1
    """Block whose output is used (-1: last block; any block's tokens then pass the final norm)."""
    patch_tokens: Literal["whole", "pooled", "none"] = "whole"
    """Patch tokens handed to the adapter: all of them, average-pooled to a `pool_grid` x
    `pool_grid` grid (fewer bytes in a token cache, fewer keys for the attention adapter), or
    none (CLS only: the `attn` adapter needs patch tokens)."""
    pool_grid: int = 4
    """Side of the pooled patch grid for `patch_tokens: pooled`."""

    def __post_init__(self) -> None:
        if self.img_size < 8:
            raise ValueError(f"spatial.img_size must be >= 8, got {self.img_size}")
        if self.patch_tokens not in ("whole", "pooled", "none"):
            raise ValueError(
                f"spatial.patch_tokens={self.patch_tokens!r}: expected whole, pooled or none"
            )
        if self.pool_grid < 1:
            raise ValueError(f"spatial.pool_grid must be >= 1, got {self.pool_grid}")


class WeightsError(ValueError):
    """A spatial weights file that cannot be read, or does not fit the ViT; names the file."""


class SpatialTokens(NamedTuple):
    """Per-frame outputs of the spatial transformer: what the adapter reads."""

    cls: Tensor
    """B x T x D: one embedding per frame (the CLS token, or the patch mean for CLS-less ViTs)."""
    patches: Tensor
    """B x T x N x D: the frame's patch tokens (register/distillation tokens dropped)."""

    def to(self, dtype: torch.dtype) -> SpatialTokens:
        return SpatialTokens(self.cls.to(dtype), self.patches.to(dtype))


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, so a checkpoint can pin the exact spatial weights it was trained on."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_sha256(module: nn.Module) -> str:
    """Hex SHA-256 of a module's weights as loaded (names, dtypes, shapes and bytes, sorted by
    name): pins the exact spatial weights whatever they came from (a weights file, a stage-1
    checkpoint, a seeded random init). Take it before `freeze_spatial` casts them."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}\n".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a safetensors file or a torch checkpoint, unwrapped from `state_dict`/`model`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"spatial weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state: Any = load_safetensors(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors/pickle errors come in many types
        raise WeightsError(f"{path}: not a readable weights file ({exc})") from exc
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(
            f"{path}: expected a dict of tensors (optionally under 'state_dict'/'model')"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def _fit_to_vit(vit: VisionTransformer, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop the classifier and resample pos/patch embeddings saved at another image/patch size."""
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    own = vit.state_dict()
    pos = state.get("pos_embed")
    if pos is not None and "pos_embed" in own and pos.shape != own["pos_embed"].shape:
        prefix = 0 if getattr(vit, "no_embed_class", False) else vit.num_prefix_tokens
        state["pos_embed"] = resample_abs_pos_embed(
            pos, new_size=list(vit.patch_embed.grid_size), num_prefix_tokens=prefix
        )
    proj = state.get("patch_embed.proj.weight")
    own_proj = own.get("patch_embed.proj.weight")
    if proj is not None and own_proj is not None and proj.shape[-2:] != own_proj.shape[-2:]:
        state["patch_embed.proj.weight"] = resample_patch_embed(proj, list(own_proj.shape[-2:]))
    return state


def _names(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(sorted(keys)[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_vit_state(vit: VisionTransformer, state: dict[str, Tensor], source: str) -> None:
    """Strictly load timm-named tensors into `vit`; errors name the source and the bad keys."""
    state = _fit_to_vit(vit, state)
    own = vit.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)}!={tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = [f"{source} does not fit {type(vit).__name__}"]
        if missing:
            parts.append(f"missing keys: {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_names(unexpected)}")
        if wrong:
            parts.append(f"shape mismatches: {_names(wrong)}")
        raise WeightsError("; ".join(parts))
    vit.load_state_dict(state, strict=True)


@dataclass(frozen=True)
class WeightsSource:
    """The file a spatial transformer's weights were loaded from, so a frozen run's checkpoint
    can pin it instead of copying the backbone: a timm ViT weights file (`prefix=""`), or an
    earlier run's checkpoint whose `spatial.vit.*` tensors hold them (stage 1 of the recipe)."""

    path: Path
    prefix: str = ""

    def pin(self) -> dict[str, str]:
        """What a checkpoint's meta records (`core.init` loads it back, sha256 checked)."""
        return {
            "path": str(self.path.resolve()),
            "sha256": file_sha256(self.path),
            "prefix": self.prefix,
        }


def load_spatial_weights(vit: VisionTransformer, path: str | Path, prefix: str = "") -> None:
    """Load a local timm ViT weights file (tolerates wrappers, `module.`, a classifier head);
    with `prefix`, only the tensors under it (a checkpoint holding a whole ViViT)."""
    state = read_state_dict(path)
    what = f"spatial weights {path}"
    if prefix:
        state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        what = f"spatial weights ({prefix}*) in {path}"
    load_vit_state(vit, state, what)


class SpatialTransformer(nn.Module):
    """A timm ViT run on every frame; frozen by `core.freezing.freeze_spatial`."""

    def __init__(self, cfg: SpatialConfig) -> None:
        super().__init__()
        kwargs: dict[str, Any] = dict(cfg.model_kwargs)
        if cfg.patch_size is not None:
            kwargs["patch_size"] = cfg.patch_size
        try:
            vit = timm.create_model(
                cfg.model, pretrained=False, num_classes=0, img_size=cfg.img_size, **kwargs
            )
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"spatial.model={cfg.model!r} could not be built: {exc}") from exc
        if not isinstance(vit, VisionTransformer):
            raise ConfigError(
                f"spatial.model={cfg.model!r} is a {type(vit).__name__}, not a timm VisionTransformer"
            )
        self.vit = vit
        self.depth = len(vit.blocks)
        if not -self.depth <= cfg.layer < self.depth:
            raise ConfigError(
                f"spatial.layer={cfg.layer} out of range for a {self.depth}-block ViT"
            )
        self.layer = cfg.layer
        self.patch_tokens, self.pool_grid = cfg.patch_tokens, cfg.pool_grid
        self.embed_dim: int = vit.embed_dim
        self.num_heads: int = vit.blocks[0].attn.num_heads
        data_cfg = timm.data.resolve_model_data_config(vit)
        self.mean: tuple[float, ...] = tuple(data_cfg["mean"])
        self.std: tuple[float, ...] = tuple(data_cfg["std"])
        self.weights_source = WeightsSource(Path(cfg.weights)) if cfg.weights else None
        """Where the current weights came from (None: a random init, stored by no file)."""
        self.frozen = False
        """Set by `freeze_spatial`: keeps eval mode through `.train()` and runs without autograd."""
        if cfg.weights:
            load_spatial_weights(vit, cfg.weights)

    def train(self, mode: bool = True) -> SpatialTransformer:
        """A frozen backbone stays in eval mode (no dropout/drop-path) whatever the caller asks."""
        return super().train(mode and not self.frozen)

    @property
    def dtype(self) -> torch.dtype:
        return self.vit.patch_embed.proj.weight.dtype

    def forward(self, frames: Tensor) -> SpatialTokens:
        if frames.ndim != 5:
            raise ValueError(f"expected frames B x T x C x H x W, got shape {tuple(frames.shape)}")
        if self.frozen:
            with torch.no_grad():
                return self._tokens(frames)
        return self._tokens(frames)

    def _tokens(self, frames: Tensor) -> SpatialTokens:
        b, t = frames.shape[:2]
        images = frames.reshape(b * t, *frames.shape[2:]).to(self.dtype)
        prefix_len = self.vit.num_prefix_tokens
        if self.layer == -1:
            tokens = self.vit.forward_features(images)
            prefix, patches = tokens[:, :prefix_len], tokens[:, prefix_len:]
        else:
            # `norm=True`: an earlier block's tokens also pass the final norm, as layer -1 does.
            out = self.vit.forward_intermediates(
                images,
                indices=[self.layer],
                norm=True,
                output_fmt="NLC",
                intermediates_only=True,
                stop_early=True,
                return_prefix_tokens=True,
            )[0]
            patches, prefix = out if isinstance(out, tuple) else (out, out[:, :0])
        cls = prefix[:, 0] if self.vit.cls_token is not None else patches.mean(dim=1)
        patches = self._layout(patches)
        return SpatialTokens(
            cls.reshape(b, t, -1), patches.reshape(b, t, patches.shape[1], patches.shape[2])
        )

    @property
    def num_patch_tokens(self) -> int:
        """Patch tokens per frame after `spatial.patch_tokens` (what the adapter receives)."""
        if self.patch_tokens == "none":
            return 0
        if self.patch_tokens == "pooled":
            return self.pool_grid * self.pool_grid
        return int(self.vit.patch_embed.num_patches)

    def _layout(self, patches: Tensor) -> Tensor:
        """`(B*T) x N x D` patch tokens -> whole, average-pooled to the grid, or none."""
        if self.patch_tokens == "whole":
            return patches
        if self.patch_tokens == "none":
            return patches[:, :0]
        gh, gw = self.vit.patch_embed.grid_size
        grid = patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], gh, gw)
        pooled = F.adaptive_avg_pool2d(grid, self.pool_grid)
        return pooled.flatten(2).transpose(1, 2)
