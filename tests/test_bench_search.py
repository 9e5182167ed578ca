"""The frames/batch search finds the limit of a monotone memory rule with few probes."""

from __future__ import annotations

import pytest

from benchmarks.search import largest_fitting


@pytest.mark.parametrize("limit", [1, 7, 8, 37, 100, 255])
def test_finds_limit_within_a_quarter(limit: int) -> None:
    res = largest_fitting(lambda v: v <= limit, start=8, cap=256)
    assert res.best is not None and res.best <= limit
    assert limit - res.best <= max(1, res.best // 4)
    assert not res.capped
    assert len(res.probes) <= 12
    assert all(ok == (v <= limit) for v, ok in res.probes)


def test_cap_and_nothing_fits() -> None:
    capped = largest_fitting(lambda v: True, start=8, cap=100)
    assert capped.best == 100 and capped.capped
    none = largest_fitting(lambda v: False, start=8, cap=100)
    assert none.best is None and [v for v, _ in none.probes] == [8, 4, 2, 1]
