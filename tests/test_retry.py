"""The host's one retry loop: retries only what is retryable, backs off, never waits past its deadline."""

from __future__ import annotations

import time

import pytest

from rkfarm.remote.retry import Backoff, retry


class Flaky:
    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[float] = []

    def __call__(self) -> str:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            raise self.error(f"failure {len(self.calls)}")
        return "ok"


def transient(exc: Exception) -> bool:
    return isinstance(exc, ConnectionError)


def test_retries_until_the_attempt_succeeds_with_growing_pauses() -> None:
    attempt = Flaky(failures=4)
    assert retry(attempt, until=time.monotonic() + 10, retryable=transient, backoff=Backoff(0.02, 2.0, 0.08)) == "ok"
    assert len(attempt.calls) == 5
    gaps = [b - a for a, b in zip(attempt.calls, attempt.calls[1:])]
    assert gaps[0] >= 0.02 and gaps[1] >= 0.04 and gaps[2] >= 0.08 and gaps[3] >= 0.08  # capped at max_s


def test_a_non_retryable_error_is_raised_at_once() -> None:
    attempt = Flaky(failures=3, error=ValueError)
    with pytest.raises(ValueError, match="failure 1"):
        retry(attempt, until=time.monotonic() + 10, retryable=transient)
    assert len(attempt.calls) == 1


def test_the_last_error_is_raised_at_the_deadline_and_no_pause_passes_it() -> None:
    attempt = Flaky(failures=10**6)
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        retry(attempt, until=started + 0.3, retryable=transient, backoff=Backoff(0.05, 1.0, 0.05))
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 0.3 + 0.2
    assert 3 <= len(attempt.calls) <= 8


def test_backoff_pauses() -> None:
    pauses = Backoff(0.1, 3.0, 0.5).pauses()
    assert [round(next(pauses), 6) for _ in range(4)] == [0.1, 0.3, 0.5, 0.5]
