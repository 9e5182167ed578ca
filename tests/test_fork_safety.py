"""Workers forked after a DALI pipeline became garbage must not hang (CI hung exactly so)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("nvidia.dali")

SCENARIO = textwrap.dedent(
    """
    import gc, sys
    import numpy as np, torch
    from data.dali_decode import DaliClipDecoder
    from data.fork import forking
    from tests.data_helpers import index_frames
    from data.transcode import encode_frames

    clip = encode_frames(index_frames(4), fps=8.0, codec="vp9", gop=4, lossless=True)
    dec = DaliClipDecoder(max_batch=1, size=16, device=torch.device("cpu"))
    frames, bad = dec.decode([(clip, np.arange(2), (0.0, 0.0, 1.0, 1.0))])
    assert frames is not None and not bad
    dec.cycle = dec  # garbage only the cyclic collector frees, as DALI's pipelines are
    del dec

    class CollectInWorker(torch.utils.data.IterableDataset):
        def __iter__(self):
            gc.collect()  # frees whatever garbage the child inherited
            yield torch.zeros(1)

    loader = torch.utils.data.DataLoader(CollectInWorker(), batch_size=None, num_workers=1)
    {wrap}
        it = iter(loader)  # forks the worker
    batches = list(it)
    assert len(batches) == 1
    print("ok")
    """
)


def test_workers_forked_after_dali_garbage_finish(tmp_path):
    code = SCENARIO.format(wrap="with forking():")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd="."
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
