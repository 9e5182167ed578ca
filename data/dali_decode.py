"""DALI clip decoding: encoded bytes + per-sample frame indices + crop box -> uint8 clips.

Bytes, INT32 frame indices and the ROI arrive through `external_source`, so the sampling and
augmentation policy stays in Python (shared with the PyAV path) and DALI does the heavy
work: decode (`cpu`, or `mixed` = NVDEC on a GPU), crop + flip + resize. Output stays uint8
(normalisation happens on the training device in its compute dtype: `data.augment.normalise`).
The ROI is relative to the decoded frame (`data.augment`), so metadata sizes never reach DALI.

With `views=k` (repeated sampling, `data.repeat_aug`), an item is k clips of one video, each with
its own frames and crop box: the union of their frames is decoded once, then each clip is
gathered from it (`fn.sequence_rearrange`) and cropped and resized under its own box. DALI's
`resize` takes one ROI per sequence, not per frame, hence one resize per view slot.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from data.augment import Box

log = logging.getLogger(__name__)

# Codecs fn.decoders.video handles on device="cpu" (DALI 2.4 docs); the rest need "mixed".
CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
MIXED_CODECS = CPU_CODECS | {"h264", "hevc", "av1", "mpeg4"}

# NVDEC refuses frames below a per-codec minimum ("Video is too small in at least one dimension.
# Provided: 32x32 vs supported: 48x16" for H.264 on an H100, and the pipeline is then invalid).
# H.264's is measured; the others are NVDEC's published decoder caps, rounded up where unsure.
NVDEC_MIN_SIZE = {
    "h264": (48, 16),
    "mpeg4": (48, 16),
    "vp8": (48, 16),
    "mjpeg": (64, 64),
    "hevc": (144, 144),
    "vp9": (128, 128),
    "av1": (128, 128),
}


def gpu_decodable(codec: str, width: int, height: int) -> bool:
    """Whether NVDEC takes a `width`×`height` video of `codec` (else: decode it on the CPU)."""
    min_w, min_h = NVDEC_MIN_SIZE.get(codec, (0, 0))
    return width >= min_w and height >= min_h


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def views_item(views: Sequence[tuple[np.ndarray, Box]]) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices and `k×4` crop boxes of one `DaliClipDecoder(views=k)` item: the k views'
    indices in turn; its output is `(k·T)×C×S×S`, view v in rows v·T…(v+1)·T."""
    frames = np.concatenate([np.asarray(idx) for idx, _ in views])
    return frames, np.asarray([box for _, box in views], dtype=np.float32)


def check_equal_lengths(items: Sequence[tuple[bytes, np.ndarray, Box]]) -> None:
    """Refuse a batch whose items ask for different numbers of frames: its clips come back as
    one `N×F×C×S×S` tensor, and a retry item by item would fail only when joining them."""
    lengths = sorted({len(frames) for _, frames, _ in items})
    if len(lengths) > 1:
        raise ValueError(
            f"the items of one DALI batch must ask for the same number of frames, got {lengths}"
        )


class DaliClipDecoder:
    """One DALI pipeline; `decode()` takes up to `max_batch` items, returns uint8 `N×F×C×S×S`.

    An item is `(bytes, frame indices, crop box)`; with `views=k`, the indices of k views in
    turn (k·T) and a `k×4` array of boxes, and F = k·T.
    """

    def __init__(
        self,
        *,
        max_batch: int,
        size: int,
        device: torch.device,
        num_threads: int = 2,
        views: int = 1,
    ):
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        self.max_batch, self.size, self.views = max_batch, size, views
        self.device = device
        self.gpu = device.type == "cuda"
        self.num_threads = num_threads
        self.codecs = MIXED_CODECS if self.gpu else CPU_CODECS
        self.name = "dali-mixed" if self.gpu else "dali-cpu"
        self._pipe = None

    def _build(self):
        from nvidia.dali import fn, pipeline_def, types

        dev_id = (self.device.index or 0) if self.gpu else None

        @pipeline_def(
            batch_size=self.max_batch,
            num_threads=self.num_threads,
            device_id=dev_id,
            exec_dynamic=True,
            prefetch_queue_depth=1,
        )
        def pipe():
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
            video = fn.decoders.video(
                encoded, device="mixed" if self.gpu else "cpu", frames=frames, pad_mode="edge"
            )
            clips = []
            for v in range(self.views):
                view = video
                if self.views > 1:
                    order = fn.external_source(name=f"order{v}", dtype=types.INT32, ndim=1)
                    view = fn.sequence_rearrange(video, new_order=order)
                clip = fn.resize(
                    view,
                    size=[self.size, self.size],
                    roi_start=fn.external_source(name=f"roi_start{v}", dtype=types.FLOAT, ndim=1),
                    roi_end=fn.external_source(name=f"roi_end{v}", dtype=types.FLOAT, ndim=1),
                    roi_relative=True,  # of the decoded frame: metadata sizes are never trusted
                    antialias=True,
                    dtype=types.UINT8,
                )
                clips.append(fn.transpose(clip, perm=[0, 3, 1, 2]))  # FHWC -> FCHW
            return clips[0] if self.views == 1 else fn.cat(*clips, axis=0)

        p = pipe()
        p.build()
        return p

    def _run(self, items: Sequence[tuple[bytes, np.ndarray, Box]]) -> torch.Tensor:
        if self._pipe is None:
            self._pipe = self._build()
        p = self._pipe
        p.feed_input("encoded", [np.frombuffer(b, dtype=np.uint8) for b, _, _ in items])
        frames = [np.asarray(i, dtype=np.int32) for _, i, _ in items]
        boxes = [
            np.clip(np.asarray(box, np.float32), 0.0, 1.0).reshape(self.views, 4)
            for _, _, box in items
        ]
        if self.views > 1:  # decode each video's frames once, in order; gather each view
            unions = [np.unique(f, return_inverse=True) for f in frames]
            frames = [union for union, _ in unions]
            orders = [np.split(inverse, self.views) for _, inverse in unions]
            for v in range(self.views):
                p.feed_input(f"order{v}", [o[v].astype(np.int32) for o in orders])
        p.feed_input("frames", frames)
        for v in range(self.views):
            p.feed_input(f"roi_start{v}", [b[v, :2] for b in boxes])
            p.feed_input(f"roi_end{v}", [b[v, 2:] for b in boxes])
        (out,) = p.run()
        if self.gpu:
            return torch.from_dlpack(out.as_tensor()).clone()
        return torch.from_numpy(out.as_array().copy())

    def close(self) -> None:
        """Drop the pipeline now; it is rebuilt on the next decode."""
        self._pipe = None

    def decode(
        self, items: Sequence[tuple[bytes, np.ndarray, Box]]
    ) -> tuple[torch.Tensor | None, list[int]]:
        """Decoded clips of the good items, and the positions of items DALI could not decode.

        A DALI error invalidates the pipeline, so on failure it is rebuilt and the batch
        retried one clip at a time to find the bad ones.
        """
        if not items:
            return None, []
        check_equal_lengths(items)
        try:
            return self._run(items), []
        except Exception as e:  # DALI surfaces decode errors as RuntimeError or IndexError
            log.debug("DALI batch failed, isolating bad clips: %s", e)
            self._pipe = None
        good, bad = [], []
        for pos, item in enumerate(items):
            try:
                good.append(self._run([item]))
            except Exception:
                self._pipe = None
                bad.append(pos)
        return (torch.cat(good) if good else None), bad
