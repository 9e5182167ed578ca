"""What a compressed packet's own bytes say, where the container's flags are not enough.

Key frames and frame numbering decide where decoding may start (`data.pyav_decode`'s jumps,
`data.gop_trim`'s cuts): an H.264 key frame is a safe start only if it is an IDR picture, and a
packet is one frame of the video only if the frame in it is shown.
"""

from __future__ import annotations


def h264_idr(payload: bytes) -> bool:
    """Whether an H.264 packet holds an IDR picture (NAL type 5): the only key frames after
    which no later picture refers to an earlier one. Length-prefixed (MP4) or Annex-B units."""
    if payload[:3] == b"\x00\x00\x01" or payload[:4] == b"\x00\x00\x00\x01":
        units = [u for u in payload.split(b"\x00\x00\x01")[1:] if u]
        return any(u[0] & 0x1F == 5 for u in units)
    pos = 0
    while pos + 4 < len(payload):
        size = int.from_bytes(payload[pos : pos + 4], "big")
        if size <= 0 or pos + 4 + size > len(payload):
            return False
        if payload[pos + 4] & 0x1F == 5:
            return True
        pos += 4 + size
    return False


def vp8_shown(payload: bytes) -> bool:
    """Whether a VP8 packet's frame is shown (frame tag bit 4). An alt-ref frame stored in a
    packet of its own is not: packets would then outnumber the frames the decoder puts out.
    FFmpeg packs such frames with the next shown one; other muxers may not."""
    return bool(payload) and bool(payload[0] & 0x10)
