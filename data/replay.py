"""Exact resumption of a training stream, shared by the video and the token-cache sources.

A source whose DataLoader items are a pure function of (seed, rank, world, workers, shard
list) records, after each batch it hands out, how many items that batch used up. A resumed
run replays that many items (its workers read them, but neither decode nor emit them) and
continues with exactly the batches an uninterrupted run would have drawn next.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from data.batcher import StreamPosition
from data.config import DataConfig
from data.prefetch import Prefetcher

log = logging.getLogger(__name__)


class ReplayableStream:
    """The position protocol of a training source (`position()` for the checkpoint, and the
    replay count `batches()` derives from it). The source sets `_position` when the consumer
    takes a batch."""

    cfg: DataConfig
    rank: int
    world: int
    seed: int
    shards: list[tuple[str, int]]
    counters: dict[str, int]
    _position: StreamPosition

    def position(self) -> dict[str, Any]:
        """The stream position after the last batch `batches()` handed out (plain JSON)."""
        return {
            "items": self._position.items,
            "counters": self._position.counters,
            **self._stream_identity(),
        }

    def _handed_out(
        self, batches: Prefetcher, inputs: Callable[[Any], Any] = lambda x: x
    ) -> Iterator[tuple[Any, Any]]:
        """`(inputs(x), labels)` of each `(x, labels, position after)` of `batches`, setting
        `_position` as the consumer takes it; `batches` is closed when the consumer stops
        early or drops the stream."""
        try:
            for x, labels, position_after in batches:
                self._position = position_after
                yield inputs(x), labels
        finally:
            batches.close()

    def _stream_identity(self) -> dict[str, Any]:
        """What makes the item stream this one: a position fits only a stream that matches."""
        listing = json.dumps([[Path(url).name, count] for url, count in self.shards])
        return {
            "workers": self.cfg.resolved_workers(),
            "rank": self.rank,
            "world": self.world,
            "seed": self.seed,
            "shards": hashlib.sha256(listing.encode()).hexdigest()[:16],
        }

    def _replay_items(self, position: dict[str, Any] | None, start_step: int) -> int | None:
        """Items to replay to continue at `position`, or None to start a stream seeded anew."""
        if position is None:
            if start_step > 0:
                log.warning(
                    "no data position to resume from at step %d (a checkpoint of an older "
                    "version?): the training stream starts anew, so this run sees other clips "
                    "than an uninterrupted one would",
                    start_step,
                )
            return None
        ours = self._stream_identity()
        changed = [
            f"{k} {position.get(k)!r} -> {v!r}" for k, v in ours.items() if position.get(k) != v
        ]
        items = position.get("items")
        if not isinstance(items, int) or items < 0:
            changed.append(f"items {items!r} (not a count)")
        if changed:
            log.warning(
                "the saved data position does not fit this stream (%s): the training stream "
                "starts anew at step %d, so this run sees other clips than an uninterrupted "
                "one would",
                ", ".join(changed),
                start_step,
            )
            return None
        counters = position.get("counters") or {}
        for key, value in counters.items():
            if key in self.counters and isinstance(value, int):
                self.counters[key] = value
        return items
