"""A training stream whose next batches can be used before training takes them.

Precise BatchNorm statistics (`train.precise_bn_batches`) are computed on the micro-batches
training is about to take, so they cost forward passes only (nothing is decoded twice) and
training sees exactly the batches it would have seen. The stream position a checkpoint stores
stays that of the last batch training took, so a resumed run replays the looked-at ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from core.batches import TrainBatches

_END = object()


class Lookahead:
    """`next()` as the wrapped stream; `peek(n)` the next n batches without taking them."""

    def __init__(self, source: TrainBatches, stream: Iterator[Any]) -> None:
        self._source, self._stream = source, stream
        self._ahead: deque[tuple[Any, dict[str, Any]]] = deque()
        self._taken_position: dict[str, Any] | None = None  # None: the source's own

    def __iter__(self) -> Lookahead:
        return self

    def __next__(self) -> Any:
        if self._ahead:
            batch, self._taken_position = self._ahead.popleft()
            return batch
        self._taken_position = None
        return next(self._stream)

    def peek(self, n: int) -> list[Any]:
        """The next `n` batches (fewer if the stream ends first); training takes them later,
        in this order."""
        if not self._ahead and self._taken_position is None:
            self._taken_position = self._source.position()
        while len(self._ahead) < n:
            batch = next(self._stream, _END)
            if batch is _END:
                break
            self._ahead.append((batch, self._source.position()))
        return [batch for batch, _ in list(self._ahead)[:n]]

    def position(self) -> dict[str, Any]:
        """The source's position after the last batch training took (not the looked-at ones)."""
        if self._taken_position is not None:
            return self._taken_position
        return self._source.position()
