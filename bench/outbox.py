"""Ingest with a relay and a notification subscription configured, the outbox's drain and
the relay's lag (issue #16).

    make bench                       (after bench/ingest.py)
    .venv/bin/python bench/outbox.py [--seconds 10] [--rounds 3] [--postgres-url URL]

Set up as bench/ingest.py's service case and with its pieces: the service alone on a fresh
store, pinned to core 0; the load (wrk, bench/openloop.py) pinned to core 1 with the two
receivers, small aiohttp apps in a process of their own that answer 200 and note when each
POST arrived (one for the relay, one for the subscription; `--receivers`). Both are added
with the CLI (`relay add`, `webhook add`), as an operator would.

1. Ingest, wrk closed loop: the service without and with the relay and the subscription,
   taking turns round by round; the median rounds' ratio must be >= 0.8.
2. Drain: open loop at 2,000 deliveries/s with both. The outbox's depth (rows queued, and
   events a subscription has not been handed yet) is sampled during the load; it must not
   grow (its least-squares slope over the load's last two thirds at most 5% of the
   delivery rate: 100 rows/s) and must reach 0 after the load stops, which is timed.
3. Relay lag at 500 deliveries/s: from the moment openloop.py read the service's 200 to the
   relay receiver's receipt of the same bytes (matched by `openloop.body_digest`; both
   clocks are the machine's CLOCK_MONOTONIC); p99 <= 250 ms, a delivery never relayed
   counting as infinitely late.
Bounded in time: the open-loop sender waits --drain-timeout seconds at most for answers
after its last send (those missing count as errors), and the drain as long again.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import ingest
from aiohttp import web
from openloop import body_digest

INGEST_RATIO = 0.8
DRAIN_RATE, LAG_RATE = 2000.0, 500.0
GROWTH_LIMIT = 0.05  # of the delivery rate, in rows/s: "no growing backlog"
LAG_P99_MS = 250.0
SAMPLE_S = 0.25  # depth sampling during the load
DRAIN_POLL_S = 0.1
# Rows waiting: queued (in flight included), and applied events past a subscription's cursor.
DEPTH_SQL = (
    "SELECT (SELECT COUNT(*) FROM outbox WHERE state = 'queued') + (SELECT COUNT(*) FROM "
    "template_events WHERE applied AND id > (SELECT COALESCE(MIN(cursor), 0) FROM "
    "webhook_subscriptions WHERE enabled)) AS depth"
)


async def receive(relay_port: int, hook_port: int) -> None:
    """The receivers, until terminated. GET /receipts on either port: each relayed body's
    digest and first receipt time, and how many POSTs each one had."""
    relays: dict[str, float] = {}
    counts = {"relayed": 0, "notified": 0}

    async def relay(request: web.Request) -> web.Response:
        data = await request.read()
        relays.setdefault(body_digest(data), time.perf_counter())
        counts["relayed"] += 1
        return web.Response()

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        counts["notified"] += 1
        return web.Response()

    async def receipts(request: web.Request) -> web.Response:
        return web.json_response({"relays": relays, **counts})

    for port, handler in ((relay_port, relay), (hook_port, hook)):
        app = web.Application()
        app.router.add_post("/", handler)
        app.router.add_get("/receipts", receipts)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


@dataclass(frozen=True)
class Receivers:
    relay_port: int
    hook_port: int

    def receipts(self) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.relay_port, timeout=30)
        try:
            conn.request("GET", "/receipts")
            return json.loads(conn.getresponse().read())  # type: ignore[no-any-return]
        finally:
            conn.close()


@contextmanager
def receiving() -> Iterator[Receivers]:
    """The receivers' process on free ports, pinned to core 1 with the load."""
    receivers = Receivers(ingest.free_port(), ingest.free_port())
    command = [sys.executable, __file__, "--receivers", str(receivers.relay_port),
               str(receivers.hook_port)]  # fmt: skip
    process = subprocess.Popen(ingest.pinned(1, command), stdout=subprocess.DEVNULL)
    try:
        ingest.wait_for_port(receivers.relay_port, process)
        ingest.wait_for_port(receivers.hook_port, process)
        yield receivers
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def depth_probe(url: str) -> Iterator[Callable[[], int]]:
    """A function that reads the outbox's depth from the store at `url`, on a connection of
    its own (SQLite in autocommit: it holds no snapshot between reads)."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        with closing(sqlite3.connect(path, timeout=10, isolation_level=None)) as db:
            yield lambda: int(db.execute(DEPTH_SQL).fetchone()[0])
        return
    with asyncio.Runner() as runner:
        conn = runner.run(asyncpg.connect(url))
        try:
            yield lambda: int(runner.run(conn.fetchval(DEPTH_SQL)))
        finally:
            runner.run(conn.close())


@dataclass
class Outbox:
    """The outbox's side of each fresh store of `target`: the receivers, a relay and a
    subscription to them, and a depth probe; `left` is the depth once the server stopped."""

    target: ingest.Target
    receivers: Receivers | None = None
    depth: Callable[[], int] = lambda: 0
    left: int = 0

    @contextmanager
    def __call__(self, url: str) -> Iterator[None]:
        with receiving() as receivers, depth_probe(url) as depth:
            self.receivers, self.depth = receivers, depth
            add_relay_and_subscription(self.target, url, receivers)
            yield
            self.left = depth()


def add_relay_and_subscription(target: ingest.Target, url: str, receivers: Receivers) -> None:
    """`relay add` and `webhook add` as an operator runs them; the secret `webhook add`
    prints is not kept."""
    env = {**target.env, "TEMPLATE_SYNC_DATABASE_URL": url}
    cli = [sys.executable, "-m", "service"]
    workspace = str(target.extra["workspace"])
    for command in (
        [*cli, "relay", "add", f"http://127.0.0.1:{receivers.relay_port}/", "--name", "bench"],
        [*cli, "webhook", "add", "--workspace", workspace,
         f"http://127.0.0.1:{receivers.hook_port}/"],
    ):  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{' '.join(command[3:5])} failed: {done.stderr.strip()}")


def open_phase(target: ingest.Target, outbox: Outbox, rate: float, args: argparse.Namespace,
               work: Path) -> dict[str, Any]:  # fmt: skip
    """Open-loop load at `rate` on a fresh store, the depth sampled; then the drain, the
    ledger, and each answered body's relay lag."""
    answers_path = work / "answers.json"
    with ingest.fresh_store(target, work) as url, ingest.serving(target, url) as (port, _):
        assert url is not None and outbox.receivers is not None
        bounds = ["--answers", str(answers_path), "--answer-timeout", str(args.drain_timeout)]
        command = [*ingest.openloop_command(port, rate, args.seconds), *bounds]
        sent, samples = sampled_load(command, outbox.depth)
        drain_s = drain_time(outbox.depth, args.drain_timeout)
        receipts = outbox.receivers.receipts()
        ledger_ok = asyncio.run(ingest.stored(url)) >= sent["acked"]
    answers: dict[str, float] = json.loads(answers_path.read_text())
    return {
        **sent, "samples": samples, "drain_s": drain_s, "drain_timeout": args.drain_timeout,
        "ledger_ok": ledger_ok,
        "relayed": receipts["relayed"], "notified": receipts["notified"],
        "growth_per_s": growth(samples),
        **lag_stats(answers, receipts["relays"]),
    }  # fmt: skip


def sampled_load(
    command: list[str], depth: Callable[[], int]
) -> tuple[dict[str, Any], list[tuple[float, int]]]:
    """Run the open-loop sender, sampling the depth every SAMPLE_S: its results, and the
    samples as (seconds since it started, depth)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    started = time.monotonic()
    samples: list[tuple[float, int]] = []
    while process.poll() is None:
        samples.append((time.monotonic() - started, depth()))
        if len(samples) % round(1 / SAMPLE_S) == 0:
            print(f"    {samples[-1][0]:4.1f} s: outbox depth {samples[-1][1]}", file=sys.stderr)
        time.sleep(SAMPLE_S)
    output = process.communicate()[0]
    if process.returncode != 0:
        raise RuntimeError(f"openloop.py exited with {process.returncode}")
    return json.loads(output), samples


def drain_time(depth: Callable[[], int], timeout_s: float) -> float | None:
    """Seconds from now until the depth is 0; None if it is not within `timeout_s`."""
    started = time.monotonic()
    while depth() > 0:
        if time.monotonic() - started > timeout_s:
            return None
        time.sleep(DRAIN_POLL_S)
    return time.monotonic() - started


def growth(samples: list[tuple[float, int]]) -> float:
    """Rows per second the depth grew by over the load's last two thirds (least squares):
    the first third is the sender's start and the outbox filling up to its steady level."""
    late = samples[len(samples) // 3 :]
    if len(late) < 2:
        return 0.0
    times, depths = zip(*late, strict=True)
    return statistics.linear_regression(times, depths).slope


def lag_stats(answers: dict[str, float], relays: dict[str, float]) -> dict[str, float]:
    """Relay lag in ms, each answered body's receipt minus its answer; never received: inf."""
    lags = sorted(relays.get(key, math.inf) - answered for key, answered in answers.items())
    if not lags:
        return {"matched": 0, "missing": 0}
    return {
        "matched": sum(math.isfinite(lag) for lag in lags),
        "missing": sum(not math.isfinite(lag) for lag in lags),
        "lag_p50_ms": lags[len(lags) // 2] * 1000,
        "lag_p99_ms": lags[int(len(lags) * 0.99)] * 1000,
        "lag_max_ms": lags[-1] * 1000,
    }


@dataclass
class Backend:
    """One store's pair of services: without and with the outbox configured."""

    label: str
    plain: ingest.Target
    outbox: ingest.Target
    setup: Outbox
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)


def backends(args: argparse.Namespace) -> list[Backend]:
    """ingest.py's service targets, each twice: as they are, and with the outbox."""
    found = []
    for plain in (t for t in ingest.targets(args) if t.is_service):
        plain.env = {**plain.env, "TEMPLATE_SYNC_WEBHOOKS_ALLOW_PRIVATE": "true"}
        name = f"{plain.name}, relay + subscription"
        with_outbox = ingest.Target(name, plain.command, plain.env, plain.database)
        setup = Outbox(with_outbox)
        with_outbox.beside = setup
        found.append(Backend(plain.name, plain, with_outbox, setup))
    return found


def run(found: list[Backend], args: argparse.Namespace, work: Path) -> None:
    script = ingest.lua_script(work, args.bodies)
    for number in range(args.rounds):
        print(f"closed loop, round {number + 1} of {args.rounds}", file=sys.stderr)
        for backend in found:
            ingest.closed_loop(backend.plain, args, script, work)
            ingest.closed_loop(backend.outbox, args, script, work)
            backend.outbox.rounds[-1]["left"] = backend.setup.left
            print(f"    left in the outbox: {backend.setup.left}", file=sys.stderr)
    for backend in found:
        for name, rate in (("drain", DRAIN_RATE), ("lag", LAG_RATE)):
            print(f"{backend.label}: open loop at {rate:,.0f}/s ({name})", file=sys.stderr)
            result = open_phase(backend.outbox, backend.setup, rate, args, work)
            backend.phases[name] = result
            shown = {k: v for k, v in result.items() if k != "samples"}
            print(f"  {shown}", file=sys.stderr)


def verdict(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"


def report(found: list[Backend]) -> None:
    print(f"\nmachine load (1, 5, 15 min): {load_average()}")
    ingest_table(found)
    drain_table(found)
    lag_table(found)


def ingest_table(found: list[Backend]) -> None:
    print("\n| store | ingest req/s without | rounds | with relay + subscription | rounds | "
          "p99 ms without / with | left in outbox | ratio | >= 0.8 |")  # fmt: skip
    print("|---|---:|---|---:|---|---:|---|---:|---|")
    for b in found:
        plain, outbox = ingest.median_round(b.plain), ingest.median_round(b.outbox)
        ratio = outbox["rps"] / plain["rps"]
        ledger = all(r["ledger_ok"] for r in (*b.plain.rounds, *b.outbox.rounds))
        left = ", ".join(f"{r['left']:,}" for r in b.outbox.rounds)
        print(f"| {b.label} | {plain['rps']:,.0f} | {rounds(b.plain)} | {outbox['rps']:,.0f} | "
              f"{rounds(b.outbox)} | {plain['p99_ms']:.1f} / {outbox['p99_ms']:.1f} | "
              f"{left} | {ratio:.2f} | "
              f"{verdict(ratio >= INGEST_RATIO and ledger)} |")  # fmt: skip


def drain_table(found: list[Backend]) -> None:
    print("\n| store | open loop | ingest p50 / p99 ms | errors | outbox depth during: median, "
          "max, last | growth rows/s | drain s | relayed, notified | no growth |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for b in found:
        r = b.phases["drain"]
        depths = [depth for _, depth in r["samples"]] or [0]
        drained = r["drain_s"] is not None
        ok = drained and r["growth_per_s"] <= GROWTH_LIMIT * r["rate"] and r["ledger_ok"]
        drain = f"{r['drain_s']:.1f}" if drained else f"not within {r['drain_timeout']:g}"
        print(f"| {b.label} | {r['rate']:,.0f}/s | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} | "
              f"{r['errors']} | {statistics.median(depths):,.0f}, {max(depths):,}, "
              f"{depths[-1]:,} | {r['growth_per_s']:,.0f} | {drain} | "
              f"{r['relayed']:,}, {r['notified']:,} | {verdict(ok)} |")  # fmt: skip


def lag_table(found: list[Backend]) -> None:
    print("\n| store | open loop | ingest p99 ms | relayed / answered | relay lag p50 / p99 / "
          "max ms | p99 <= 250 ms |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---|")
    for b in found:
        r = b.phases["lag"]
        lag = [r.get(f"lag_{key}_ms", math.inf) for key in ("p50", "p99", "max")]
        ok = lag[1] <= LAG_P99_MS and r["ledger_ok"]
        print(f"| {b.label} | {r['rate']:,.0f}/s | {r['p99_ms']:.1f} | {r['matched']:,} / "
              f"{r['matched'] + r['missing']:,} | {' / '.join(f'{ms:.1f}' for ms in lag)} | "
              f"{verdict(ok)} |")  # fmt: skip


def rounds(target: ingest.Target) -> str:
    return ", ".join(f"{r['rps']:,.0f}" for r in target.rounds)


def load_average() -> str:
    return ", ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--bodies", type=int, default=250_000, help="distinct bodies for wrk")
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="seconds, at most")
    parser.add_argument("--postgres-url", help="also measure the service on this server")
    parser.add_argument("--receivers", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receivers:
        asyncio.run(receive(*args.receivers))
        return
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})  # this process samples the depth: on the load's core
    print(f"machine load (1, 5, 15 min): {load_average()}", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="template-sync-bench-outbox-"))
    try:
        found = backends(args)
        run(found, args, work)
        report(found)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
