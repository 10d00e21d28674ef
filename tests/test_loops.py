"""The background loop of passes (loops.repeat): failed passes back off and are logged once
in full, then in a line each, and the loop says when passes work again."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from service import loops
from service.loops import Signals, repeat

TICK_S = 0.01


def intervals(starts: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(starts)]


async def test_failed_passes_back_off_doubling_and_the_recovery_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    signals = Signals()
    starts: list[float] = []

    async def one_pass() -> None:
        starts.append(loop.time())
        if len(starts) <= 5:
            raise ConnectionError("store unreachable")
        if len(starts) == 7:
            signals.stop()

    with caplog.at_level(logging.INFO, logger=loops.__name__):
        await asyncio.wait_for(repeat("test", one_pass, TICK_S, signals), 5)
    gaps = intervals(starts)
    for failed, gap in enumerate(gaps[:5], start=1):  # waits of 1, 2, 4, 8 and 16 ticks
        assert gap >= TICK_S * 2 ** (failed - 1) * 0.9, gaps
    assert gaps[4] > 4 * gaps[0]
    lines = [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert lines[0][2] and "test pass failed; next try in" in lines[0][1]  # with traceback
    assert [text.split(";")[0] for _, text, full in lines[1:5] if not full] == [
        f"test pass failed {n} times in a row" for n in range(2, 6)
    ]
    assert lines[5][1] == "test passes resumed after 5 failed"
    assert len(lines) == 6


async def test_the_wait_never_exceeds_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loops, "MAX_BACKOFF_S", 0.05)
    loop = asyncio.get_running_loop()
    signals = Signals()
    starts: list[float] = []

    async def one_pass() -> None:
        starts.append(loop.time())
        if len(starts) == 12:
            signals.stop()
        raise ConnectionError("down")

    await asyncio.wait_for(repeat("capped", one_pass, TICK_S, signals), 5)
    gaps = intervals(starts)
    assert max(gaps) < 0.05 + 0.04, gaps  # capped, with room for a slow host
    assert min(gaps[6:]) >= 0.05 * 0.9, gaps  # and the cap is reached
