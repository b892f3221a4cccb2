"""Step durations as a compact histogram: an agent actor counts its steps' durations in buckets a quarter of a
doubling wide (about 19%), hands the counts to the driver and starts again; the driver adds the counts of a role's
actors and reads percentiles from them, accurate to the bucket (within ~10%)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

SMALLEST_S = 0.001
"""The first bucket's lower edge: shorter steps count in the first bucket."""
PER_DOUBLING = 4
BUCKETS = 120
"""Buckets up to 2^(120/4) ms, about 12 days: longer steps count in the last bucket."""


def bucket_of(seconds: float) -> int:
    """The bucket a step of ``seconds`` counts in."""
    if seconds <= SMALLEST_S:
        return 0
    return min(BUCKETS - 1, int(PER_DOUBLING * math.log2(seconds / SMALLEST_S)))


def seconds_of(bucket: int) -> float:
    """A bucket's middle (geometric), in seconds: what a percentile falling in it reads as."""
    return SMALLEST_S * 2 ** ((bucket + 0.5) / PER_DOUBLING)


class StepTimes:
    """Durations counted since the last :meth:`take`."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()

    def add(self, seconds: float) -> None:
        """Count one step of ``seconds``."""
        self.counts[bucket_of(seconds)] += 1

    def take(self) -> dict[int, int]:
        """The counts since the last call (bucket -> steps), and start again."""
        counts, self.counts = dict(self.counts), Counter()
        return counts


def merged(histograms: Iterable[Mapping[int, int]]) -> Counter[int]:
    """The bucket counts of several histograms added up."""
    total: Counter[int] = Counter()
    for histogram in histograms:
        total.update(histogram)
    return total


def percentile(histogram: Mapping[int, int], share: float) -> float | None:
    """The duration under which ``share`` (0..1) of the counted steps fall, or None when none was counted."""
    steps = sum(histogram.values())
    if not steps:
        return None
    rank = share * steps
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return seconds_of(bucket)
    return seconds_of(max(histogram))
