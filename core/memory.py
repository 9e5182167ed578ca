"""Peak memory of the training part of a run: CUDA allocator peak, or sampled RSS on CPU.

On CPU there is no allocator peak to read, and `ru_maxrss` also counts imports and data
setup, so a thread samples the resident set while training runs.
"""

from __future__ import annotations

import threading

import psutil
import torch


class PeakMemory:
    """Start before the first step, read `.peak_bytes` at the end."""

    def __init__(self, dev: torch.device, interval_s: float = 0.005) -> None:
        self.device = dev
        self.kind = "cuda_max_allocated" if dev.type == "cuda" else "cpu_rss_sampled"
        self._interval = interval_s
        self._proc = psutil.Process()
        self._peak = 0
        self.start_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_bytes = torch.cuda.memory_allocated(self.device)
            return
        self.start_bytes = self._proc.memory_info().rss
        self._peak = self.start_bytes
        self._thread = threading.Thread(target=self._sample, daemon=True, name="peak-rss")
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    @property
    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return max(self._peak, self._proc.memory_info().rss)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
