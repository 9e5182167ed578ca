"""Start worker processes by `fork` without inheriting garbage that cannot be freed there.

A DALI pipeline left for the garbage collector (they sit in reference cycles) owns threads and
condition variables. Forked into a DataLoader or Pool worker, the child's collector frees it
and its destructor blocks forever in `pthread_cond_destroy` on a condition whose threads were
never copied: the worker hangs and so does its parent. This hung CI in a DataLoader started
after an earlier DALI source had been dropped.

So before forking: collect garbage here (where the pipelines' threads still exist), then
freeze every surviving object so the child's collector never walks what it inherited (the
recipe `gc.freeze`'s documentation gives for fork without exec). Unfrozen again once forked.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def forking() -> Iterator[None]:
    """Wrap the call that forks workers: `iter(dataloader)`, `multiprocessing.Pool(...)`."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
