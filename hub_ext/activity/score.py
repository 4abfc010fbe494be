"""The activity score: exponential decay over the samples kept, read in O(1).

The Docker original's formula, over every sample of a user still within the
retention window::

    weight(sample) = exp(-ln 2 / half_life_hours * age_hours)
    score          = sum(weight of active samples) / sum(weight of all samples)

(only measured samples count: time the sampler did not run is not held
against anybody). Both sums decay by the same factor as time passes, so their
ratio does not change between samples. :class:`DecayScore` therefore keeps
the two sums as they stood at the user's last sample (``at``); a new sample
decays them to its own time and adds 1 (and 1 to the active sum when
active); a sample that leaves the retention window is subtracted with its
weight at ``at``. Reading the score is one division, whatever the history.
:func:`full_score` is the formula itself, for tests and the benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

# below this the total is rounding noise left by subtractions: no samples
_EPSILON = 1e-9


def decay_rate(half_life_hours: float) -> float:
    """lambda, per second."""
    if half_life_hours <= 0:
        raise ValueError(f"half life must be > 0 hours, got {half_life_hours!r}")
    return math.log(2) / (half_life_hours * 3600.0)


@dataclass
class DecayScore:
    """The two running sums of one user, as of ``at`` (epoch seconds)."""

    active: float = 0.0
    total: float = 0.0
    at: float = 0.0
    samples: int = 0

    def add(self, when: float, active: bool, rate: float) -> None:
        """Fold in a sample taken at ``when`` (not before the previous one)."""
        if self.samples:
            factor = math.exp(-rate * max(0.0, when - self.at))
            self.active *= factor
            self.total *= factor
        self.at = max(self.at, when) if self.samples else when
        self.active += 1.0 if active else 0.0
        self.total += 1.0
        self.samples += 1

    def remove(self, when: float, active: bool, rate: float) -> None:
        """Take out a sample taken at ``when`` (pruned by retention)."""
        weight = math.exp(-rate * (self.at - when))
        self.total -= weight
        if active:
            self.active -= weight
        self.samples -= 1
        if self.samples <= 0 or self.total < _EPSILON:
            self.active = self.total = 0.0
            self.samples = 0
        else:
            self.active = min(max(self.active, 0.0), self.total)

    @property
    def ratio(self) -> float | None:
        """Weighted share of active samples, 0..1; None without samples."""
        if self.samples <= 0 or self.total < _EPSILON:
            return None
        return min(1.0, max(0.0, self.active / self.total))

    @property
    def percent(self) -> int | None:
        ratio = self.ratio
        return None if ratio is None else int(round(ratio * 100))


def full_score(samples: Iterable[tuple[float, bool]], now: float, rate: float) -> float | None:
    """The formula over (time, active) pairs, as the original computed it per page view."""
    active = total = 0.0
    for when, is_active in samples:
        weight = math.exp(-rate * (now - when))
        total += weight
        if is_active:
            active += weight
    if total <= 0:
        return None
    return active / total


def status(running: bool, last_activity: float | None, now: float, inactive_after: float) -> str:
    """The 3-state status: ``active`` (green: server running, used within
    ``inactive_after`` seconds), ``idle`` (yellow: running, not used since),
    ``offline`` (red: no server running)."""
    if not running:
        return "offline"
    if last_activity is not None and now - last_activity <= inactive_after:
        return "active"
    return "idle"
