"""Log set-up helpers: the rate limit of lines that clients can cause at will."""

from __future__ import annotations

from service.logs import LogLimiter


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_one_line_per_key_a_minute_then_the_count_held_back() -> None:
    clock = Clock()
    limiter = LogLimiter(every_s=60.0, clock=clock)
    assert limiter.admit("signature mismatch") == 0
    assert limiter.admit("missing signature") == 0  # keys are limited on their own
    clock.now_s += 59.9
    assert [limiter.admit("signature mismatch") for _ in range(3)] == [None, None, None]
    clock.now_s += 0.1
    assert limiter.admit("signature mismatch") == 3
    assert limiter.admit("signature mismatch") is None
    clock.now_s += 60
    assert limiter.admit("signature mismatch") == 1
    assert limiter.admit("missing signature") == 0
