"""A video stream's packets read once, and what their own bytes say where the container's flags
are not enough.

Both places that start decoding somewhere else than the first frame (`data.pyav_decode`'s
jumps, `data.gop_trim`'s cuts) number frames by packets and start at key frames: a packet is one
frame only if the frame in it is shown, and an H.264 key frame is a safe start only if it is an
IDR picture.
"""

from __future__ import annotations

from collections.abc import Sequence


def h264_nal_length_size(extradata: bytes | None) -> int | None:
    """Bytes in each NAL unit's length prefix where the stream's packets are length-prefixed
    (its extradata is an `avcC` record, version byte 1, as MP4 and Matroska carry), None where
    they are Annex-B (start codes). Only the stream says which: a packet's first bytes cannot
    (a 256-511-byte unit's prefix `00 00 01 xx` reads as a start code)."""
    if extradata and len(extradata) >= 5 and extradata[0] == 1:
        return (extradata[4] & 0x03) + 1
    return None


def h264_idr(payload: bytes, length_size: int | None) -> bool:
    """Whether an H.264 packet holds an IDR picture (NAL type 5): the only key frames after
    which no later picture refers to an earlier one. `length_size`: the stream's NAL length
    prefix (`h264_nal_length_size`), None for Annex-B; a packet that does not parse as that
    framing is not IDR (the caller then leaves the video whole)."""
    if length_size is None:
        if not (payload[:3] == b"\x00\x00\x01" or payload[:4] == b"\x00\x00\x00\x01"):
            return False
        units = [u for u in payload.split(b"\x00\x00\x01")[1:] if u]
        return any(u[0] & 0x1F == 5 for u in units)
    pos = 0
    while pos + length_size < len(payload):
        size = int.from_bytes(payload[pos : pos + length_size], "big")
        if size <= 0 or pos + length_size + size > len(payload):
            return False
        if payload[pos + length_size] & 0x1F == 5:
            return True
        pos += length_size + size
    return False


def vp8_shown(payload: bytes) -> bool:
    """Whether a VP8 packet's frame is shown (frame tag bit 4). An alt-ref frame stored in a
    packet of its own is not: packets would then outnumber the frames the decoder puts out.
    FFmpeg packs such frames with the next shown one; other muxers may not."""
    return bool(payload) and bool(payload[0] & 0x10)


def read_packets(container, stream) -> list | None:
    """The stream's data packets in decode order, read once (no decoding); None where packets
    are not frames one to one: a packet without a time, or a VP8 frame that is not shown."""
    vp8 = stream.codec_context.name == "vp8"
    packets = []
    for packet in container.demux(stream):
        if packet.size == 0:
            continue  # the demuxer's end-of-stream marker
        if packet.pts is None or (vp8 and not vp8_shown(bytes(packet))):
            return None
        packets.append(packet)
    return packets or None


def key_positions(keys: Sequence[bool]) -> list[int]:
    """For each position, the last one at or before it that is a key frame (0 if none)."""
    out, key = [], 0
    for i, is_key in enumerate(keys):
        key = i if is_key else key
        out.append(key)
    return out
