"""Issue 16's event-stream target: N concurrent streams on one process, an event reaches all
of them with p99 <= 500 ms, RSS <= 200 MB.

    .venv/bin/python bench/sse.py [--streams 1000] [--events 20] [--postgres-url URL]

The service runs alone on a fresh store set up as bench/ingest.py does (a workspace, the
WABA's channel, a bearer token), pinned to core 0, admitting the streams
(TEMPLATE_SYNC_LIMIT_CONCURRENCY). This process, pinned to core 1, opens the streams with
aiohttp and waits until each has its answer's headers: the stream writes no body byte before
its first event or keep-alive, and its cursor is fixed before the headers leave. A refused
stream tries again about a second later (the table counts those refused at first). With every
stream open and no event it takes the service's CPU for --idle-s seconds. Then it sends
--events signed webhooks one at a time, --interval-s apart, each flipping one template's
status (one event each), and times every (stream, event) pair from the webhook's 200 to the
event's arrival on that stream. A time can be negative: a stream may pass on the committed
event before the webhook's answer reaches this process.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import ingest
import uvloop
from ingest import SECRET, WABA_ID, Target
from poller_cost import percentile

from service import meta_webhooks

TEMPLATE_ID = "5000000000009001"
FIRST_TIME = 1_751_000_000  # webhook n is at this + n (unix s): each is newer than the last
TARGET_P99_MS = 500.0
TARGET_RSS_MB = 200.0
CONNECT_S = 60.0  # for every stream to open
RETRY_S = 1.0  # a refused stream tries again after about this long, as a client library would
DRAIN_S = 10.0  # after the last webhook's 200, for the last events to arrive
SPARE_CONNECTIONS = 64  # admitted beyond the streams: the webhooks' connection, and slack
BACKENDS = (  # the service's connections to the bench's database, not this one
    "SELECT pid FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


@dataclass
class Stream:
    """One stream's event frames, each with when it arrived (perf_counter s). Kept raw:
    parsing them as they arrive would delay the streams read after this one."""

    frames: list[tuple[float, bytes]] = field(default_factory=list)
    buffer: bytes = b""
    refusals: list[str] = field(default_factory=list)  # each failed opening: status or error
    open: bool = False  # answered 200 and not ended
    ended: bool = False  # ended, or never opened before the deadline


def flip(number: int) -> bytes:
    """Webhook `number`'s body: the bench template APPROVED (even numbers; 0 creates it) or
    PAUSED, so each one after the first changes its status: exactly one event."""
    return meta_webhooks.status_delivery(
        waba_id=WABA_ID, template_id=TEMPLATE_ID, event="PAUSED" if number % 2 else "APPROVED",
        name="sse_bench", language="en_US", entry_time=FIRST_TIME + number,
    )  # fmt: skip


def flip_number(frame: bytes) -> int | None:
    """Which webhook a frame's event reports (from its event time); None if another kind."""
    fields = dict(line.split(b": ", 1) for line in frame.split(b"\n") if b": " in line)
    if fields.get(b"event") != b"template.status_changed":
        return None
    event_time = json.loads(fields[b"data"])["data"]["event_time"]
    return int(datetime.fromisoformat(event_time).timestamp()) - FIRST_TIME


async def post_flip(session: aiohttp.ClientSession, base: str, number: int) -> float:
    """Send webhook `number`; when its 200 arrived (perf_counter s)."""
    data = flip(number)
    headers = meta_webhooks.signed_headers(SECRET, data)
    async with session.post(base + "/webhooks/meta", data=data, headers=headers) as response:
        acked = time.perf_counter()
        await response.read()
    if response.status != 200:
        raise RuntimeError(f"webhook {number}: HTTP {response.status}")
    return acked


async def follow(
    session: aiohttp.ClientSession, url: str, token: str, stream: Stream, deadline: float
) -> None:
    """Open one stream, again while it is refused until `deadline` (with the current code a
    burst of streams finds PostgreSQL's pool busy: 503), then read it until it ends."""
    jitter = random.Random(id(stream))
    try:
        while not await read(session, url, token, stream):
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(RETRY_S * jitter.uniform(0.5, 1.5))
    finally:
        stream.open, stream.ended = False, True


async def read(session: aiohttp.ClientSession, url: str, token: str, stream: Stream) -> bool:
    """Read the stream until it ends, keeping its event frames; False if it was refused."""
    try:
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
            if response.status != 200:
                stream.refusals.append(f"{response.status} {response.content_type}")
                return False
            stream.open = True
            async for chunk in response.content.iter_any():
                arrived = time.perf_counter()
                *frames, stream.buffer = (stream.buffer + chunk).split(b"\n\n")
                stream.frames.extend((arrived, f) for f in frames if f.startswith(b"id:"))
    except aiohttp.ClientError as error:
        if not stream.open:
            stream.refusals.append(type(error).__name__)
            return False
    return True


async def until(label: str, count: Callable[[], int], goal: int, timeout_s: float) -> bool:
    """Wait until `count()` reaches `goal`, saying how far it got each second; False if the
    deadline passed first."""
    deadline = time.monotonic() + timeout_s
    said = 0.0
    while (done := count()) < goal and time.monotonic() < deadline:
        if time.monotonic() - said >= 1.0:
            said = time.monotonic()
            print(f"  {label}: {done:,} of {goal:,}", file=sys.stderr)
        await asyncio.sleep(0.05)
    print(f"  {label}: {done:,} of {goal:,}", file=sys.stderr)
    return done >= goal


async def idle_cpu_s(pid: int, url: str, seconds: float) -> dict[str, float]:
    """CPU seconds the service (event loop, other threads) and its PostgreSQL backends used
    in `seconds`."""
    backends = await database_backends(url)
    before = {**ingest.cpu_ticks(pid), "postgres": sum(ingest._ticks(p) for p in backends)}
    await asyncio.sleep(seconds)
    after = {**ingest.cpu_ticks(pid), "postgres": sum(ingest._ticks(p) for p in backends)}
    return {key: (after[key] - before[key]) / os.sysconf("SC_CLK_TCK") for key in after}


async def database_backends(url: str) -> list[Path]:
    """The service's PostgreSQL server processes (none on SQLite): ingest.cpu_ticks counts
    every one on the machine, which other people's tests start and end meanwhile."""
    if url.startswith("sqlite"):
        return []
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(BACKENDS)
    finally:
        await conn.close()
    return [Path(f"/proc/{row['pid']}") for row in rows]


async def send_flips(base: str, count: int, interval_s: float) -> dict[int, float]:
    """Webhooks 1..count one at a time, `interval_s` apart give or take a quarter (seeded):
    at exact multiples of a stream's poll period every webhook would land at the same point
    of its poll, always lucky or always not. When each one's 200 arrived."""
    acked: dict[int, float] = {}
    jitter = random.Random(16)
    async with aiohttp.ClientSession() as session:
        due = time.perf_counter()
        for number in range(1, count + 1):
            acked[number] = await post_flip(session, base, number)
            print(f"  webhook {number} of {count} answered 200", file=sys.stderr)
            due += interval_s * jitter.uniform(0.75, 1.25)
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
    return acked


def pair_times(
    streams: list[Stream], acked: dict[int, float]
) -> tuple[dict[int, list[float]], int]:
    """By webhook, seconds from its 200 to its event on each stream; and the frames that are
    none of those (a duplicate, another event)."""
    times: dict[int, list[float]] = {number: [] for number in acked}
    stray = 0
    for stream in streams:
        seen: set[int] = set()
        for arrived, frame in stream.frames:
            number = flip_number(frame)
            if number is None or number not in acked or number in seen:
                stray += 1
                continue
            seen.add(number)
            times[number].append(arrived - acked[number])
    return times, stray


async def measure(
    base: str, pid: int, url: str, extra: dict[str, Any], args: argparse.Namespace
) -> dict:
    """Open the streams, take the idle CPU, send the webhooks, wait for their events."""
    async with aiohttp.ClientSession() as session:
        await post_flip(session, base, 0)  # the template exists, before any stream opens
    events = f"{base}/api/v3/workspaces/{extra['workspace']}/events"
    streams = [Stream() for _ in range(args.streams)]
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_S, sock_read=None)
    connector = aiohttp.TCPConnector(limit=0)  # one connection per stream, all at once
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        deadline = time.monotonic() + CONNECT_S
        tasks = [
            asyncio.create_task(follow(session, events, extra["token"], s, deadline))
            for s in streams
        ]
        try:
            return await phases(base, pid, url, streams, args)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def phases(
    base: str, pid: int, url: str, streams: list[Stream], args: argparse.Namespace
) -> dict:
    """Measure with the streams opening: their admission, idle CPU, latencies, memory."""
    settled = lambda: sum(s.open or s.ended for s in streams)  # noqa: E731
    await until("streams open", settled, len(streams), CONNECT_S + 2 * RETRY_S)
    await asyncio.sleep(1.0)  # the streams' first polls, before the idle clock starts
    print(f"  {sum(s.open for s in streams):,} open: {args.idle_s:g} s idle", file=sys.stderr)
    idle = await idle_cpu_s(pid, url, args.idle_s)
    client_cpu = time.process_time()
    acked = await send_flips(base, args.events, args.interval_s)
    goal = len(streams) * args.events
    await until("events arrived", lambda: sum(len(s.frames) for s in streams), goal, DRAIN_S)
    client_cpu = time.process_time() - client_cpu
    times, stray = pair_times(streams, acked)
    ms = [t * 1000 for each in times.values() for t in each]
    by_event = [round(percentile(each, 99) * 1000) if each else None for each in times.values()]
    return {
        "streams": len(streams), "refused_first": sum(bool(s.refusals) for s in streams),
        "refusals": sorted({r for s in streams for r in s.refusals}),
        "open_at_end": sum(s.open for s in streams), "events": args.events,
        "pairs": len(ms), "missed": goal - len(ms), "stray": stray,
        **spread_ms(ms), "p99_ms_by_webhook": by_event,
        "vm_hwm_mb": ingest.peak_rss_mb(pid), "vm_rss_mb": ingest.rss_mb(pid),
        "idle_cpu_s": idle, "idle_s": args.idle_s, "client_cpu_s_while_events": client_cpu,
    }  # fmt: skip


def spread_ms(ms: list[float]) -> dict[str, float]:
    """Percentiles (nearest rank), max and min of `ms`; NaN for none."""
    points = {"p50_ms": 50, "p95_ms": 95, "p99_ms": 99, "max_ms": 100, "min_ms": 0}
    return {key: percentile(ms, p) if ms else float("nan") for key, p in points.items()}


def verdicts(r: dict) -> str:
    """The issue's targets, and that every stream stayed open (else the numbers are not for N)."""
    checks = {
        f"p99 <= {TARGET_P99_MS:g} ms": r["p99_ms"] <= TARGET_P99_MS,
        "missed = 0": r["missed"] == 0,
        f"VmHWM <= {TARGET_RSS_MB:g} MB": r["vm_hwm_mb"] <= TARGET_RSS_MB,
        f"{r['streams']:,} streams open to the end": r["open_at_end"] == r["streams"],
    }
    return ", ".join(f"{name}: {'PASS' if ok else 'FAIL'}" for name, ok in checks.items())


def code_digest() -> str:
    """A digest of service/'s code: the service loads it at start, so a change between the
    runs (someone editing the endpoint meanwhile) makes their numbers incomparable."""
    digest = hashlib.sha256()
    for path in sorted((ingest.ROOT / "service").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def raise_open_files(needed: int) -> None:
    """Raise this process's soft descriptor limit, which the service inherits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            sys.exit(f"RLIMIT_NOFILE's hard limit {hard} is under the {needed} needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    print(f"RLIMIT_NOFILE: {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}", file=sys.stderr)


def service_targets(args: argparse.Namespace) -> list[Target]:
    """bench/ingest.py's service targets, admitting every stream."""
    limit = str(args.streams + SPARE_CONNECTIONS)
    every = ingest.targets(argparse.Namespace(postgres_url=args.postgres_url))
    found = [t for t in every if t.is_service]
    for target in found:
        target.env = {**target.env, "TEMPLATE_SYNC_LIMIT_CONCURRENCY": limit}
    print(f"service: TEMPLATE_SYNC_LIMIT_CONCURRENCY={limit} (default 512)", file=sys.stderr)
    return found


def run_target(target: Target, args: argparse.Namespace, work: Path) -> dict:
    digest = code_digest()
    print(f"{target.name} (service code {digest})", file=sys.stderr)
    with (
        ingest.fresh_store(target, work) as url,
        ingest.serving(target, url) as (port, pid),
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        result = runner.run(measure(f"http://127.0.0.1:{port}", pid, str(url), target.extra, args))
    result["code"], result["loadavg"] = digest, os.getloadavg()  # others' load on 2 cores
    if code_digest() != digest:
        result["warning"] = "service/ changed during the run: rerun"
    print(json.dumps({"target": target.name, **result}), file=sys.stderr)
    return result


def report(results: dict[str, dict]) -> None:
    print("| target | open at end (refused first) | 200 -> event ms: p50 / p95 / p99 / max (min) "
          "| missed | VmHWM / VmRSS MB | idle CPU s: loop, threads, PostgreSQL |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        idle = r["idle_cpu_s"]
        print(f"| {name} | {r['open_at_end']:,} of {r['streams']:,} ({r['refused_first']:,}) | "
              f"{r['p50_ms']:.0f} / {r['p95_ms']:.0f} / {r['p99_ms']:.0f} / {r['max_ms']:.0f} "
              f"({r['min_ms']:.0f}) | {r['missed']:,} of {r['streams'] * r['events']:,} | "
              f"{r['vm_hwm_mb']:.0f} / {r['vm_rss_mb']:.0f} | {idle['loop']:.2f}, "
              f"{idle['threads']:.2f}, {idle['postgres']:.2f} in {r['idle_s']:g} s |")  # fmt: skip
    for name, r in results.items():
        print(f"\n{name}: {verdicts(r)}" + (f" ({r['warning']})" if "warning" in r else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20, help="webhooks, one event each")
    parser.add_argument("--interval-s", type=float, default=1.0, help="between webhooks")
    parser.add_argument("--idle-s", type=float, default=10.0, help="CPU taken, streams open")
    parser.add_argument("--postgres-url", help="also measure the service on this server")
    args = parser.parse_args()
    raise_open_files(args.streams + 1024)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})  # the client: on the other core than the service
    work = Path(tempfile.mkdtemp(prefix="template-sync-sse-"))
    try:
        results = {t.name: run_target(t, args, work) for t in service_targets(args)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results)


if __name__ == "__main__":
    main()
