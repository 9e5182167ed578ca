"""Main-process side of the input pipeline: worker jobs -> decoded batches on the device."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import torch

from data.dali_decode import DaliClipDecoder

log = logging.getLogger(__name__)


class Batcher:
    """Main-process side: groups jobs into batches, decodes the DALI ones, moves to device."""

    def __init__(
        self,
        loader: torch.utils.data.DataLoader,
        decoder: DaliClipDecoder | None,
        batch_size: int,
        device: torch.device,
        dtype: torch.dtype,
        counters: dict,
        max_skipped: int,
    ):
        self.loader, self.decoder, self.batch_size = loader, decoder, batch_size
        self.device, self.dtype, self.counters = device, dtype, counters
        self.max_skipped = max_skipped
        self._warned = False
        self._since_good = 0  # records skipped since the last usable one

    def _skipped(self, n: int) -> None:
        """Count `n` unusable records; an endless stream of nothing else is an error, not a hang."""
        self._since_good += n
        if self._since_good > self.max_skipped:
            counts = {k: v for k, v in self.counters.items() if k.endswith("_skipped")}
            raise RuntimeError(
                f"no usable record in the last {self._since_good} read ({counts}): "
                "the split is corrupt or mislabelled (the first bad record is logged above)"
            )

    def _decode(self, jobs: list[dict]) -> list[tuple[torch.Tensor, int]]:
        """(V×T×C×S×S clip, label) for every job that decodes; bad ones are counted."""
        flat = [(j["data"], idx, box) for j in jobs if "data" in j for idx, box in j["views"]]
        decoded, bad_views = (None, [])
        if flat:
            assert self.decoder is not None
            decoded, bad_views = self.decoder.decode(flat)
        bad = sorted(bad_views)
        out, pos = [], 0
        for job in jobs:
            if "frames" in job:
                if job.get("fallback") and not self._warned:
                    log.warning(
                        "DALI cannot decode this codec on %s; decoding with PyAV", self.device
                    )
                    self._warned = True
                out.append((job["frames"], job["label"]))
                continue
            start, v = pos, len(job["views"])
            pos += v
            if any(start <= b < start + v for b in bad):
                self.counters["corrupt_skipped"] += 1
                continue
            row = start - sum(1 for b in bad if b < start)  # DALI returns only the good views
            out.append((decoded[row : row + v], job["label"]))
        return out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ready: list[tuple[torch.Tensor, int]] = []
        pending: list[dict] = []
        it = iter(self.loader)
        t0 = time.perf_counter()
        while True:
            try:
                job = next(it)
            except StopIteration:
                break
            if "__corrupt__" in job:
                self.counters["corrupt_skipped"] += int(job["__corrupt__"])
                self._skipped(int(job["__corrupt__"]))
                continue
            if "__bad__" in job:
                self._count_bad(job["__bad__"], job["detail"])
                self._skipped(1)
                continue
            pending.append(job)
            if len(pending) + len(ready) >= self.batch_size:
                decoded = self._decode(pending)
                if decoded:
                    self._since_good = 0
                self._skipped(len(pending) - len(decoded))
                ready += decoded
                pending = []
            if len(ready) >= self.batch_size:
                yield self._emit(ready[: self.batch_size], t0)
                ready = ready[self.batch_size :]
                t0 = time.perf_counter()
        ready += self._decode(pending)
        while ready:
            yield self._emit(ready[: self.batch_size], t0)
            ready = ready[self.batch_size :]
            t0 = time.perf_counter()

    def _count_bad(self, kind: str, detail: str) -> None:
        key = f"bad_{kind}_skipped"
        if not self.counters[key]:
            log.warning("skipping %s (further ones are only counted: %s)", detail, key)
        self.counters[key] += 1

    def _emit(self, items: list[tuple[torch.Tensor, int]], t0: float):
        self.counters["data_wait_s"] += time.perf_counter() - t0
        self.counters["clips"] += len(items)
        frames = torch.stack([f for f, _ in items]).to(self.device, self.dtype, non_blocking=True)
        labels = torch.tensor([lab for _, lab in items], dtype=torch.long, device=self.device)
        return frames, labels
