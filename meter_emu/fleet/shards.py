"""A fleet split over processes: ``--shard I/K`` (one slice) and ``--shards K`` (a local
supervisor). The slicing is here; the supervisor is ``supervise``."""

from __future__ import annotations

from ..ports.transport import PortUrlError


def parse_shard(text: str) -> tuple[int, int]:
    """'I/K' -> (I, K) with 0 <= I < K; PortUrlError says the form otherwise."""
    index, _, total = text.partition("/")
    if index.isdigit() and total.isdigit() and int(index) < int(total):
        return int(index), int(total)
    raise PortUrlError(f"--shard {text!r}: use I/K with 0 <= I < K, e.g. 0/4")


def shard_indices(count: int, index: int, total: int) -> range:
    """The meters (0-based fleet numbers) of shard ``index`` of ``total``: contiguous blocks,
    sizes differing by at most one, so meter numbers and identities do not depend on K."""
    if total > count:
        raise PortUrlError(f"--shard {index}/{total}: more shards than the {count} meters")
    return range(index * count // total, (index + 1) * count // total)


def supervise(argv: list[str], args) -> int:
    """Run ``args.shards`` shard processes (STUB: helper 'shards')."""
    return 2
