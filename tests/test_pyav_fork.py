"""A process forked after its parent decoded with PyAV decodes too (it once waited forever)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCENARIO = textwrap.dedent(
    """
    import multiprocessing
    import numpy as np
    from data.pyav_decode import decode_frames
    from data.transcode import encode_frames

    frames = np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8)
    clip = encode_frames(frames, fps=8.0, codec="vp9", gop=4, lossless=True)
    assert decode_frames(clip, [0, 3]).shape == (2, 64, 64, 3)  # the parent converts first

    def child(queue):
        queue.put(decode_frames(clip, [1, 5]).shape)

    context = multiprocessing.get_context("fork")  # as DataLoader workers and build pools
    queue = context.Queue()
    worker = context.Process(target=child, args=(queue,))
    worker.start()
    print(queue.get(timeout=60))
    worker.join()
    """
)


def test_a_child_forked_after_the_parent_decoded_with_pyav_decodes() -> None:
    run = subprocess.run(
        [sys.executable, "-c", SCENARIO], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "(2, 64, 64, 3)"
