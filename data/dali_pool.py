"""Several DALI pipelines decoding one batch together, each its own contiguous share.

One `mixed` pipeline decoded 77 clips/s of 40-frame 256 px H.264 on an H100 (2026-11-27), 0.6x
what the frozen ViT-B/16 step consumes. If DALI's video decoder works through a batch's clips
one after another, more pipelines help: `Pipeline.run()` releases the GIL, so N pipelines driven
from N threads decode N shares at once (on a GPU, N NVDEC sessions, which the chip's several
decoder engines can serve side by side). Whether that pays is measured by `vivit bench data
--dali-pipelines 1,2,4` (the GPU check runs it). Order, crops and frames are those of one
pipeline; only which pipeline decodes which clip changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from data.augment import Box
from data.dali_decode import DaliClipDecoder, check_equal_lengths


class DaliDecoderPool:
    """`DaliClipDecoder`'s interface over `pipelines` decoders, one thread each."""

    def __init__(
        self,
        *,
        max_batch: int,
        size: int,
        device: torch.device,
        num_threads: int,
        pipelines: int,
        views: int = 1,
    ):
        if pipelines < 2:
            raise ValueError(f"a pool needs at least 2 pipelines, got {pipelines}")
        share = -(-max_batch // pipelines)
        self.decoders = [
            DaliClipDecoder(
                max_batch=share, size=size, device=device, num_threads=num_threads, views=views
            )
            for _ in range(pipelines)
        ]
        first = self.decoders[0]
        self.max_batch, self.size, self.device = max_batch, size, device
        self.gpu, self.codecs, self.name = first.gpu, first.codecs, first.name
        self._threads: ThreadPoolExecutor | None = None

    def _decode_share(
        self, decoder: DaliClipDecoder, items: Sequence[tuple[bytes, np.ndarray, Box]]
    ) -> tuple[torch.Tensor | None, list[int]]:
        clips, bad = decoder.decode(items)
        if clips is not None and clips.is_cuda:  # copied on this thread's stream: done before use
            torch.cuda.current_stream(clips.device).synchronize()
        return clips, bad

    def decode(
        self, items: Sequence[tuple[bytes, np.ndarray, Box]]
    ) -> tuple[torch.Tensor | None, list[int]]:
        """As `DaliClipDecoder.decode`: the good clips in order, and the bad items' positions."""
        if not items:
            return None, []
        check_equal_lengths(items)  # here, not only per share: shares are joined below
        if self._threads is None:
            self._threads = ThreadPoolExecutor(len(self.decoders), thread_name_prefix="vivit-dali")
        bounds = np.linspace(0, len(items), len(self.decoders) + 1).round().astype(int)
        shares = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
        futures = [
            self._threads.submit(self._decode_share, dec, items[a:b])
            for dec, (a, b) in zip(self.decoders, shares, strict=False)
        ]
        good: list[torch.Tensor] = []
        bad: list[int] = []
        for (start, _), future in zip(shares, futures, strict=True):
            clips, share_bad = future.result()
            if clips is not None:
                good.append(clips)
            bad += [start + i for i in share_bad]
        return (torch.cat(good) if good else None), bad

    def close(self) -> None:
        """Stop the threads and drop every pipeline (rebuilt on the next decode)."""
        if self._threads is not None:
            self._threads.shutdown(wait=True)
            self._threads = None
        for dec in self.decoders:
            dec.close()


AnyDaliDecoder = DaliClipDecoder | DaliDecoderPool


def dali_decoder(
    *,
    max_batch: int,
    size: int,
    device: torch.device,
    num_threads: int,
    pipelines: int = 1,
    views: int = 1,
) -> AnyDaliDecoder:
    """One pipeline, or a pool of `pipelines` (`data.dali_pipelines`); `views` clips per item
    (`data.repeat_aug`)."""
    common = dict(max_batch=max_batch, size=size, device=device, num_threads=num_threads)
    if pipelines <= 1:
        return DaliClipDecoder(**common, views=views)
    return DaliDecoderPool(**common, pipelines=pipelines, views=views)
