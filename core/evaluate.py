"""Multi-view evaluation: logits averaged over the V views of each video, top-1/top-5."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from core import engine as ds_engine


def multiview_logits(
    forward: Callable[[torch.Tensor], torch.Tensor], frames: torch.Tensor
) -> torch.Tensor:
    """`B×V×T×C×H×W` views -> `B×classes` logits, averaged over each video's V views."""
    b, v = frames.shape[:2]
    return forward(frames.flatten(0, 1)).float().view(b, v, -1).mean(dim=1)


@torch.no_grad()
def evaluate(
    forward: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    dev: torch.device,
) -> dict[str, float]:
    """Top-k over this rank's videos, summed over ranks (each video is on exactly one rank)."""
    # Summed on the device and read once at the end: no host sync per batch.
    sums = torch.zeros(4, dtype=torch.float64, device=dev)  # top-1 hits, top-5 hits, videos, loss
    for frames, labels in batches:
        b = frames.shape[0]
        logits = multiview_logits(forward, frames)
        labels = labels.to(logits.device)
        k = min(5, logits.shape[-1])
        hits = logits.topk(k, dim=-1).indices.eq(labels[:, None])
        sums[0] += hits[:, 0].sum()
        sums[1] += hits.any(dim=-1).sum()
        sums[2] += b
        sums[3] += torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
    correct1, correct5, total, loss_sum = ds_engine.all_reduce_sum(sums.tolist(), dev)
    if total == 0:
        raise RuntimeError("evaluation saw no videos: is the validation split empty?")
    return {
        "top1": 100.0 * correct1 / total,
        "top5": 100.0 * correct5 / total,
        "val_loss": loss_sum / total,
        "val_videos": int(total),
    }
