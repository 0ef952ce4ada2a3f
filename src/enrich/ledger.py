"""Ledger: which row ranges of a shard have been delivered, by which attempt files.

Pure bookkeeping, no I/O: the committer feeds it descriptors (one per worker write) and asks
whether a shard is complete. Its size grows with the number of descriptors, never with rows.

Delivery from Ray is at least once, and a retried batch may be bundled differently from the
first attempt, so a descriptor's rows can meet earlier ones in three ways:
  - disjoint from everything accepted: accepted (the common case);
  - wholly inside what was accepted: a duplicate, its files are trash;
  - crossing: it covers whole accepted descriptors and overlaps no other one partially ->
    it replaces them (they become trash); else it is held as a spare, never listed. If the
    shard cannot be completed without a spare, it stays uncommitted and the run fails naming
    it: a rerun redoes the shard. No row is ever listed twice, none is lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Ranges = list[tuple[int, int]]  # sorted, disjoint, half-open [start, end)


def to_ranges(indexes: Iterable[int]) -> Ranges:
    """Sorted disjoint half-open ranges covering `indexes` (repeats allowed)."""
    out: Ranges = []
    for i in sorted(set(indexes)):
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def size(ranges: Sequence[tuple[int, int]]) -> int:
    return sum(b - a for a, b in ranges)


def overlap(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> int:
    """Number of indexes in both range lists (both sorted and disjoint)."""
    i = j = n = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        n += max(0, hi - lo)
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return n


@dataclass
class Delivery:
    """One worker write for one (task, shard): its files and the row ranges they hold."""

    key: str  # attempt id, unique per write
    ranges: Ranges
    files: list[str] = field(default_factory=list)  # every file the attempt wrote (ok + rejects)
    payload: object = None  # what the committer needs back (file entries, counters)


@dataclass
class ShardLedger:
    """Delivered rows of one shard. `expected` is the reader's count (-1: not announced yet)."""

    expected: int = -1
    accepted: list[Delivery] = field(default_factory=list)
    spares: list[Delivery] = field(default_factory=list)
    trash: list[str] = field(default_factory=list)  # files of duplicates and replaced deliveries
    duplicates: int = 0
    rows: int = 0  # rows in accepted deliveries

    def offer(self, d: Delivery) -> str:
        """Record a delivery; returns "accepted", "duplicate", "replaced" or "spare"."""
        n = size(d.ranges)
        if n == 0:  # nothing delivered (e.g. only the end-of-shard marker): nothing to list
            self.trash += d.files
            return "duplicate" if d.files else "accepted"
        hits = [(a, overlap(a.ranges, d.ranges)) for a in self.accepted]
        hits = [(a, k) for a, k in hits if k]
        if not hits:
            self._accept(d)
            return "accepted"
        if sum(k for _, k in hits) == n:
            self.duplicates += 1
            self.trash += d.files
            return "duplicate"
        if all(k == size(a.ranges) for a, k in hits):  # d covers each one it touches whole
            for a, _ in hits:
                self.accepted.remove(a)
                self.rows -= size(a.ranges)
                self.trash += a.files
            self._accept(d)
            return "replaced"
        self.spares.append(d)
        return "spare"

    def _accept(self, d: Delivery) -> None:
        self.accepted.append(d)
        self.rows += size(d.ranges)

    @property
    def complete(self) -> bool:
        """Every announced row delivered once. Rows are 0..expected-1, accepted ones disjoint,
        so a count match (plus no index out of range) means full coverage."""
        if self.expected < 0 or self.rows != self.expected:
            return False
        return all(0 <= a.ranges[0][0] and a.ranges[-1][1] <= self.expected for a in self.accepted)

    def missing(self) -> Ranges:
        """Row ranges not delivered yet (for the error naming an incomplete shard)."""
        have = sorted(r for a in self.accepted for r in a.ranges)
        out: Ranges = []
        at = 0
        for lo, hi in have:
            if lo > at:
                out.append((at, lo))
            at = max(at, hi)
        if self.expected > at:
            out.append((at, self.expected))
        return out

    def retry_spares(self) -> None:
        """Spares that became disjoint (after a replacement) are accepted."""
        for d in list(self.spares):
            if not any(overlap(a.ranges, d.ranges) for a in self.accepted):
                self.spares.remove(d)
                self._accept(d)

    def unlisted(self) -> list[str]:
        """Files that the commit will not list: trash and spares."""
        return self.trash + [f for d in self.spares for f in d.files]
