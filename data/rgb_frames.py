"""Decoded PyAV frames to RGB arrays, through a scaler made in the process that uses it.

`VideoFrame.to_ndarray(format=...)` converts through a scaler PyAV keeps per thread (av >= 18),
an swscale context with slice threads of its own. A process forked after its parent converted a
frame (a DataLoader worker, a shard-building pool worker) inherits that context but not its
threads, and its first conversion waits for them forever (tests/test_resume_data.py hung so on
a 2-core AMD EPYC; py-spy: `sws_scale_frame` in `avpriv_slicethread_execute`). A converter
made where it is used starts its threads there.
"""

from __future__ import annotations

import numpy as np
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter


class RgbFrames:
    """`convert(frame)`: `H×W×3` uint8 RGB, optionally resized; make one per video decoded."""

    def __init__(self) -> None:
        self._scaler = VideoReformatter()

    def convert(
        self, frame: VideoFrame, width: int | None = None, height: int | None = None
    ) -> np.ndarray:
        rgb = self._scaler.reformat(frame, format="rgb24", width=width, height=height)
        return rgb.to_ndarray()
