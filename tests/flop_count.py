"""Matmul FLOPs of a callable, counted the same way on every supported torch (2.4 onwards).

`FlopCounterMode` alone is not stable across versions: up to torch 2.14 its registry has no
entry for CPU's fused attention kernel (`aten._scaled_dot_product_flash_attention_for_cpu`,
pytorch#195460, registered from 2.15 by pytorch#195801), so on a CPU the attention matmuls
(Q K^T and attention x V) count as 0 there and as 4 N^2 D per block from 2.15 on. Here that
kernel and its backward are always counted with the SDPA convention (two batched matmuls
forward, twice that backward), and only the op families the written-out formula covers are
summed, so a newer torch that learns to count something else (a norm, a softmax) cannot move
the total. Any attention-like op that ran but has no formula fails loudly instead of counting 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten

MATMUL_OPS = ("mm", "addmm", "bmm", "baddbmm")
CONV_OPS = ("convolution", "_convolution", "convolution_backward")
ATTENTION_OPS = (
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_backward",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_efficient_attention_backward",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_cudnn_attention_backward",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention_for_cpu_backward",
    "_flash_attention_forward",
    "_flash_attention_backward",
    "_efficient_attention_forward",
    "_efficient_attention_backward",
)
COVERED = frozenset(MATMUL_OPS + CONV_OPS + ATTENTION_OPS)
"""Op families the formula in benchmarks/flops.py accounts for (matmuls, the patch conv, SDPA)."""


def _attention_fwd(q: Any, k: Any, v: Any, *_: Any, **__: Any) -> int:
    """Q K^T plus attention x V over (B, H, S, D) shapes: 2 * B H Sq Sk (Dq + Dv)."""
    *lead, s_q, d_q = q
    s_k, d_v = k[-2], v[-1]
    return 2 * _prod(lead) * s_q * s_k * (d_q + d_v)


def _attention_bwd(_grad: Any, q: Any, k: Any, v: Any, *_: Any, **__: Any) -> int:
    """Gradients of Q, K, V (and the recomputed scores): twice the forward matmuls."""
    return 2 * _attention_fwd(q, k, v)


def _prod(values: Any) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def _cpu_attention_mapping() -> dict[Any, Callable[..., int]]:
    mapping: dict[Any, Callable[..., int]] = {}
    for name, fn in (
        ("_scaled_dot_product_flash_attention_for_cpu", _attention_fwd),
        ("_scaled_dot_product_flash_attention_for_cpu_backward", _attention_bwd),
    ):
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = fn
    return mapping


class _SeenOps(TorchDispatchMode):
    """Records the name of every aten op that reaches the dispatcher."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.names.add(func._overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def matmul_flops(fn: Callable[[], object]) -> tuple[int, dict[str, int]]:
    """(total, per-op) FLOPs of `fn()` over the covered op families, 2 FLOPs per multiply-add."""
    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_mapping())
    seen = _SeenOps()
    with counter, seen:
        fn()
    per_op: dict[str, int] = {}
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        name = getattr(op, "__name__", str(op)).rsplit(".", 1)[-1]
        if name in COVERED:
            per_op[name] = per_op.get(name, 0) + int(flops)
    # `_fused_sdp_choice` only picks a kernel; every other attention op must have been counted.
    uncounted = sorted(
        n for n in seen.names if "attention" in n and n not in per_op and "sdp_choice" not in n
    )
    if uncounted:
        raise AssertionError(f"attention ops ran with no FLOP formula: {uncounted}")
    return sum(per_op.values()), per_op
