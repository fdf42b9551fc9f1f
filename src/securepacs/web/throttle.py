"""Per-source throttling of the enrolment endpoint, and aggregation of refusals.

One responsibility: two small pure cores (time is a parameter, in seconds of a monotonic
clock), in the spirit of RFC 6585 4 (429 Too Many Requests) and of PS3.15 A.5 audit
messages, which should record security alerts without flooding the trail:

- :class:`RateLimiter`, a token bucket per source address: `burst` requests at once, then
  `rate` per second. Its table is bounded (`max_sources`): when full, the least recently
  seen sources are forgotten (they start again with a full bucket, which only helps them).
- :class:`FailureAggregator`: every refusal from a source in one window (a minute by
  default) becomes ONE report (count, first and last reason) handed out when the window
  closes, instead of one audit row per attempt.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["FailureAggregator", "FailureReport", "RateLimiter"]


class RateLimiter:
    """A token bucket per source address.

    Parameters
    ----------
    rate : float
        Requests per second added to each bucket.
    burst : int
        Bucket size: requests a new source may make at once.
    max_sources : int
        Most sources remembered at once.
    """

    def __init__(self, *, rate: float = 0.5, burst: int = 20, max_sources: int = 10_000):
        if rate <= 0 or burst < 1 or max_sources < 1:
            raise ValueError("rate, burst and max_sources must be positive")
        self.rate, self.burst, self.max_sources = rate, burst, max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, source: str, now: float) -> bool:
        """Take one token from `source`'s bucket; False when it is empty."""
        tokens, last = self._buckets.pop(source, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return allowed

    def retry_after(self, source: str) -> int:
        """Whole seconds until `source` has a token again (at least 1)."""
        tokens, _ = self._buckets.get(source, (float(self.burst), 0.0))
        return max(1, int((1.0 - tokens) / self.rate + 0.999))


@dataclass(frozen=True)
class FailureReport:
    """The refusals of one source in one window."""

    source: str
    count: int
    first_reason: str
    last_reason: str
    seconds: float

    def summary(self) -> str:
        """One line for the audit event."""
        text = f"{self.count} refused enrolment request(s) in {self.seconds:.0f} s: {self.first_reason}"
        if self.count > 1 and self.last_reason != self.first_reason:
            text += f"; last: {self.last_reason}"
        return text


@dataclass
class _Window:
    start: float
    count: int
    first: str
    last: str


class FailureAggregator:
    """Collects refusals per source; one :class:`FailureReport` per source per window.

    Parameters
    ----------
    window : float
        Seconds from a source's first refusal to its report.
    max_sources : int
        Most sources tracked at once; when full, the oldest window is reported early.
    """

    def __init__(self, *, window: float = 60.0, max_sources: int = 10_000):
        self.window, self.max_sources = window, max_sources
        self._open: OrderedDict[str, _Window] = OrderedDict()

    def note(self, source: str, reason: str, now: float) -> list[FailureReport]:
        """Count one refusal; returns the reports that are due (closed windows)."""
        entry = self._open.get(source)
        if entry is None:
            self._open[source] = _Window(now, 1, reason, reason)
        else:
            entry.count += 1
            entry.last = reason
        due = self.due(now)
        while len(self._open) > self.max_sources:
            due.append(self._report(*self._open.popitem(last=False), now))
        return due

    def due(self, now: float) -> list[FailureReport]:
        """The reports of windows that have closed by `now` (and forget them)."""
        out = []
        while self._open:
            source, entry = next(iter(self._open.items()))
            if now - entry.start < self.window:
                break
            del self._open[source]
            out.append(self._report(source, entry, now))
        return out

    def flush(self, now: float) -> list[FailureReport]:
        """Every open window, reported now (at shutdown)."""
        out = [self._report(source, entry, now) for source, entry in self._open.items()]
        self._open.clear()
        return out

    @staticmethod
    def _report(source: str, entry: _Window, now: float) -> FailureReport:
        return FailureReport(source, entry.count, entry.first, entry.last,
                             min(now - entry.start, 3600.0))
