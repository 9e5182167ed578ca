"""Largest value that still fits: doubling, then bisection (each probe is a fresh process)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class SearchResult:
    best: int | None
    """Largest value seen to fit (None: not even the smallest tried)."""
    capped: bool
    """`best` is the search cap: the true limit may be higher."""
    probes: list[tuple[int, bool]] = field(default_factory=list)


def largest_fitting(
    fits: Callable[[int], bool], start: int, cap: int, min_step: int = 1
) -> SearchResult:
    """Largest v in [1, cap] with fits(v), assuming fits is monotone (more -> more memory).

    Doubles from `start` until a probe fails or `cap` is reached, then bisects until the
    gap is at most `max(min_step, lo // 4)` (a quarter of the value: enough resolution
    for a ratio, at ~2 extra probes).
    """
    probes: list[tuple[int, bool]] = []

    def probe(v: int) -> bool:
        ok = fits(v)
        probes.append((v, ok))
        return ok

    lo = min(start, cap)
    while not probe(lo):
        if lo == 1:
            return SearchResult(None, False, probes)
        lo = max(1, lo // 2)
    hi = None
    while hi is None:
        if lo >= cap:
            return SearchResult(lo, True, probes)
        nxt = min(lo * 2, cap)
        if probe(nxt):
            lo = nxt
        else:
            hi = nxt
    while hi - lo > max(min_step, lo // 4):
        mid = (lo + hi) // 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    return SearchResult(lo, False, probes)
