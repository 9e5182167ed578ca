"""FLOPs of a ViViT-FE training step, written out (nanoGPT-style), and MFU.

Counting convention (the same as `torch.utils.flop_counter.FlopCounterMode`):
matrix multiplies only, attention's two included, 2 FLOPs per multiply-add; norms,
softmax, GELU and elementwise ops are not counted. (torch < 2.15 counts CPU's fused
attention kernel as 0; tests/flop_count.py counts it on every version.)

One pre-norm transformer block over N tokens of width D with MLP hidden H:

    qkv projection     2 * N * D * 3D
    attention scores   2 * N * N * D        (Q K^T, all heads together)
    attention x values 2 * N * N * D
    output projection  2 * N * D * D
    MLP                2 * N * D * H * 2
    --------------------------------------
    block_fwd = 8 N D^2 + 4 N D H + 4 N^2 D          (= 24 N D^2 + 4 N^2 D for H = 4D)

Spatial ViT per frame (P patches of C*p*p values, N = P + prefix tokens, L blocks):

    spatial_fwd = 2 * P * (C p^2) * D  +  L * block_fwd(N, D, H)

Temporal transformer over T frame tokens + its CLS (width Dt, Lt blocks), the
projection Ds->Dt if widths differ, the adapter and the linear head (K classes):

    temporal_fwd = [2 * T * Ds * Dt]  +  Lt * block_fwd(T + 1, Dt, Ht)  +  2 * Dt * K
    adapter_fwd  mlp : 2 * T * (Ds * b + b * Ds)                        (bottleneck b)
                 attn: 2*T*(N-prefix)*Ds*2Ds (keys, values) + 4*T*(N-prefix)*Ds (scores, mix)
                       + 2*T*Ds*Ds*2 (query in, output projection)

Training step for a micro-batch of B clips (backward = 2 x forward):

    full   = 3 * B * (T * spatial_fwd + adapter_fwd + temporal_fwd)
    frozen =     B *  T * spatial_fwd  + 3 * B * (adapter_fwd + temporal_fwd)
    cached =                             3 * B * (adapter_fwd + temporal_fwd)   (data.cache)

MFU = (step FLOPs / step time) / the GPU's peak dense bf16 FLOP/s (table below).
"""

from __future__ import annotations

from dataclasses import dataclass

PEAK_BF16_TFLOPS: list[tuple[tuple[str, ...], float]] = [
    (("H100", "PCIE"), 756.0),
    (("H100",), 989.0),  # SXM / HBM3 parts
    (("H200",), 989.0),
    (("A100",), 312.0),
]
"""Dense bf16 peak per GPU (vendor datasheets, no sparsity); first match on the device name wins."""


def peak_bf16_tflops(device_name: str) -> float | None:
    """Peak dense bf16 TFLOP/s of a known GPU, else None (then MFU is omitted)."""
    upper = device_name.upper()
    for needles, peak in PEAK_BF16_TFLOPS:
        if all(n in upper for n in needles):
            return peak
    return None


def block_fwd_flops(tokens: int, width: int, mlp_hidden: int) -> int:
    n, d, h = tokens, width, mlp_hidden
    return 8 * n * d * d + 4 * n * d * h + 4 * n * n * d


@dataclass(frozen=True)
class ViViTDims:
    """The shape numbers the formula needs (read off a built model by `dims_of`)."""

    patches: int
    patch_values: int
    """C * p * p: values per patch."""
    prefix_tokens: int
    spatial_width: int
    spatial_depth: int
    spatial_mlp: int
    temporal_width: int
    temporal_depth: int
    temporal_mlp: int
    num_classes: int
    adapter: str = "none"
    adapter_bottleneck: int = 0


def spatial_fwd_flops(d: ViViTDims) -> int:
    """One frame through the image ViT."""
    tokens = d.patches + d.prefix_tokens
    embed = 2 * d.patches * d.patch_values * d.spatial_width
    return embed + d.spatial_depth * block_fwd_flops(tokens, d.spatial_width, d.spatial_mlp)


def adapter_fwd_flops(d: ViViTDims, frames: int) -> int:
    ds = d.spatial_width
    if d.adapter == "mlp":
        return 2 * frames * 2 * ds * d.adapter_bottleneck
    if d.adapter == "attn":
        n = d.patches
        return frames * (2 * n * ds * 2 * ds + 4 * n * ds + 2 * ds * ds * 2)
    return 0


def temporal_fwd_flops(d: ViViTDims, frames: int) -> int:
    proj = (
        2 * frames * d.spatial_width * d.temporal_width
        if d.temporal_width != d.spatial_width
        else 0
    )
    blocks = d.temporal_depth * block_fwd_flops(frames + 1, d.temporal_width, d.temporal_mlp)
    return proj + blocks + 2 * d.temporal_width * d.num_classes


def forward_flops(d: ViViTDims, frames: int, batch: int) -> int:
    """A forward pass of B clips of T frames."""
    per_clip = frames * spatial_fwd_flops(d) + adapter_fwd_flops(d, frames)
    return batch * (per_clip + temporal_fwd_flops(d, frames))


def train_step_flops(d: ViViTDims, mode: str, frames: int, batch: int) -> int:
    """Forward + backward of one micro-batch (backward = 2 x forward, frozen parts forward only)."""
    spatial = batch * frames * spatial_fwd_flops(d)
    rest = batch * (adapter_fwd_flops(d, frames) + temporal_fwd_flops(d, frames))
    if mode == "full":
        return 3 * (spatial + rest)
    if mode == "frozen":
        return spatial + 3 * rest
    if mode == "cached":  # tokens read from a cache: no spatial forward in the step
        return 3 * rest
    raise ValueError(f"mode must be 'full', 'frozen' or 'cached', got {mode!r}")


def mfu(flops: float, seconds: float, device_name: str) -> float | None:
    """Model FLOPs utilisation against the bf16 peak, None for an unknown device."""
    peak = peak_bf16_tflops(device_name)
    if peak is None or seconds <= 0:
        return None
    return flops / seconds / (peak * 1e12)


def dims_of(model: object, num_classes: int | None = None) -> ViViTDims:
    """Read the formula's shape numbers off a built `core.model.ViViTFE`."""
    spatial = model.spatial  # type: ignore[attr-defined]
    head = model.temporal_head  # type: ignore[attr-defined]
    vit = spatial.vit
    proj = vit.patch_embed.proj
    layer = spatial.layer
    used_depth = layer + 1 if layer >= 0 else spatial.depth + layer + 1
    temporal = head.temporal
    adapter = head.adapter
    kind = {"MLPAdapter": "mlp", "AttnPoolAdapter": "attn"}.get(type(adapter).__name__, "none")
    bottleneck = adapter.down.out_features if kind == "mlp" else 0
    return ViViTDims(
        patches=int(vit.patch_embed.num_patches),
        patch_values=int(proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1]),
        prefix_tokens=int(vit.num_prefix_tokens),
        spatial_width=int(spatial.embed_dim),
        spatial_depth=int(used_depth),
        spatial_mlp=int(vit.blocks[0].mlp.fc1.out_features),
        temporal_width=int(temporal.width),
        temporal_depth=len(temporal.blocks),
        temporal_mlp=int(temporal.blocks[0].mlp.fc1.out_features) if len(temporal.blocks) else 0,
        num_classes=int(num_classes if num_classes is not None else head.head.out_features),
        adapter=kind,
        adapter_bottleneck=int(bottleneck),
    )
