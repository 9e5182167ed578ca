"""The only module that knows DeepSpeed: builds the engine over the trainable parts."""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from core.ckpt_manifest import CheckpointError
from core.optim import OptimConfig
from core.shipped import DS_CONFIGS, shipped_names, shipped_path


@dataclass
class EngineConfig:
    """DeepSpeed JSON and the overrides the YAML may apply to it."""

    ds_config: str = "ds_configs/zero2_bf16.json"
    """DeepSpeed JSON (ZeRO stage, precision, offload): a file path, or a shipped one by name."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """`auto`: the JSON's precision on GPU, fp32 on CPU (DeepSpeed's CPU path has no fp16)."""
    zero_stage: int | None = None
    """Override the JSON's ZeRO stage. Unset, a 1-rank fp32 run without offload runs stage 0
    whatever the JSON says (`zero_partitions_nothing`); set it to keep the JSON's stage there."""

    def __post_init__(self) -> None:
        if self.zero_stage is not None and self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"engine.zero_stage must be 0..3, got {self.zero_stage}")


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SHM_COMM_OP = "deepspeed_shm_comm"


def _skip_shm_comm_op() -> None:
    """CPU (gloo) groups all-reduce through gloo, not DeepSpeed's shared-memory kernel.

    The kernel compiles for about a minute on a fresh 2-core machine and is loaded by every
    process; a 1-rank group never communicates at all. With several ranks each run leaves
    its buffers in /dev/shm (69 MB per rank for DeepSpeed 0.19, never unlinked): on a
    machine that ran the test suite a few times they filled the 24 GB tmpfs, and 2-rank
    runs then slowed to a halt. CPU ranks are for tests and development; GPU groups (NCCL)
    never use the op. DeepSpeed builds it only while its compatibility table (one dict, kept
    by `deepspeed.ops`) says it may; a version without that table is left as it is."""
    try:
        import deepspeed.ops

        ops = deepspeed.ops.__compatible_ops__
    except (ImportError, AttributeError):
        return
    if isinstance(ops, dict) and SHM_COMM_OP in ops:
        ops[SHM_COMM_OP] = False


def init_distributed() -> tuple[int, int]:
    """Join the process group the `deepspeed` launcher set up, or make a 1-rank one.

    Returns (rank, world_size). Idempotent.
    """
    import deepspeed
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "gloo":
            _skip_shm_comm_op()
        if "RANK" in os.environ:  # started by the deepspeed launcher (or torchrun / SLURM env)
            deepspeed.init_distributed(dist_backend=backend, verbose=False)
        else:  # plain `vivit train`: a 1-rank group, without leaking RANK/MASTER_* to children
            os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed's engine insists on it
            deepspeed.init_distributed(
                dist_backend=backend,
                auto_mpi_discovery=False,
                init_method=f"tcp://127.0.0.1:{_free_port()}",
                rank=0,
                world_size=1,
                verbose=False,
            )
    return dist.get_rank(), dist.get_world_size()


def device() -> torch.device:
    """This rank's device (DeepSpeed's accelerator picks CUDA or CPU)."""
    from deepspeed.accelerator import get_accelerator

    return torch.device(get_accelerator().current_device_name())


def resolve_ds_config_path(path: str) -> Path:
    """A DeepSpeed JSON path as given (cwd first), else the packaged `ds_configs/` copy."""
    found = shipped_path(path, DS_CONFIGS)
    if found is not None:
        return found
    known = shipped_names(DS_CONFIGS, ".json")
    raise FileNotFoundError(
        f"engine.ds_config: no such file {path!r} (shipped: {', '.join(known)})"
    )


def build_ds_config(
    engine_cfg: EngineConfig,
    optim_cfg: OptimConfig,
    micro_batch_size: int,
    grad_accum: int,
    on_gpu: bool,
    *,
    world_size: int,
) -> dict[str, Any]:
    """The DeepSpeed JSON with the YAML's overrides: batch sizes, ZeRO stage, precision, optimiser."""
    path = resolve_ds_config_path(engine_cfg.ds_config)
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"engine.ds_config {path}: invalid JSON ({err})") from None
    ds.pop("train_batch_size", None)  # derived by DeepSpeed from micro batch x accum x world
    ds["train_micro_batch_size_per_gpu"] = micro_batch_size
    ds["gradient_accumulation_steps"] = grad_accum
    ds["gradient_clipping"] = optim_cfg.grad_clip
    if engine_cfg.zero_stage is not None:
        ds.setdefault("zero_optimization", {})["stage"] = engine_cfg.zero_stage
    precision = resolve_precision(engine_cfg.precision, ds, on_gpu)
    if engine_cfg.zero_stage is None and zero_partitions_nothing(ds, precision, world_size):
        ds["zero_optimization"]["stage"] = 0
    ds.pop("bf16", None)
    ds.pop("fp16", None)
    if precision == "bf16":
        ds["bf16"] = {"enabled": True}
    elif precision == "fp16":
        json_fp16 = json.loads(path.read_text()).get("fp16", {})
        ds["fp16"] = {**json_fp16, "enabled": True}
    params: dict[str, Any] = {
        "lr": optim_cfg.lr,
        "betas": list(optim_cfg.betas),
        "eps": optim_cfg.eps,
        "weight_decay": optim_cfg.weight_decay,
    }
    if optim_cfg.impl == "torch":
        params["torch_adam"] = True
        # torch's fused AdamW (CUDA, and CPU since torch 2.4); without it torch picks its
        # per-tensor loop on a CPU. Optimiser step alone, 2-core CPU: the tiny debug ViViT's
        # 84 tensors (ZeRO 0) 29-37 ms looped vs 1-3 ms fused; one flat ZeRO partition of the
        # same 694k values 4-13 vs 2.4-4.6 ms.
        params["fused"] = True
    ds["optimizer"] = {"type": "AdamW", "params": params}
    ds.setdefault("steps_per_print", 10**9)
    return ds


def zero_partitions_nothing(ds: dict[str, Any], precision: str, world_size: int) -> bool:
    """True where the JSON's ZeRO-1/2 would partition over a group of one: run stage 0 instead.

    ZeRO-1/2 split optimiser state and gradients across data-parallel ranks; over one rank they
    split nothing, yet still route every gradient through per-parameter hooks and a flat
    buffer. Demo shapes on the 2-core CPU, fp32, median step of 80, three alternating runs
    each: frozen from cached tokens 41-47 -> 27-29 ms, frozen from videos 101-105 -> 81-98 ms,
    full fine-tuning 209-226 -> 181-220 ms (within noise); the same top-1 both ways.
    Only fp32: with bf16/fp16 stage 0 swaps in DeepSpeed's FP16/BF16 optimiser wrappers, a
    path that changes numerics and checkpoints (DeepSpeed PRs 7786, 7839). Offloading keeps
    its stage: on one GPU it moves optimiser state to the host, which is its point.
    """
    zero = ds.get("zero_optimization", {})
    if world_size != 1 or precision != "fp32" or zero.get("stage", 0) not in (1, 2):
        return False
    offload = (zero.get(key) or {} for key in ("offload_optimizer", "offload_param"))
    return all(part.get("device", "none") == "none" for part in offload)


def resolve_precision(requested: str, ds: dict[str, Any], on_gpu: bool) -> str:
    """Precision actually used: the YAML's, else the JSON's on GPU; fp32 on CPU for `auto`."""
    if requested != "auto":
        if requested == "fp16" and not on_gpu:
            raise ValueError(
                "engine.precision=fp16 needs a GPU (DeepSpeed's CPU accelerator has no fp16)"
            )
        return requested
    if not on_gpu:
        return "fp32"
    if ds.get("bf16", {}).get("enabled"):
        return "bf16"
    if ds.get("fp16", {}).get("enabled"):
        return "fp16"
    return "fp32"


def compute_dtype(ds: dict[str, Any]) -> torch.dtype:
    """The dtype DeepSpeed holds the trainable module in (its inputs must match)."""
    if ds.get("bf16", {}).get("enabled"):
        return torch.bfloat16
    if ds.get("fp16", {}).get("enabled"):
        return torch.float16
    return torch.float32


def build_engine(
    module: torch.nn.Module,
    param_groups: list[dict[str, Any]],
    ds_config: dict[str, Any],
    lr_lambda: Callable[[int], float],
) -> Any:
    """DeepSpeed engine over `module` (only the trainable parts: frozen weights stay outside).

    Parameter groups carry their own `lr`; the LambdaLR multiplies each by `lr_lambda(step)`.
    """
    import deepspeed

    def scheduler(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

    engine, _, _, _ = deepspeed.initialize(
        model=module, model_parameters=param_groups, config=ds_config, lr_scheduler=scheduler
    )
    world = getattr(engine, "dp_world_size", None)  # DeepSpeed 0.19's name; else keep it
    if world is not None and reduces_nothing(engine.zero_optimization_stage(), world, ds_config):
        engine.enable_backward_allreduce = False
        if getattr(engine, "mpu", None) is None and hasattr(engine, "clip_fp32_gradients"):
            params = list(engine.module.parameters())
            engine.clip_fp32_gradients = lambda: clip_one_rank(params, engine.gradient_clipping())
    return engine


def clip_one_rank(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """DeepSpeed's `clip_grad_norm_` for a data-parallel group of one, bit for bit, in foreach
    calls instead of a Python loop over the parameters.

    DeepSpeed clips an fp32 stage-0 step (`clip_fp32_gradients`) with a norm and a multiply per
    parameter and an all-reduce of the total norm, the identity over one rank: 1.5 of 19 ms of
    the demo's stage-2 step from cached tokens on the 2-core CPU (py-spy). Same arithmetic:
    per-tensor 2-norms, their squares summed, the root; every gradient times
    min(1, max_norm / (norm + 1e-6)), also when that is 1.
    """
    grads = [p.grad.data for p in params if p.grad is not None]
    norms = torch._foreach_norm(grads, 2.0)
    total = torch.stack(norms).pow(2.0).sum().float().pow(1.0 / 2.0)
    coef = torch.tensor([float(max_norm)]).to(total.device) / (total + 1e-6)
    coef = torch.min(torch.tensor([1.0], device=coef.device), coef)
    torch._foreach_mul_(grads, coef.squeeze(0))
    return total


def reduces_nothing(zero_stage: int, dp_world_size: int, ds_config: dict[str, Any]) -> bool:
    """True where DeepSpeed's gradient all-reduce after every backward has nothing to do.

    Without ZeRO, the engine flattens every gradient into a bucket, all-reduces it over the
    data-parallel group, scales it by 1/world size and copies it back, also over a group of
    one, where that is the identity. Without it the demo's frozen stage-2 step from cached
    tokens took 18 instead of 21-22 ms on the 2-core CPU. Only fp32 stage 0: ZeRO-1/2/3 and DeepSpeed's
    bf16/fp16 optimiser wrappers move gradients into their own buffers in that call.
    """
    fp32 = compute_dtype(ds_config) == torch.float32
    return zero_stage == 0 and dp_world_size == 1 and fp32


def trainable_state_dict(engine: Any) -> dict[str, torch.Tensor]:
    """Full (unpartitioned) fp32 copy of the engine module's weights, on every rank.

    Under ZeRO-3 the parameters are gathered first; all ranks must call this.
    """
    import deepspeed

    module = engine.module
    params = list(module.parameters())
    if engine.zero_optimization_stage() == 3:
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}
    return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}


def _state_classes() -> list[type]:
    """The DeepSpeed classes its state files hold besides tensors and plain data (a loss
    scaler, the ZeRO stage enum, a fragment address): the only globals a resume may build."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def safe_torch_load(path: str | Path, map_location: Any = None) -> Any:
    """`torch.load(weights_only=True)`: tensors, plain data and `_state_classes()`, never code."""
    with torch.serialization.safe_globals(_state_classes()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except OSError:
            raise
        except Exception as exc:  # UnpicklingError, RuntimeError (bad zip), EOFError...
            found = re.search(r"Unsupported global: GLOBAL \S+", str(exc))
            why = found.group(0) if found else f"{type(exc).__name__}: {exc}"
            raise CheckpointError(
                f"{path}: refusing to load it: not a plain weights/state file ({why})"
            ) from None


def load_engine_state(engine: Any, path: Path, tag: str) -> None:
    """`engine.load_checkpoint(path, tag)` with every file DeepSpeed reads loaded weights-only.

    DeepSpeed 0.19 reads its state through `engine.checkpoint_engine.load`, which calls
    `torch.load(weights_only=False)`; for the duration of the load that method is shadowed by
    `safe_torch_load`. Universal checkpoints bypass it, so they are refused.
    """
    if engine.load_universal_checkpoint():
        raise CheckpointError(
            "DeepSpeed universal checkpoints are read with torch.load(weights_only=False) "
            "inside DeepSpeed: not supported for resume"
        )
    reader = engine.checkpoint_engine
    reader.load = safe_torch_load  # instance attribute shadows the class's method
    try:
        load_path, _ = engine.load_checkpoint(str(path), tag=tag)
    finally:
        del reader.load
    if load_path is None:
        raise CheckpointError(f"checkpoint {path}: no DeepSpeed state under {path / tag}")


def leave_group() -> None:
    """Destroy this rank's process group, if any, before returning from a command.

    Left to interpreter exit, a gloo group was sometimes torn down in static destruction and
    the rank aborted ("terminate called without an active exception", exit -6) after its work
    was done, and every NCCL rank warned "destroy_process_group() was not called before program
    exit, which can leak resources" (each `vivit train` of the GPU checks). DeepSpeed's own
    destroy also drops the group from DeepSpeed's bookkeeping, so a later `init_distributed`
    in the same process (a notebook, the tests) builds a working new one; torch's alone left
    DeepSpeed holding the dead group ("Group ... is not registered").
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    from deepspeed.comm import comm as ds_comm  # the module that holds DeepSpeed's backend

    destroy = getattr(ds_comm, "destroy_process_group", None)
    if getattr(ds_comm, "cdb", None) is None or destroy is None:  # a group DeepSpeed never saw
        dist.destroy_process_group()
    else:
        destroy()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float], dev: torch.device) -> list[float]:
    """Sum floats over ranks (eval counts)."""
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=dev)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor.tolist()


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in _DTYPES.items()}[dtype]
