"""Turn one source video into the bytes stored in a shard (PyAV, no system ffmpeg needed).

Re-encoding uses short GOPs and no B-frames because DALI seeks to the previous key frame
and decodes forward (DALI #2954): long GOPs make random frame access slow.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from data.rgb_frames import RgbFrames

CODECS = ("copy", "h264", "vp9")
_ENCODER = {"h264": "libx264", "vp9": "libvpx-vp9", "vp8": "libvpx"}  # vp8: tests only
_CONTAINER = {"h264": ("mp4", "mp4"), "vp9": ("webm", "webm"), "vp8": ("webm", "webm")}
# codec name as PyAV reports it -> container that can hold a stream copy
_COPY_CONTAINER = {"vp8": "webm", "vp9": "webm", "av1": "webm"}


class SkipVideo(Exception):
    """A source video that cannot go into a shard; the message is the reason in build-report.json."""


@dataclass
class EncodedVideo:
    data: bytes
    ext: str
    meta: dict


def codec_name(name: str) -> str:
    """Normalise PyAV codec names (`libvpx-vp9`, `h264`, ...) to the short names in metadata."""
    name = name.lower()
    for short in ("vp9", "vp8", "h264", "hevc", "av1", "mpeg4", "mjpeg"):
        if short in name:
            return short
    return name


def encode_frames(
    frames: np.ndarray,
    *,
    fps: float,
    codec: str = "vp9",
    gop: int = 8,
    lossless: bool = False,
    options: dict[str, str] | None = None,
    container: str | None = None,
) -> bytes:
    """Encode `T×H×W×3` uint8 RGB frames; `lossless` keeps pixel values exact (VP9 only).

    `options` are added to the encoder's (e.g. B-frames, open GOPs: what sources handed over
    by `--codec copy` may hold); `container` replaces the codec's usual one (`h264`: a raw
    stream whose packets carry no timestamps)."""
    if codec not in _ENCODER:
        raise ValueError(f"codec must be one of {sorted(_ENCODER)}, got '{codec}'")
    frames = np.ascontiguousarray(frames)
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"frame size must be even for yuv420p, got {w}x{h}")
    buf = io.BytesIO()
    # bitexact: no random segment UID, so the same frames give the same bytes (reproducible sets)
    fmt = container or _CONTAINER[codec][0]
    with av.open(buf, "w", format=fmt, options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream(_ENCODER[codec], rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.gop_size = gop
        if codec == "vp9":
            opts = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "row-mt": "0"}
            opts.update({"lossless": "1"} if lossless else {"crf": "20", "b": "0"})
        elif codec == "vp8":
            opts = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "crf": "10"}
        else:
            opts = {"preset": "veryfast", "crf": "18", "bf": "0", "g": str(gop), "threads": "1"}
        stream.options = opts | (options or {})
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


class FramePicker:
    """Which source frames a re-encoded clip keeps: frame-rate reduction to `fps` and a cap of
    `max_seconds`, decided from each frame's presentation time (seconds, in order). Shared by
    the shard builder and `kept_frames`, so a video file read directly sees the same frames."""

    def __init__(self, fps: float, max_seconds: float | None = None):
        self.step, self.max_seconds, self.next_tick = 1.0 / fps, max_seconds, 0.0

    def past_end(self, t: float) -> bool:
        return self.max_seconds is not None and t >= self.max_seconds

    def keep(self, t: float) -> bool:
        if t + 1e-6 < self.next_tick:
            return False
        self.next_tick += self.step
        return True


def kept_frames(
    times: list[float], src_fps: float, fps: float | None, max_seconds: float | None
) -> list[int]:
    """Indices of the frames (presentation times `times`) that `prepare_video` would keep for
    `--fps fps --max-seconds max_seconds`."""
    picker = FramePicker(min(fps, src_fps) if fps else src_fps, max_seconds)
    kept = []
    for i, t in enumerate(times):
        if picker.past_end(t):
            break
        if picker.keep(t):
            kept.append(i)
    return kept


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def _target_size(w: int, h: int, short_side: int | None) -> tuple[int, int]:
    if not short_side:
        return _even(w), _even(h)
    scale = short_side / min(w, h)
    return _even(w * scale), _even(h * scale)


def _remux(path: Path, stream_index: int, codec: str) -> tuple[bytes, str]:
    fmt = _COPY_CONTAINER.get(codec, "mp4")
    buf = io.BytesIO()
    with av.open(str(path)) as src, av.open(buf, "w", format=fmt) as out:
        in_stream = src.streams.video[stream_index]
        out_stream = out.add_stream_from_template(in_stream)
        for packet in src.demux(in_stream):
            if packet.dts is None:
                continue
            packet.stream = out_stream
            out.mux(packet)
    return buf.getvalue(), fmt


def prepare_video(
    path: str | Path,
    *,
    codec: str = "h264",
    short_side: int | None = None,
    fps: float | None = None,
    gop: int = 8,
    max_seconds: float | None = None,
    min_frames: int = 2,
) -> EncodedVideo:
    """Decode `path` fully (proves it is readable), then re-encode or stream-copy it.

    `copy` keeps every frame of the first video stream, so it ignores `fps` and `max_seconds`.
    Fewer than `min_frames` kept frames is not a video (e.g. a still image named `.mp4`).
    """
    path = Path(path)
    if codec == "copy":
        fps, max_seconds = None, None
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, got '{codec}'")
    if not path.is_file():
        raise SkipVideo("missing file")
    try:
        container = av.open(str(path))
    except Exception as e:  # PyAV raises several error types for unreadable containers
        raise SkipVideo(f"cannot open: {e}") from e
    with container:
        if not container.streams.video:
            raise SkipVideo("no video stream")
        stream = container.streams.video[0]
        src_codec = codec_name(stream.codec_context.name)
        src_fps = float(stream.average_rate or stream.guessed_rate or 25)
        out_fps = min(fps, src_fps) if fps else src_fps
        frames: list[np.ndarray] = []
        rgb = RgbFrames()
        picker = FramePicker(out_fps, max_seconds)
        try:
            for i, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else i / src_fps
                if picker.past_end(t):
                    break
                if not picker.keep(t):
                    continue  # dropped by frame-rate reduction
                if codec == "copy":
                    frames.append(np.empty((frame.height, frame.width, 0), np.uint8))
                else:
                    w, h = _target_size(frame.width, frame.height, short_side)
                    frames.append(rgb.convert(frame, w, h))
        except Exception as e:
            raise SkipVideo(f"undecodable: {e}") from e
    if not frames:
        raise SkipVideo("no decodable frames")
    if len(frames) < min_frames:
        raise SkipVideo(
            f"only {len(frames)} frame(s) ({src_codec}), fewer than --min-frames {min_frames}: "
            "not a video"
        )
    if codec == "copy":
        try:
            data, ext = _remux(path, 0, src_codec)
        except Exception as e:
            raise SkipVideo(f"stream copy failed: {e}") from e
        out_codec, (h, w) = src_codec, frames[0].shape[:2]
        out_fps = src_fps
    else:
        arr = np.stack(frames)
        data = encode_frames(arr, fps=out_fps, codec=codec, gop=gop)
        ext, out_codec, (h, w) = _CONTAINER[codec][1], codec, arr.shape[1:3]
    meta = {
        "fps": out_fps,
        "frames": len(frames),
        "width": int(w),
        "height": int(h),
        "codec": out_codec,
        "source_codec": src_codec,
    }
    return EncodedVideo(data=data, ext=ext, meta=meta)
