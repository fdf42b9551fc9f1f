"""Token bucket and refusal aggregation of the enrolment endpoint (pure; time is a number)."""

from __future__ import annotations

from securepacs.web.throttle import FailureAggregator, RateLimiter


def test_bucket_allows_a_burst_then_the_rate_per_source() -> None:
    limiter = RateLimiter(rate=1.0, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 0.0)  # another source has its own bucket
    assert limiter.retry_after("a") == 1
    assert not limiter.allow("a", 0.5) and limiter.allow("a", 1.6)


def test_bucket_table_is_bounded() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_sources=100)
    for i in range(1000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(limiter._buckets) == 100


def test_one_report_per_source_per_window() -> None:
    failures = FailureAggregator(window=60.0)
    reports = [r for t in range(300) for r in failures.note("203.0.113.9", "token not recognised",
                                                            t * 0.05)]
    reports += failures.note("198.51.100.1", "rate limited", 14.0)
    assert reports == []  # all within the first minute
    due = failures.due(61.0)
    assert [(r.source, r.count) for r in due] == [("203.0.113.9", 300)]
    assert due[0].summary().startswith("300 refused enrolment request(s) in 61 s: token not")
    assert [(r.source, r.count) for r in failures.flush(62.0)] == [("198.51.100.1", 1)]
    assert failures.flush(63.0) == []


def test_aggregator_table_is_bounded() -> None:
    failures = FailureAggregator(window=60.0, max_sources=10)
    early = [r for i in range(50) for r in failures.note(f"h{i}", "x", 0.0)]
    assert len(early) == 40 and len(failures._open) == 10
