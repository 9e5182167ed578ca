"""Cut a video down to the groups of pictures its clips need, for a decoder that cannot jump.

DALI's video decoder (2.4) decodes an in-memory video from its first frame up to the last
frame asked for: on the CPU the last of 300 frames costs 25x the first (`vivit bench decode`),
and NVDEC's decoder is built from the same code without a frame index. A training clip is a
few frames spread over the whole video, so most of that decoding is thrown away.

`trim_views` hands the decoder a remuxed copy holding, for each asked-for frame, only the
packets from the key frame before it up to it, and renumbers the views' frame indices into
that copy. The decoder then returns the same pixels, bit for bit, for a fraction of the work.
That holds only where each key frame resets the decoder and nothing is reordered, so the cut
is made only for such streams: VP8/VP9, and H.264 whose key frames are IDR pictures, with
every packet timed and decode order equal to display order (no B-frames). Everything else,
and any error while cutting, leaves the video as it is.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import av
import numpy as np

from data.augment import Box
from data.bitstream import h264_idr, h264_nal_length_size, key_positions, read_packets

log = logging.getLogger(__name__)

View = tuple[np.ndarray, Box]

# codec (metadata name) -> container the cut copy is written in
TRIM_CONTAINERS = {"vp8": "webm", "vp9": "webm", "h264": "mp4"}

# Cutting costs a pass over the packets and a remux (2-5 ms per clip on a 2-core Xeon at 64-128
# px): below this many frames saved it is not worth it, and the demo's 16-frame clips are never cut.
MIN_SAVED_FRAMES = 32


def _segments(key_of: list[int], wanted: list[int]) -> list[tuple[int, int]]:
    """(first, last) packet ranges, sorted and merged: each wanted frame with its key frame."""
    out: list[list[int]] = []
    for want in wanted:
        start = key_of[want]
        if out and start <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], want)
        else:
            out.append([start, want])
    return [(a, b) for a, b in out]


def _cut(data: bytes, views: Sequence[View], codec: str) -> tuple[bytes, list[View]] | None:
    with av.open(io.BytesIO(data)) as src:
        stream = src.streams.video[0]
        packets = read_packets(src, stream)
        if packets is None:
            return None
        pts = [int(p.pts) for p in packets]
        if pts[0] < 0 or any(b <= a for a, b in zip(pts, pts[1:], strict=False)):
            return None  # reordered frames (B-frames) or an edit list: frame numbers may differ
        nal_length = h264_nal_length_size(stream.codec_context.extradata)
        keys = [
            bool(p.is_keyframe) and (codec != "h264" or h264_idr(bytes(p), nal_length))
            for p in packets
        ]
        if not keys[0]:
            return None
        key_of = key_positions(keys)
        last = len(packets) - 1
        wanted = sorted({min(int(i), last) for idx, _ in views for i in idx})
        segments = _segments(key_of, wanted)
        kept = sum(b - a + 1 for a, b in segments)
        if wanted[-1] + 1 - kept < MIN_SAVED_FRAMES:
            return None
        step = max(pts[1] - pts[0], 1) if len(pts) > 1 else 1
        renumber: dict[int, int] = {}
        buf = io.BytesIO()
        with av.open(buf, "w", format=TRIM_CONTAINERS[codec]) as out:
            out_stream = out.add_stream_from_template(stream)
            for first, end in segments:
                for i in range(first, end + 1):
                    packet = packets[i]
                    packet.stream = out_stream
                    packet.pts = packet.dts = len(renumber) * step
                    packet.duration = step
                    renumber[i] = len(renumber)
                    out.mux(packet)
    cut_views = [
        (np.asarray([renumber[min(int(i), last)] for i in idx], np.int32), box)
        for idx, box in views
    ]
    return buf.getvalue(), cut_views


def views_for_decoder(
    data: bytes, views: Sequence[View], codec: str, trim: bool
) -> tuple[bytes, list[View]]:
    """What a decoder that cannot jump is handed for `views`: the cut video and the views
    renumbered into it where `trim` is on and the cut is made (`trim_views`), else the whole
    video and the views as they are."""
    cut = trim_views(data, views, codec) if trim else None
    return cut if cut is not None else (data, list(views))


def trim_views(data: bytes, views: Sequence[View], codec: str) -> tuple[bytes, list[View]] | None:
    """(the cut video, the views renumbered into it), or None where the video is better left
    whole: a stream the cut would not be exact for, or one that saves fewer than
    `MIN_SAVED_FRAMES` frames of decoding."""
    if codec not in TRIM_CONTAINERS or not views:
        return None
    asked = {int(i) for idx, _ in views for i in idx}
    if not asked or max(asked) + 1 - len(asked) < MIN_SAVED_FRAMES:
        return None  # cannot save enough even with a key frame at every asked frame: not read
    try:
        return _cut(data, views, codec)
    except Exception as exc:  # FFmpeg errors come in many types; the decoder will report it
        log.debug("could not cut a %s video to its key-frame groups: %s", codec, exc)
        return None
