"""Durable webhook ingest measured side by side with a bare endpoint and pywa (issue #5).

    make bench                       (installs wrk and pywa, then runs this)
    .venv/bin/python bench/ingest.py [--seconds 10] [--rounds 3] [--postgres-url URL]
    .venv/bin/python bench/ingest.py --memory 1000000     (peak RSS over that many deliveries)

Each server runs alone on a fresh store, pinned to core 0; the load is pinned to core 1:
wrk with 64 connections and distinct signed template-status bodies of ~590 bytes, then again
with ~1.1 KB bodies (rejections with a long recommendation), then an open-loop generator
(bench/openloop.py) at fixed rates, beside a probe of the disk's fsync (its longest is
reported: a stalled fsync holds a durable target's answers). Targets take turns round by
round and the median round is reported, because this machine's speed drifts between minutes.
For this service the ledger must balance (deliveries stored >= requests acknowledged), or the
run is void. Then a 1,000-change delivery and template GETs with a bearer token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from service import meta_webhooks
from service.config import Secret
from service.crypto import TokenCipher, generate_key, new_bearer_token
from service.storage import open_store

SECRET = "bench-secret"
LONG_BODIES = "~1.1 KB bodies (rejections with a long recommendation)"
FLOOR = "floor"
WABA_ID = "102290129340398"
ROOT = Path(__file__).resolve().parents[1]
PYTHON = [sys.executable, "-m", "uvicorn", "--no-access-log", "--log-level", "warning"]
REJECTION_INFO = {
    "reason": "INVALID_FORMAT",
    "recommendation": "Your template was rejected because its body does not follow our "
    "formatting guidelines: variable parameters cannot be placed at the start or the end of "
    "the body, cannot sit next to each other without text between them, and must be numbered "
    "in order without skipping a number. Rewrite the body so that each parameter is "
    "surrounded by words that explain what it will contain, keep the message under the "
    "length limit, remove any characters that are not allowed, and submit it again for review. "
    "Templates that ask for sensitive information such as full card numbers, passwords or "
    "identity documents are not allowed and will be rejected again if they are resubmitted.",
}
PAUSE_INFO = {
    "title": "FIRST_PAUSE",
    "description": "Your message template has been paused for 3 hours because of "
    "low quality ratings from customers. It will be available again afterwards.",
}


def body(index: int, changes: int = 1, long: bool = False) -> bytes:
    """A signed-size delivery like Meta's: `changes` status changes of distinct templates,
    pauses and approvals (~590 bytes), or (`long`) rejections with a long recommendation in
    their `rejection_info` (~1.1 KB)."""
    items = [_long_change(n) if long else _change(n) for n in range(index, index + changes)]
    entry = meta_webhooks.entry(WABA_ID, 1_751_000_000 + index, *items)
    return meta_webhooks.encode(meta_webhooks.delivery(entry))


def _change(n: int) -> dict[str, object]:
    return meta_webhooks.status_change(
        "PAUSED" if n % 3 else "APPROVED",
        5_000_000_000_000_000 + n % 5000,
        f"order_confirmation_{n % 5000:05d}",
        "en_US",
        category="UTILITY",
        other_info=PAUSE_INFO,
        disable_info={"disable_date": 1751864800},
    )


def _long_change(n: int) -> dict[str, object]:
    return meta_webhooks.status_change(
        "REJECTED",
        5_000_000_000_000_000 + n % 5000,
        f"order_confirmation_{n % 5000:05d}",
        "en_US",
        reason="INVALID_FORMAT",
        category="MARKETING",
        rejection_info=REJECTION_INFO,
    )


def signature(data: bytes) -> str:
    return meta_webhooks.signature(SECRET, data)


def lua_script(directory: Path, count: int, long: bool = False) -> Path:
    """wrk's script: the signed bodies are read from a file of "signature TAB body" lines
    (a script holding them as literals stops at LuaJIT's 65,536 constants: ~30,000 bodies)."""
    name = "long-bodies" if long else "bodies"
    data_path = directory / f"{name}.tsv"
    with data_path.open("w") as data:
        for index in range(count):
            raw = body(index, long=long)
            data.write(f"{signature(raw)}\t{raw.decode()}\n")
    script = f"""
local bodies, sigs = {{}}, {{}}
for line in io.lines("{data_path}") do
  local sig, body = line:match("^(%S+)\t(.*)$")
  sigs[#sigs + 1], bodies[#bodies + 1] = sig, body
end
local n, i = #bodies, 0
request = function()
  i = i % n + 1
  return wrk.format("POST", "/webhooks/meta",
    {{["Content-Type"] = "application/json", ["X-Hub-Signature-256"] = sigs[i]}}, bodies[i])
end
done = function(summary, latency, requests)
  io.write(string.format('LEDGER {{"requests": %d, "non2xx": %d, "errors": %d}}\\n',
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""
    path = directory / f"{name}.lua"
    path.write_text(script)
    return path


def get_script(directory: Path, token: str) -> Path:
    path = directory / "get.lua"
    path.write_text(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *command] if shutil.which("taskset") else command


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("server did not start")


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    command = pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
                         "--latency", url])  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        "requests": float(re.search(r"(\d+) requests in", output).group(1)),  # type: ignore[union-attr]
        "p50_ms": latency_ms(output, "50%"),
        "p99_ms": latency_ms(output, "99%"),
    }
    if "LEDGER " in output:
        ledger = json.loads(output.split("LEDGER ", 1)[1].splitlines()[0])
        result["acked"] = ledger["requests"] - ledger["non2xx"]
        result["errors"] = ledger["errors"] + ledger["non2xx"]
    return result


def latency_ms(output: str, label: str) -> float:
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


@dataclass
class Target:
    name: str
    command: list[str]
    env: dict[str, str]
    database: str | None = None  # "sqlite" or a PostgreSQL server URL: this service; "floor"
    rounds: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)
    # What runs on each fresh store of this service, before its server starts and until
    # after it stops (bench/outbox.py: the receivers, a relay and a subscription).
    beside: Callable[[str], AbstractContextManager[object]] = lambda url: nullcontext()

    @property
    def is_service(self) -> bool:
        return self.database not in (None, FLOOR)


@contextmanager
def fresh_store(target: Target, work: Path) -> Iterator[str | None]:
    """A new, migrated store with a workspace and the WABA's channel (or None)."""
    if target.database is None:
        yield None
        return
    if target.database == FLOOR:
        yield f"{tempfile.mkdtemp(dir=work)}/floor.db"
        return
    if target.database == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp(dir=work)}/bench.db"
        asyncio.run(prepare_store(url, target))
        with target.beside(url):
            yield url
        return
    name = f"template_sync_bench_{os.getpid()}"
    asyncio.run(admin(target.database, f"DROP DATABASE IF EXISTS {name}"))
    asyncio.run(admin(target.database, f"CREATE DATABASE {name}"))
    url = urlunsplit(urlsplit(target.database)._replace(path="/" + name))
    try:
        asyncio.run(prepare_store(url, target))
        with target.beside(url):
            yield url
    finally:
        asyncio.run(admin(target.database, f"DROP DATABASE IF EXISTS {name}"))


async def admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def prepare_store(url: str, target: Target) -> None:
    """A workspace and channel for the WABA, so deliveries are applied, not only stored."""
    store = await open_store(url)
    try:
        await store.migrate()
        workspace = await store.create_workspace("bench", 0)
        key = target.env["TEMPLATE_SYNC_ENCRYPTION_KEYS"]
        await store.add_channel(workspace.id, WABA_ID, TokenCipher((Secret(key),)).encrypt("t"), 0)
        token = new_bearer_token()
        await store.create_token(workspace.id, token.token_id, token.token_hash, "bench", 0)
        target.extra.update(workspace=workspace.id, token=token.token)
    finally:
        await store.close()


async def stored(url: str) -> int:
    if not url.startswith(("sqlite:", "postgres")):  # the floor's file
        with closing(sqlite3.connect(url)) as db:
            return int(db.execute("SELECT count(*) FROM deliveries").fetchone()[0])
    store = await open_store(url)
    try:
        return len(await store.list_deliveries(None, 10**9))
    finally:
        await store.close()


@contextmanager
def serving(target: Target, url: str | None) -> Iterator[tuple[int, int]]:
    """The target's server on a free port, pinned to core 0: (port, pid)."""
    port = free_port()
    name = "BENCH_FLOOR_DB" if target.database == FLOOR else "TEMPLATE_SYNC_DATABASE_URL"
    env = {**target.env, **({name: url} if url else {})}
    process = subprocess.Popen(pinned(0, [*target.command, "--port", str(port)]), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_port(port, process)
        yield port, process.pid  # taskset runs the server in its own process
    finally:
        process.terminate()
        process.wait(timeout=30)


def closed_loop(target: Target, args: argparse.Namespace, script: Path, work: Path) -> None:
    with fresh_store(target, work) as url:
        with serving(target, url) as (port, pid):
            hook = f"http://127.0.0.1:{port}/webhooks/meta"
            before = cpu_ticks(pid)
            result = run_wrk(hook, script, args.seconds, args.connections)
            result.update(cpu_per_request(before, cpu_ticks(pid), result["requests"]))
        if url is not None:
            count = asyncio.run(stored(url))
            result["stored"] = count
            # wrk sends the script's bodies round and round; a body is stored once.
            result["ledger_ok"] = float(count >= min(result["acked"], args.bodies))
    target.rounds.append(result)
    print(f"  {target.name}: {result}", file=sys.stderr)


def cpu_ticks(pid: int) -> dict[str, int]:
    """CPU time (user + system, in clock ticks) of the server's event-loop thread (its main
    one), of its other threads, and of every PostgreSQL server process on this machine."""
    ticks = {"loop": 0, "threads": 0, "postgres": 0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        ticks["loop" if int(task.name) == pid else "threads"] += _ticks(task)
    for process in Path("/proc").iterdir():
        with suppress(OSError):  # a process may end while it is read
            if process.name.isdigit() and (process / "comm").read_text().strip() == "postgres":
                ticks["postgres"] += _ticks(process)
    return ticks


def _ticks(task: Path) -> int:
    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_per_request(
    before: dict[str, int], after: dict[str, int], requests: float
) -> dict[str, float]:
    """µs of CPU per request, by what `cpu_ticks` counts."""
    us_per_tick = 1e6 / os.sysconf("SC_CLK_TCK")
    return {f"{key}_us": (after[key] - before[key]) * us_per_tick / requests for key in after}


def open_loop(target: Target, rate: float, args: argparse.Namespace, work: Path) -> None:
    with fresh_store(target, work) as url, serving(target, url) as (port, _):
        command = openloop_command(port, rate, args.seconds)
        with fsync_probe(work) as disk:
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        result = {**json.loads(output), "disk_fsync_max_ms": disk["max_ms"]}
        if url is not None:
            result["ledger_ok"] = asyncio.run(stored(url)) >= result["acked"]
    target.extra[f"open {rate:.0f}"] = result
    print(f"  {target.name} open loop {rate:.0f}/s: {result}", file=sys.stderr)


@contextmanager
def fsync_probe(directory: Path) -> Iterator[dict[str, float]]:
    """While the block runs, 4 KB written and fsynced in `directory` every 10 ms; the longest
    fsync, in ms. A durable target answers after its commit's fsync, so a stall of the disk
    shows in its latency: this tells such a stall from the target's own."""
    found = {"max_ms": 0.0}
    stop = threading.Event()

    def probe() -> None:
        path = directory / "fsync-probe"
        with path.open("wb", buffering=0) as file:
            while not stop.wait(0.01):
                file.write(bytes(4096))
                started = time.perf_counter()
                os.fsync(file.fileno())
                found["max_ms"] = max(found["max_ms"], (time.perf_counter() - started) * 1000)
        path.unlink()

    thread = threading.Thread(target=probe, name="fsync probe")
    thread.start()
    try:
        yield found
    finally:
        stop.set()
        thread.join()


def openloop_command(port: int, rate: float, seconds: float, offset: int = 0) -> list[str]:
    script = str(ROOT / "bench" / "openloop.py")
    return pinned(1, [sys.executable, script, "--port", str(port), "--rate", str(rate),
                      "--seconds", str(seconds), "--offset", str(offset)])  # fmt: skip


def service_extras(target: Target, args: argparse.Namespace, script: Path, work: Path) -> None:
    """The 1,000-change delivery and template GETs, on a store wrk has filled."""
    with fresh_store(target, work) as url, serving(target, url) as (port, pid):
        base = f"http://127.0.0.1:{port}"
        run_wrk(base + "/webhooks/meta", script, 3, args.connections)  # 5,000 templates
        target.extra["batch_ms"] = asyncio.run(batches(base, count=20))
        pages = f"{base}/api/v3/workspaces/{target.extra['workspace']}/templates"
        auth = get_script(work, str(target.extra["token"]))
        for name, path in (("get one", "/1"), ("get page of 100", "?per_page=100")):
            before = cpu_ticks(pid)
            result = run_wrk(pages + path, auth, args.seconds, args.connections)
            result.update(cpu_per_request(before, cpu_ticks(pid), result["requests"]))
            target.extra[name] = result
            print(f"  {target.name} {name}: {target.extra[name]}", file=sys.stderr)


async def batches(base: str, count: int) -> dict[str, float]:
    """Send `count` distinct deliveries of 1,000 changes one after another; latency in ms."""
    times = []
    async with aiohttp.ClientSession() as session:
        for n in range(count):
            data = body(10_000_000 + n * 1000, changes=1000)
            headers = meta_webhooks.signed_headers(SECRET, data)
            started = time.perf_counter()
            async with session.post(base + "/webhooks/meta", data=data, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": statistics.median(times), "max_ms": max(times), "bytes": len(data)}


def memory(target: Target, deliveries: int, work: Path) -> None:
    """Peak RSS of the service while `deliveries` distinct deliveries arrive (open loop)."""
    rate = 4000.0
    with fresh_store(target, work) as url, serving(target, url) as (port, pid):
        command = openloop_command(port, rate, deliveries / rate, offset=100_000_000)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        samples = []
        while process.poll() is None:
            samples.append(rss_mb(pid))
            print(f"  {len(samples) * 10} s, RSS {samples[-1]:.1f} MB", file=sys.stderr)
            time.sleep(10)
        result = json.loads(process.communicate()[0])
        peak = peak_rss_mb(pid)
        count = asyncio.run(stored(url)) if url else 0
    print(json.dumps({**result, "stored": count, "peak_rss_mb": peak, "rss_mb": samples}))


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmHWM") / 1024


def _status_kb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/{pid}/status")


def targets(args: argparse.Namespace) -> list[Target]:
    base_env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_APP_SECRET": SECRET}
    service_env = {
        **base_env,
        "TEMPLATE_SYNC_META_APP_SECRET": SECRET,
        "TEMPLATE_SYNC_ENCRYPTION_KEYS": generate_key(),
        "TEMPLATE_SYNC_POLL_ENABLED": "false",
        "TEMPLATE_SYNC_LOG_LEVEL": "WARNING",
        "TEMPLATE_SYNC_LOG_FORMAT": "json",
    }
    serve = [sys.executable, "-m", "service", "serve"]
    found = [
        Target("bare Starlette", [*PYTHON, "bench.apps:bare"], base_env),
        Target("pywa handler", [*PYTHON, "bench.apps:pywa"], {**base_env, "BENCH_TARGET": "pywa"}),
        Target(
            "floor: verify + INSERT, grouped commits",
            [*PYTHON, "bench.apps:floor"],
            base_env,
            FLOOR,
        ),
        Target("service, SQLite FULL", serve, service_env, "sqlite"),
    ]
    if args.postgres_url:
        found.append(Target("service, PostgreSQL", serve, service_env, args.postgres_url))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    # More distinct bodies than any target answers in a round: a repeated body is a replay,
    # which the service stores once and answers more cheaply, so it would flatter the service.
    parser.add_argument("--bodies", type=int, default=250_000)
    parser.add_argument("--rates", default="1000,3000", help="open-loop rates, comma-separated")
    parser.add_argument("--postgres-url", help="also measure the service on this server")
    parser.add_argument("--memory", type=int, help="only: peak RSS over this many deliveries")
    parser.add_argument(
        "--reads-only", action="store_true",
        help="only the service's template GETs and 1,000-change deliveries (about a minute)",
    )  # fmt: skip
    args = parser.parse_args()
    if not args.memory and not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})  # this process sends the batches: on the load's core
    work = Path(tempfile.mkdtemp(prefix="template-sync-bench-"))
    try:
        found = targets(args)
        if args.memory:
            memory(next(t for t in found if t.database == "sqlite"), args.memory, work)
            return
        script = lua_script(work, args.bodies)
        if args.reads_only:
            services = [target for target in found if target.is_service]
            for target in services:
                service_extras(target, args, script, work)
            reads_table(services)
            return
        long_script = lua_script(work, args.bodies, long=True)
        for label, bodies in (("~590-byte bodies", script), (LONG_BODIES, long_script)):
            for target in found:
                target.rounds = []
            for number in range(args.rounds):
                print(f"{label}: round {number + 1} of {args.rounds}", file=sys.stderr)
                for target in found:
                    closed_loop(target, args, bodies, work)
            print(f"\n## {label}: {len(body(0, long=bodies is long_script))} bytes\n")
            closed_report(found)
        for target in found:
            for rate in (float(r) for r in args.rates.split(",")):
                open_loop(target, rate, args, work)
            if target.is_service:
                service_extras(target, args, script, work)
        report(found)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def median_round(target: Target) -> dict[str, float]:
    return sorted(target.rounds, key=lambda r: r["rps"])[len(target.rounds) // 2]


def closed_report(found: list[Target]) -> None:
    """The closed-loop rounds: throughput and ratios, then the CPU each request cost."""
    bare, pywa, floor, sqlite = (median_round(t)["rps"] for t in found[:4])
    print("| target | req/s (median round) | rounds | p50 ms | p99 ms | / bare | / pywa | / floor "
          "| ledger |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|---|")
    for t in found:
        m = median_round(t)
        rounds = ", ".join(f"{r['rps']:,.0f}" for r in t.rounds)
        ledger = "-" if t.database is None else (
            "balances" if all(r["ledger_ok"] for r in t.rounds) else "VOID")  # fmt: skip
        print(f"| {t.name} | {m['rps']:,.0f} | {rounds} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | "
              f"{m['rps'] / bare:.2f} | {m['rps'] / pywa:.2f} | {m['rps'] / floor:.2f} | "
              f"{ledger} |")  # fmt: skip
    if len(found) > 4:
        print(f"\nPostgreSQL / SQLite: {median_round(found[4])['rps'] / sqlite:.2f}")
    print("\n| target (median round) | CPU per request: event loop | other threads | PostgreSQL "
          "server | all |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for t in found:
        m = median_round(t)
        parts = (m["loop_us"], m["threads_us"], m["postgres_us"])
        print(f"| {t.name} | " + " | ".join(f"{us:.1f} µs" for us in (*parts, sum(parts))) + " |")


def report(found: list[Target]) -> None:
    """The open-loop runs (~590-byte bodies) and the service's reads."""
    print("\n| target | open loop | p50 ms | p99 ms | max ms | errors | longest fsync, ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for t in found:
        for key, r in t.extra.items():
            if key.startswith("open "):
                print(f"| {t.name} | {key[5:]} req/s | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                      f"{r['max_ms']:.1f} | {r['errors']} | "
                      f"{r['disk_fsync_max_ms']:.1f} |")  # fmt: skip
    reads_table([t for t in found if t.is_service])


def reads_table(services: list[Target]) -> None:
    print("\n| target | 1,000-change delivery p50 / max ms | GET one: req/s, p99 ms, CPU "
          "(loop + threads + PostgreSQL) | GET page of 100: req/s, p99 ms, CPU |")  # fmt: skip
    print("|---|---:|---:|---:|")
    for t in services:
        b = t.extra["batch_ms"]
        gets = " | ".join(_get_cell(t.extra[name]) for name in ("get one", "get page of 100"))  # type: ignore[arg-type]
        print(f"| {t.name} | {b['p50_ms']:.0f} / {b['max_ms']:.0f} | {gets} |")  # type: ignore[index]


def _get_cell(m: dict[str, float]) -> str:
    parts = (m["loop_us"], m["threads_us"], m["postgres_us"])
    cpu = " + ".join(f"{us:.0f}" for us in parts)
    return f"{m['rps']:,.0f}, {m['p99_ms']:.1f}, {cpu} = {sum(parts):.0f} µs"


if __name__ == "__main__":
    main()
