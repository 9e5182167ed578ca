"""Which shards of a split hold samples: empty or unreadable ones are skipped before streaming.

The training stream draws shards with replacement forever; a split whose only shard is a
0-byte file, a tar with no members, or no `key.ext` member would make it spin without ever
yielding. Checked once when a batch source opens: a few header reads per shard.
"""

from __future__ import annotations

import logging
import re
import tarfile

log = logging.getLogger(__name__)

# WebDataset's member naming: `<key>.<ext>` (the key may hold folders, the ext more dots).
_SAMPLE_MEMBER = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def _is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


def has_samples(path: str) -> bool:
    """True if the tar opens and holds at least one `key.ext` file member."""
    try:
        with tarfile.open(path) as tar:
            return any(m.isfile() and _SAMPLE_MEMBER.match(m.name) for m in tar)
    except (OSError, tarfile.TarError, EOFError):
        return False


def shards_with_samples(shards: list[tuple[str, int]], what: str) -> list[tuple[str, int]]:
    """`shards` without the local ones that hold no sample (warned); an error if none is left."""
    keep, empty = [], []
    for url, count in shards:
        (keep if not _is_local(url) or has_samples(url) else empty).append((url, count))
    names = [url for url, _ in empty]
    if names and keep:
        log.warning(
            "%s: skipping %d shard(s) with no samples (0 bytes, no members or unreadable): %s",
            what,
            len(names),
            ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""),
        )
    if not keep:
        raise ValueError(
            f"{what}: no shard holds a sample (each is 0 bytes, has no members or cannot be "
            f"read as a tar): {', '.join(names)}"
        )
    return keep
