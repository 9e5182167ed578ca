"""A video file read directly (no shards) into the evaluation views a model sees.

`probe_video` reads the container's packet timestamps (no decoding) to count frames; the views
are those of evaluation - the same frame indices (`data.sampling.eval_indices`, over the frames
the shard builder would have kept for the training set's `--fps`/`--max-seconds`), the same crop
boxes (`data.augment.eval_boxes`) - decoded by DALI where it handles the codec on this device,
else by PyAV, exactly as the shard loader does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from data.augment import Box, eval_boxes
from data.dali_decode import DaliClipDecoder, gpu_decodable
from data.gop_trim import views_for_decoder
from data.pyav_decode import decode_views
from data.sampling import eval_indices
from data.transcode import codec_name, kept_frames

log = logging.getLogger(__name__)


class VideoFileError(ValueError):
    """A video file that cannot be read; the message names the file and why."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video file's container says about its first video stream."""

    path: Path
    codec: str
    """Short codec name (`vp9`, `h264`, ...), as in shard metadata."""
    width: int
    height: int
    fps: float
    times: list[float]
    """Presentation time (s) of every frame, in display order."""

    @property
    def frames(self) -> int:
        return len(self.times)


def probe_video(path: str | Path) -> VideoInfo:
    """Container metadata and frame times of `path`; `VideoFileError` if it is no readable video."""
    path = Path(path)
    if not path.exists():
        raise VideoFileError(f"{path}: no such file")
    if not path.is_file():
        raise VideoFileError(f"{path}: not a file")
    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises one error type per FFmpeg error code
        raise VideoFileError(f"{path}: not a readable video ({exc})") from None
    with container:
        if not container.streams.video:
            raise VideoFileError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        stamps: list[int | None] = []
        try:
            for packet in container.demux(stream):
                if packet.size:  # the demuxer ends with an empty flush packet
                    stamps.append(packet.pts)
        except Exception as exc:
            raise VideoFileError(f"{path}: unreadable video data ({exc})") from None
        if not stamps:
            raise VideoFileError(f"{path}: has no video frames")
        if not ctx.width or not ctx.height:
            raise VideoFileError(f"{path}: video stream has no frame size")
        if any(s is None for s in stamps) or stream.time_base is None:
            times = [i / fps for i in range(len(stamps))]
        else:  # packets come in decode order; frames are numbered in display order
            base = float(stream.time_base)
            times = sorted(float(s) * base for s in stamps)  # type: ignore[arg-type]
        return VideoInfo(path, codec_name(ctx.name), ctx.width, ctx.height, fps, times)


def eval_views(
    info: VideoInfo,
    *,
    frames: int,
    sampling: str,
    stride: int,
    clips: int,
    crops: int,
    clip_fps: float | None = None,
    clip_max_seconds: float | None = None,
) -> list[tuple[np.ndarray, Box]]:
    """`clips × crops` evaluation views (source frame indices, relative crop box) of a file.

    Indices are chosen among the frames a shard of this video would hold (`clip_fps`,
    `clip_max_seconds`: the build options of the training shards), then mapped back to the file.
    """
    kept = np.asarray(kept_frames(info.times, info.fps, clip_fps, clip_max_seconds), np.int32)
    if kept.size == 0:
        raise VideoFileError(f"{info.path}: no frames within the first {clip_max_seconds} s")
    return [
        (kept[idx], box)
        for idx in eval_indices(len(kept), frames, sampling, stride, clips)
        for box in eval_boxes(info.height, info.width, crops)
    ]


def read_views(
    info: VideoInfo,
    views: Sequence[tuple[np.ndarray, Box]],
    *,
    size: int,
    dali: DaliClipDecoder | None,
    gop_trim: bool = True,
) -> tuple[torch.Tensor, str]:
    """(uint8 `V×T×C×size×size` views, name of the decoder that made them); normalise them on
    the model's device (`data.augment.normalise`), as the shard loader does. `gop_trim`: DALI
    gets only the key-frame groups the views need (`data.gop_trim`), as in the loader."""
    data = info.path.read_bytes()
    if (
        dali is not None
        and info.codec in dali.codecs
        and (not dali.gpu or gpu_decodable(info.codec, info.width, info.height))
    ):
        cut_data, cut_views = views_for_decoder(data, views, info.codec, gop_trim)
        decoded, bad = dali.decode([(cut_data, idx, box) for idx, box in cut_views])
        if decoded is not None and not bad:
            return decoded, dali.name
        log.warning("%s: DALI could not decode it; trying PyAV", info.path)
    try:
        return decode_views(data, views, size), "pyav"
    except Exception as exc:  # FFmpeg errors come in many types
        raise VideoFileError(f"{info.path}: cannot decode its frames ({exc})") from None
