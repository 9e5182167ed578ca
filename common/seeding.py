"""Every random stream of the project, derived from (seed, purpose, rank, worker, step...).

One rule: a stream is named by its *purpose* (a string) and a tuple of integers (rank, world,
worker, step, ...), and its generator comes from `numpy.random.SeedSequence` over
`[seed, purpose_key(purpose), *keys]`. Never `hash()`: Python salts string hashes per process
(`PYTHONHASHSEED`), so two runs with the same seed would see different data orders.
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def purpose_key(purpose: str) -> int:
    """A stable 63-bit integer for a purpose name (the same in every process and Python)."""
    if not purpose:
        raise ValueError("a random stream needs a purpose name")
    return int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:8], "little") >> 1


def text_key(text: str) -> int:
    """A stable 63-bit integer for a string key such as a clip's WebDataset key (never `hash()`)."""
    return purpose_key(text)


def seed_sequence(seed: int, purpose: str, *keys: int) -> np.random.SeedSequence:
    """The SeedSequence of stream `purpose` for these integer keys (rank, worker, step, ...)."""
    entropy = [int(seed), purpose_key(purpose), *(int(k) for k in keys)]
    if any(v < 0 for v in entropy):
        raise ValueError(f"seed and keys must be >= 0, got {entropy}")
    return np.random.SeedSequence(entropy)


def int_seed(seed: int, purpose: str, *keys: int) -> int:
    """A 63-bit integer seed (for `torch.manual_seed`, `random.Random`, DALI...)."""
    state = seed_sequence(seed, purpose, *keys).generate_state(2, np.uint32)
    return (int(state[0]) | (int(state[1]) << 32)) >> 1


def numpy_rng(seed: int, purpose: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng(seed_sequence(seed, purpose, *keys))


def python_rng(seed: int, purpose: str, *keys: int) -> random.Random:
    return random.Random(int_seed(seed, purpose, *keys))


def torch_generator(seed: int, purpose: str, *keys: int) -> torch.Generator:
    import torch

    return torch.Generator().manual_seed(int_seed(seed, purpose, *keys))


def seed_torch(seed: int, purpose: str, *keys: int) -> int:
    """Seed torch's global generator (model initialisation, dropout); returns the seed used."""
    import torch

    value = int_seed(seed, purpose, *keys)
    torch.manual_seed(value)
    return value
