"""Graph calls and status delay over one simulated day: the service's poller against peers.

    .venv/bin/python bench/poller_cost.py [--wabas 1000] [--templates 250] [--new-per-day 50]
        [--lost 0,0.05,1.0] [--seed 1] [--database-url sqlite:///... | postgresql://...]
        [--tick-s 30] [--grace-s 1800] [--interval-s 1800] [--jobs 2]
        [--strategies S,B1,B2,S-up,B2-up,B2-up-pending]

About 4 minutes on 2 cores at the defaults, most of it B2-up's 196,000 loopback requests
(`--strategies S,B1,B2` alone: about 1.5); `--wabas 100` takes under a minute.

W WABAs (a workspace and channel each) hold T templates, at Meta (the simulator, over
loopback HTTP) and in the store. During one day N templates are created PENDING at random
times; Meta decides each 5-30 minutes later and sends a status webhook, lost with the given
probability. The same events (same seed) are replayed against three strategies:

  S   this service: webhooks, plus the real Poller.run_once() every POLL_TICK_S;
  B1  a peer listing every WABA's templates every 3 hours (no webhooks);
  B2  the seed's advice, client-side: every 30 minutes, list the templates of every WABA
      whose workspace has a pending template (no webhooks).

The upstream case (design section 14, issue 21) replays the same day with a LancePilot-like
platform on loopback (bench/upstream_platform.py) that answers the seed's API from Meta's
state; its requests (sync, list pages) are counted instead of Graph calls:

  S-up           this service in upstream mode: webhooks-only channels, the platform as
                 every workspace's upstream, webhooks as in S, the real Poller.run_once();
  B2-up          the seed's schedule literally: every 30 minutes, for every workspace, POST
                 sync then GET every page of the list (no webhooks);
  B2-up-pending  the same for workspaces with a template pending here only (B2's reading;
                 the seed's example checks for a pending template first).

Each run starts from a copy of the seeded store and a fresh simulator. Time is virtual: the
clock jumps from event to event and tick to tick, nothing sleeps, so a sync takes no virtual
time (its wall time is reported). Graph calls are counted from the simulator's call log;
"per day" are those made in [0 h, 24 h). After the day a run goes on until every decision
has reached the store (or a cap), then every template's status here is compared with Meta's.
B1 and B2 apply the listed templates that are pending here: in this simulation only those
change at Meta, and applying all 250k rows every round would cost store time, not calls.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import aiohttp
from upstream_mode import PlatformLog, SeedSchedule, connector, use_upstream
from upstream_platform import Account, Platform, serving

from service import meta_webhooks
from service.config import Secret, Settings
from service.crypto import TokenCipher, generate_key
from service.events import STATUS_FIELD, Change
from service.graph import GraphClient, GraphTemplate
from service.metrics import Metrics
from service.poller import Poller
from service.simulator import CallRecord, Simulator, base_url, make_templates, serve
from service.storage import NewTemplate, Store, TemplateFilter, open_store
from service.sync import Syncer

DAY_S = 86_400.0
EPOCH_S = 1_780_000_000  # virtual midnight (unix seconds)
REVIEW_S = (300.0, 1800.0)  # Meta decides 5-30 minutes after creation
B1_PERIOD_S = 3 * 3600.0
B2_PERIOD_S = 1800.0
APPROVE_SHARE = 0.8  # the rest is REJECTED
REJECT_REASON = "INVALID_FORMAT"
APP_SECRET = "bench-app-secret"
FIRST_WABA = 102_290_129_340_000
NEW_ID_BASE = 9_500_000_000_000_000  # above make_templates' id range
PAGE_LIMIT = 100
DEFAULTS = Settings()


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Clock:
    """Virtual wall time: EPOCH_S + t_s, moved by hand."""

    def __init__(self) -> None:
        self.t_s = 0.0

    def __call__(self) -> float:
        return EPOCH_S + self.t_s

    @property
    def now_ms(self) -> int:
        return int(self() * 1000)


@dataclass(frozen=True)
class Tenant:
    workspace_id: str
    waba_id: str
    token: str


@dataclass(frozen=True)
class Submission:
    """One template created during the day, and Meta's verdict on it."""

    index: int
    created_s: float
    tenant: int
    review_s: float
    verdict: str
    loss_draw: float  # the webhook is lost when this is below the lost share

    @property
    def decided_s(self) -> float:
        return self.created_s + self.review_s

    @property
    def provider_id(self) -> str:
        return str(NEW_ID_BASE + self.index)

    @property
    def reason(self) -> str | None:
        return REJECT_REASON if self.verdict == "REJECTED" else None

    def lost(self, share: float) -> bool:
        return self.loss_draw < share


def plan_day(new_per_day: int, wabas: int, seed: int) -> list[Submission]:
    """The day's events; lost webhooks at share p are a subset of those at any q > p."""
    rng = random.Random(seed)
    plan = [
        Submission(
            i,
            rng.uniform(0, DAY_S),
            rng.randrange(wabas),
            rng.uniform(*REVIEW_S),
            "APPROVED" if rng.random() < APPROVE_SHARE else "REJECTED",
            rng.random(),
        )
        for i in range(new_per_day)
    ]
    return sorted(plan, key=lambda s: s.created_s)


def waba_ids(count: int) -> list[str]:
    return [str(FIRST_WABA + i) for i in range(count)]


async def seed_store(store: Store, wabas: int, templates: int, cipher: TokenCipher) -> list[Tenant]:
    """W workspaces with a channel each and T templates imported (apply_remote, create)."""
    tenants, at_ms, started = [], (EPOCH_S - 86_400) * 1000, time.perf_counter()
    for i, waba_id in enumerate(waba_ids(wabas)):
        workspace = await store.create_workspace(f"bench {i}", at_ms)
        token = f"bench-meta-token-{i}"
        await store.add_channel(workspace.id, waba_id, cipher.encrypt(token), at_ms)
        remote = [GraphTemplate.from_graph(t) for t in make_templates(waba_id, templates)]
        await store.apply_remote(workspace.id, waba_id, remote, at_ms, create=True)
        tenants.append(Tenant(workspace.id, waba_id, token))
        if (i + 1) % max(1, wabas // 20) == 0 or i + 1 == wabas:
            elapsed = time.perf_counter() - started
            say(f"  seeded {i + 1}/{wabas} WABAs ({(i + 1) * templates} rows, {elapsed:.0f} s)")
    return tenants


@dataclass
class Seed:
    """Fresh seeded stores: SQLite is seeded once and copied per run; PostgreSQL is seeded
    per run in a schema of its own (dropped afterwards). Picklable, for worker processes."""

    url: str
    wabas: int
    templates: int
    key: str = field(repr=False)  # encrypts the channels' Meta tokens
    base: Path | None = None
    tenants: list[Tenant] = field(default_factory=list)

    @property
    def cipher(self) -> TokenCipher:
        return TokenCipher((Secret(self.key),))

    async def prepare(self) -> None:
        if not self.url.startswith("sqlite:///"):
            return
        base = Path(self.url.removeprefix("sqlite:///"))
        if await asyncio.to_thread(base.exists):
            raise SystemExit(f"{base} exists; give a new SQLite path")
        store = await open_store(self.url)
        await store.migrate()
        say(f"seeding {base} ...")
        self.tenants = await seed_store(store, self.wabas, self.templates, self.cipher)
        await store.close()
        self.base = base

    @asynccontextmanager
    async def fresh(self, name: str) -> AsyncIterator[tuple[Store, list[Tenant]]]:
        if self.base is not None:
            async with self._sqlite_copy(self.base, name) as store:
                yield store, self.tenants
            return
        async with _postgres_schema(self.url) as url:
            store = await open_store(url)
            try:
                await store.migrate()
                say(f"  seeding a PostgreSQL schema for {name} ...")
                yield store, await seed_store(store, self.wabas, self.templates, self.cipher)
            finally:
                await store.close()

    @asynccontextmanager
    async def _sqlite_copy(self, base: Path, name: str) -> AsyncIterator[Store]:
        copy = base.with_name(f"{base.stem}-{name}{base.suffix}")
        await asyncio.to_thread(_copy_database, base, copy)
        store = await open_store(f"sqlite:///{copy}")
        try:
            yield store
        finally:
            await store.close()
            _remove_database(copy)


SQLITE_SUFFIXES = ("", "-wal", "-shm")


def _copy_database(base: Path, copy: Path) -> None:
    for suffix in SQLITE_SUFFIXES:
        if Path(f"{base}{suffix}").exists():
            shutil.copyfile(f"{base}{suffix}", f"{copy}{suffix}")


def _remove_database(path: Path) -> None:
    for suffix in SQLITE_SUFFIXES:
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@asynccontextmanager
async def _postgres_schema(url: str) -> AsyncIterator[str]:
    import asyncpg  # only for PostgreSQL runs

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        yield f"{url}{'&' if '?' in url else '?'}search_path={schema}"
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


class CallLog:
    """Counts the simulator's Graph calls; the log keeps only its newest 10,000 calls, so
    it is drained often (after every WABA of a full sync, after every tick)."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self._last: CallRecord | None = None
        self.total = 0
        self.in_day = 0

    def drain(self) -> None:
        calls = self._sim.calls
        start = 0
        if self._last is not None:
            start = -1
            for i in range(len(calls) - 1, -1, -1):
                if calls[i] is self._last:
                    start = i + 1
                    break
            if start < 0:
                raise RuntimeError("the simulator's call log overflowed between two drains")
        new = calls[start:]
        if new:
            self._last = new[-1]
        self.total += len(new)
        self.in_day += sum(1 for call in new if call.at - EPOCH_S < DAY_S)


class Calls(Protocol):
    """Calls counted for a run: Graph's (CallLog), or the platform's (PlatformLog)."""

    @property
    def total(self) -> int: ...
    @property
    def in_day(self) -> int: ...
    def drain(self) -> None: ...


class Strategy(Protocol):
    period_s: float
    webhooks: bool

    async def tick(self) -> int:
        """One pass; returns the Graph calls the client side counted."""
        ...


@dataclass
class Env:
    store: Store
    tenants: list[Tenant]
    session: aiohttp.ClientSession
    graph_url: str
    clock: Clock
    log: Calls
    cipher: TokenCipher
    args: argparse.Namespace
    upstream_url: str = ""  # the platform's, in the upstream case


class ServicePoller:
    """S: the service's Syncer and Poller on the virtual clock."""

    webhooks = True

    def __init__(self, env: Env) -> None:
        args, metrics = env.args, Metrics()
        syncer = Syncer(
            env.store, env.session, env.graph_url, APP_SECRET, env.cipher, metrics,
            clock=env.clock,
        )  # fmt: skip
        self.period_s = args.tick_s
        jitter = random.Random(args.seed).random
        self._poller = Poller(
            env.store, syncer, tick_s=args.tick_s, grace_s=args.grace_s,
            interval_s=args.interval_s, owner="bench", clock=env.clock, metrics=metrics,
            jitter=jitter,
        )  # fmt: skip
        self.polls = self.repaired = 0

    async def tick(self) -> int:
        report = await self._poller.run_once()
        self.polls += report.claimed
        self.repaired += report.repaired
        return report.graph_calls


class ListingSync:
    """B1 (every WABA, every 3 h) and B2 (WABAs with a pending template, every 30 min)."""

    webhooks = False

    def __init__(self, env: Env, *, period_s: float, only_pending: bool) -> None:
        self.period_s = period_s
        self._env = env
        self._only_pending = only_pending
        self._graph = GraphClient(env.session, env.graph_url, APP_SECRET, page_limit=PAGE_LIMIT)

    async def tick(self) -> int:
        env, before = self._env, self._graph.calls
        for tenant in env.tenants:
            pending = await env.store.pending_templates(tenant.workspace_id)
            if self._only_pending and not pending:
                continue
            listed = await self._graph.list_templates(tenant.waba_id, tenant.token)
            env.log.drain()
            wanted = {p.provider_id for p in pending}
            if wanted:
                chosen = [t for t in listed if t.id in wanted]
                await env.store.apply_remote(
                    tenant.workspace_id, tenant.waba_id, chosen, env.clock.now_ms, create=False
                )
        return self._graph.calls - before


def seed_schedule(env: Env, *, only_pending: bool) -> SeedSchedule:
    """B2-up (every workspace) or B2-up-pending, through the platform."""
    connect = connector(env.session, env.upstream_url)
    return SeedSchedule(
        env.store, env.tenants, connect, lambda: env.clock.now_ms, period_s=B2_PERIOD_S,
        only_pending=only_pending,
    )  # fmt: skip


STRATEGIES: dict[str, Callable[[Env], Strategy]] = {
    "S": ServicePoller,
    "B1": lambda env: ListingSync(env, period_s=B1_PERIOD_S, only_pending=False),
    "B2": lambda env: ListingSync(env, period_s=B2_PERIOD_S, only_pending=True),
    "S-up": ServicePoller,  # the same service; run_strategy puts the store in upstream mode
    "B2-up": lambda env: seed_schedule(env, only_pending=False),
    "B2-up-pending": lambda env: seed_schedule(env, only_pending=True),
}
SLOW = {"B2-up": 2, "B1": 1}  # started first, so the parallel runs end together
WEBHOOKS = frozenset({"S", "S-up"})  # the others poll only: the lost share changes nothing
UPSTREAM = frozenset({"S-up", "B2-up", "B2-up-pending"})  # calls counted at the platform


@dataclass
class RunResult:
    name: str
    webhooks: bool
    calls_day: int = 0
    calls_total: int = 0
    client_calls: int = 0
    resolved_s: dict[int, float] = field(default_factory=dict)  # index -> when correct here
    status_mismatches: int = 0
    reason_mismatches: int = 0
    missing: int = 0
    sync_wall_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    polls: int = 0  # S only: workspaces the poller synced, and templates those syncs repaired
    repaired: int = 0
    graph_calls: int = 0  # upstream case: Graph calls made all the same (should be none)
    by_kind: dict[str, int] = field(default_factory=dict)  # upstream case: requests per day


class Day:
    """Replays the plan against one strategy on the virtual clock."""

    def __init__(self, env: Env, strategy: Strategy, plan: list[Submission], share: float):
        self._env, self._strategy, self._plan, self._share = env, strategy, plan, share
        self._local: dict[int, int] = {}  # submission index -> template id here
        self._outstanding: dict[int, Submission] = {}  # decided at Meta, not yet here
        self._sim: Simulator | None = None

    async def run(self, sim: Simulator, result: RunResult) -> None:
        self._sim = sim
        events = sorted(
            [(s.created_s, 0, s) for s in self._plan] + [(s.decided_s, 1, s) for s in self._plan],
            key=lambda e: (e[0], e[1], e[2].index),
        )
        period, cap_s = self._strategy.period_s, DAY_S + REVIEW_S[1] + B1_PERIOD_S + 3600
        done, tick_s = 0, 0.0
        while True:
            while done < len(events) and events[done][0] <= tick_s:
                at_s, kind, submission = events[done]
                self._env.clock.t_s = at_s
                await (self._create if kind == 0 else self._decide)(submission, result)
                done += 1
            await self._tick(tick_s, result)
            finished = done == len(events) and not self._outstanding and tick_s >= DAY_S
            if finished or tick_s >= cap_s:
                return
            tick_s += period

    async def _tick(self, tick_s: float, result: RunResult) -> None:
        self._env.clock.t_s = tick_s
        started, before = time.perf_counter(), self._env.log.total
        result.client_calls += await self._strategy.tick()
        self._env.log.drain()
        if self._env.log.total > before:
            result.sync_wall_s.append(time.perf_counter() - started)
        for submission in list(self._outstanding.values()):
            await self._check(submission, tick_s, result)

    async def _create(self, submission: Submission, result: RunResult) -> None:
        assert self._sim is not None
        tenant = self._env.tenants[submission.tenant]
        self._sim.add_templates(tenant.waba_id, [_meta_template(submission)])
        new = NewTemplate(
            tenant.workspace_id, tenant.waba_id, submission.provider_id,
            f"day_{submission.index:05d}", "en_US", "UTILITY", "PENDING",
        )  # fmt: skip
        created = await self._env.store.add_template(new, self._env.clock.now_ms)
        self._local[submission.index] = created.id

    async def _decide(self, submission: Submission, result: RunResult) -> None:
        assert self._sim is not None
        self._sim.set_status(
            submission.provider_id, submission.verdict, rejected_reason=submission.reason
        )
        self._outstanding[submission.index] = submission
        if self._strategy.webhooks and not submission.lost(self._share):
            tenant = self._env.tenants[submission.tenant]
            body, change = _webhook(tenant.waba_id, submission)
            await self._env.store.record_delivery(body, self._env.clock.now_ms, [change], None)
            await self._check(submission, submission.decided_s, result)

    async def _check(self, submission: Submission, at_s: float, result: RunResult) -> None:
        tenant = self._env.tenants[submission.tenant]
        local = await self._env.store.get_template(
            tenant.workspace_id, self._local[submission.index]
        )
        if local is not None and local.status == submission.verdict:
            result.resolved_s[submission.index] = at_s
            del self._outstanding[submission.index]


def _meta_template(submission: Submission) -> dict[str, str]:
    return {
        "id": submission.provider_id,
        "name": f"day_{submission.index:05d}",
        "language": "en_US",
        "status": "PENDING",
        "category": "UTILITY",
        "quality_score": "UNKNOWN",
    }


def _webhook(waba_id: str, submission: Submission) -> tuple[bytes, Change]:
    """Meta's status webhook for the verdict: the signed body's bytes and its one change."""
    entry_time, name = EPOCH_S + int(submission.decided_s), f"day_{submission.index:05d}"
    body = meta_webhooks.status_delivery(
        waba_id=waba_id, template_id=submission.provider_id, event=submission.verdict,
        name=name, language="en_US", entry_time=entry_time, reason=submission.reason or "NONE",
    )  # fmt: skip
    change = Change(
        waba_id, STATUS_FIELD, submission.verdict, submission.provider_id, name, "en_US", None,
        submission.reason, entry_time,
    )  # fmt: skip
    return body, change


async def verify(
    store: Store, sim: Simulator, tenants: Sequence[Tenant], result: RunResult
) -> None:
    """Compare every template here with Meta's (status, rejection reason, presence)."""
    for tenant in tenants:
        meta = {str(t["id"]): t for t in sim.templates(tenant.waba_id)}
        local, _ = await store.list_templates(
            tenant.workspace_id, TemplateFilter(), 0, len(meta) + 1000
        )
        here = {t.provider_id: t for t in local}
        result.missing += len(meta.keys() - here.keys())
        for provider_id, template in here.items():
            remote = meta.get(provider_id)
            if remote is None:
                continue
            reason = None if remote["rejected_reason"] == "NONE" else remote["rejected_reason"]
            result.status_mismatches += template.status != remote["status"]
            result.reason_mismatches += template.rejected_reason != reason


def fresh_simulator(tenants: Sequence[Tenant], templates: int, clock: Clock) -> Simulator:
    sim = Simulator(app_secret=APP_SECRET, clock=clock)
    for tenant in tenants:
        sim.add_waba(tenant.waba_id, tenant.token)
        sim.add_templates(tenant.waba_id, make_templates(tenant.waba_id, templates))
    return sim


@dataclass(frozen=True)
class Job:
    name: str
    share: float
    plan: list[Submission]
    seed: Seed
    args: argparse.Namespace


def run_job(job: Job) -> RunResult:
    """One strategy's day, in a worker process of its own."""
    return asyncio.run(run_strategy(job))


async def run_strategy(job: Job) -> RunResult:
    started, name, args = time.perf_counter(), job.name, job.args
    async with job.seed.fresh(f"{name}-{job.share:g}") as (store, tenants):
        clock = Clock()
        sim = fresh_simulator(tenants, args.templates, clock)
        runner = await serve(sim)
        try:
            async with aiohttp.ClientSession() as session:
                env = Env(
                    store, tenants, session, base_url(runner), clock, CallLog(sim),
                    job.seed.cipher, args,
                )  # fmt: skip
                day = upstream_day if name in UPSTREAM else graph_day
                result = await day(job, env, sim)
        finally:
            await runner.cleanup()
    result.wall_s = time.perf_counter() - started
    say(
        f"  {name}" + (f" (lost {job.share:g})" if name in WEBHOOKS else "")
        + f": {result.calls_day} calls/day, {result.wall_s:.0f} s wall, "
        f"{result.status_mismatches} mismatches at the end"
    )  # fmt: skip
    return result


async def graph_day(job: Job, env: Env, sim: Simulator) -> RunResult:
    """The day of one strategy, its calls counted by `env.log`; then the comparison."""
    strategy = STRATEGIES[job.name](env)
    result = RunResult(job.name, strategy.webhooks)
    await Day(env, strategy, job.plan, job.share).run(sim, result)
    result.calls_day, result.calls_total = env.log.in_day, env.log.total
    if isinstance(strategy, ServicePoller):
        result.polls, result.repaired = strategy.polls, strategy.repaired
    await verify(env.store, sim, env.tenants, result)
    return result


async def upstream_day(job: Job, env: Env, sim: Simulator) -> RunResult:
    """graph_day with the platform in front of Meta, its requests counted instead; S-up's
    store first put in upstream mode. Graph calls are still counted: there should be none."""
    platform = Platform(sim, env.clock)
    platform.add([Account.for_waba(tenant.waba_id) for tenant in env.tenants])
    async with serving(platform) as url:
        log = PlatformLog(platform, EPOCH_S + DAY_S)
        if job.name == "S-up":
            await use_upstream(env.store, env.tenants, url, env.cipher, env.clock.now_ms)
        result = await graph_day(job, replace(env, log=log, upstream_url=url), sim)
    env.log.drain()
    result.graph_calls, result.by_kind = env.log.total, log.by_kind()
    return result


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def delays(result: RunResult, plan: Sequence[Submission], share: float, lost: bool) -> str:
    """p50 / p99 / max of decision -> correct status here, for one side of the lost split."""
    chosen = [s for s in plan if s.lost(share) == lost]
    values = [
        result.resolved_s[s.index] - s.decided_s for s in chosen if s.index in result.resolved_s
    ]
    if not values:
        return "-"
    unresolved = len(chosen) - len(values)
    text = " / ".join(f"{percentile(values, p):,.0f}" for p in (50, 99, 100))
    return f"{text} (n={len(chosen)}" + (f", {unresolved} never)" if unresolved else ")")


def stale_at_midnight(result: RunResult, plan: Sequence[Submission]) -> int:
    """Templates decided at Meta before 24:00 whose status here was still old at 24:00."""
    return sum(
        1 for s in plan if s.decided_s < DAY_S and result.resolved_s.get(s.index, math.inf) > DAY_S
    )


Runs = dict[tuple[str, float], RunResult]
LABELS = {
    "S-up": "S-up: upstream mode",
    "B2-up": "B2-up: seed schedule, every workspace",
    "B2-up-pending": "B2-up-pending: seed schedule, workspaces pending here",
}


def run_key(name: str, share: float) -> tuple[str, float]:
    """Runs by strategy and lost share; a polling-only strategy runs once (share -1)."""
    return (name, share if name in WEBHOOKS else -1.0)


def table(
    runs: Runs, plan: Sequence[Submission], shares: Sequence[float], args: argparse.Namespace
) -> list[str]:
    lines = [
        "| lost webhooks | strategy | webhooks | calls to | calls/day | per workspace per day "
        "| delay, webhook delivered (s) p50 / p99 / max | delay, webhook lost (s) p50 / p99 "
        "/ max | stale at 24:00 | mismatches after the day |",
        "|---:|---|---|---|---:|---:|---|---|---:|---:|",
    ]
    for share in shares:
        for name in args.strategies:
            run = runs[run_key(name, share)]
            lines.append(
                f"| {share:.0%} | {LABELS.get(name, name)} "
                f"| {'yes' if run.webhooks else 'no (polling only)'} "
                f"| {'upstream' if name in UPSTREAM else 'Graph'} | {run.calls_day:,} "
                f"| {run.calls_day / args.wabas:,.2f} | {delays(run, plan, share, False)} "
                f"| {delays(run, plan, share, True)} | {stale_at_midnight(run, plan)} "
                f"| {run.status_mismatches} |"
            )
    return lines


def verdicts(
    runs: Runs, plan: Sequence[Submission], shares: Sequence[float], args: argparse.Namespace
) -> list[str]:
    lines = []
    for share in shares:
        lines += peers_verdict(runs, share) + upstream_verdict(runs, share)
        for name in ("S", "S-up"):
            if (name, share) in runs:
                lines.append(delay_bound(runs[(name, share)], plan, share, args))
    lines.append(
        f"  (a poll comes POLL_GRACE_S after creation; when Meta has not decided by then, the "
        f"next waits POLL_INTERVAL_S: delay up to ~{args.interval_s + args.tick_s:,.0f} s)"
    )
    return [line for line in lines if line]


def peers_verdict(runs: Runs, share: float) -> list[str]:
    """Issue 3's targets: B1 spends >= 100x and B2 >= 10x S's Graph calls."""
    keys = [("S", share), ("B1", -1.0), ("B2", -1.0)]
    if not all(key in runs for key in keys):
        return []
    s, b1, b2 = (runs[key].calls_day for key in keys)
    calls = max(s, 1)
    return [
        f"- lost {share:.0%}: B1/S = {b1 / calls:,.1f}x (target >= 100x: "
        f"{_mark(b1 >= 100 * s)}), B2/S = {b2 / calls:,.1f}x (target >= 10x: {_mark(b2 >= 10 * s)})"
    ]


SEED_SCHEDULES = (("B2-up", "Y", "seed schedule"), ("B2-up-pending", "Z", "pending only"))


def upstream_verdict(runs: Runs, share: float) -> list[str]:
    """Issue 21: the platform's requests, S-up (X) against the seed's schedule (Y: B2-up,
    every workspace; Z: B2-up-pending, workspaces with a template pending here)."""
    if ("S-up", share) not in runs:
        return []
    x = runs[("S-up", share)].calls_day
    parts = [f"- lost {share:.0%}: upstream calls per day: S-up {x:,}"]
    for name, letter, what in SEED_SCHEDULES:
        if (name, -1.0) in runs:
            y = runs[(name, -1.0)].calls_day
            ratio = f"{y / x:,.1f}" if x else "n/a, S-up made none"
            parts.append(f"{what} {y:,} ({letter}/X = {ratio})")
    return [" vs ".join(parts)]


def delay_bound(
    run: RunResult, plan: Sequence[Submission], share: float, args: argparse.Namespace
) -> str:
    """Whether the p99 delay of lost webhooks is within the poller's bound."""
    lost = [run.resolved_s[x.index] - x.decided_s for x in plan if x.lost(share)
            and x.index in run.resolved_s]  # fmt: skip
    if not lost:
        return ""
    sync_s = max(run.sync_wall_s, default=0.0)
    bound, p99 = args.grace_s + 2 * args.tick_s + sync_s, percentile(lost, 99)
    return (
        f"  {run.name} p99 for lost webhooks {p99:,.0f} s <= POLL_GRACE_S + 2 x POLL_TICK_S + "
        f"sync time ({args.grace_s:g} + 2 x {args.tick_s:g} + {sync_s:.2f} = {bound:,.0f} s): "
        f"{_mark(p99 <= bound)}"
    )


def _mark(ok: bool) -> str:
    return "met" if ok else "NOT met"


def details(runs: Runs) -> list[str]:
    lines = []
    for (name, share), run in runs.items():
        label = f"{name}" + (f" lost {share:.0%}" if share >= 0 else "")
        wall = max(run.sync_wall_s, default=0.0)
        where = "platform" if name in UPSTREAM else "simulator"
        lines.append(
            f"- {label}: {run.calls_total:,} calls until settled ({where} log), "
            f"{run.client_calls:,} counted by the client; slowest pass with calls "
            f"{wall:.2f} s wall; rejection reasons differing {run.reason_mismatches}, "
            f"templates missing here {run.missing}; run {run.wall_s:.0f} s"
        )
        if run.polls:
            lines.append(
                f"  {run.polls} polls, {run.repaired} templates repaired (webhook lost); "
                "the other polls found templates still pending at Meta"
            )
        if name in UPSTREAM:
            kinds = ", ".join(f"{kind}: {count:,}" for kind, count in run.by_kind.items())
            graph = f"Graph calls from this side: {run.graph_calls}"
            lines.append(f"  platform requests in the day: {kinds or 'none'}; {graph}")
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wabas", type=int, default=1000)
    parser.add_argument("--templates", type=int, default=250)
    parser.add_argument("--new-per-day", type=int, default=50)
    parser.add_argument("--lost", default="0,0.05,1.0")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    parser.add_argument("--tick-s", type=float, default=DEFAULTS.poll_tick_s)
    parser.add_argument("--grace-s", type=float, default=DEFAULTS.poll_grace_s)
    parser.add_argument("--interval-s", type=float, default=DEFAULTS.poll_interval_s)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel processes")
    parser.add_argument(
        "--strategies", default=",".join(STRATEGIES),
        help="comma list, default all: " + ", ".join(STRATEGIES),
    )  # fmt: skip
    args = parser.parse_args()
    args.shares = [float(part) for part in args.lost.split(",")]
    wanted = {part.strip() for part in args.strategies.split(",") if part.strip()}
    if not wanted or wanted - STRATEGIES.keys():
        parser.error(f"--strategies: choose among {', '.join(STRATEGIES)}")
    args.strategies = [name for name in STRATEGIES if name in wanted]
    return args


def bench(args: argparse.Namespace, database_url: str) -> None:
    started = time.perf_counter()
    seed = Seed(database_url, args.wabas, args.templates, generate_key())
    asyncio.run(seed.prepare())
    plan = plan_day(args.new_per_day, args.wabas, args.seed)
    keys = list(dict.fromkeys(run_key(n, s) for n in args.strategies for s in args.shares))
    longest_first = sorted(keys, key=lambda key: -SLOW.get(key[0], 0))
    jobs = [Job(name, max(share, 0.0), plan, seed, args) for name, share in longest_first]
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        done = dict(zip(longest_first, pool.map(run_job, jobs), strict=True))
    runs = {key: done[key] for key in keys}
    print(headline(args) + "\n")
    print("\n".join(table(runs, plan, args.shares, args)))
    print("\n" + "\n".join(verdicts(runs, plan, args.shares, args)))
    print("\n" + "\n".join(details(runs)))
    print(f"\nTotal wall time {time.perf_counter() - started:.0f} s.")


def headline(args: argparse.Namespace) -> str:
    about = {
        "S": f"S: tick {args.tick_s:g} s, grace {args.grace_s:g} s, interval {args.interval_s:g} s",
        "B1": "B1: full list of every WABA every 3 h",
        "B2": "B2: full list of each WABA with a pending template every 30 min",
        "S-up": "S-up: S in upstream mode, calling the platform instead of Graph",
        "B2-up": "B2-up: POST sync + GET every list page, every workspace, every 30 min",
        "B2-up-pending": "B2-up-pending: the same for workspaces with a template pending here",
    }
    return (
        f"One virtual day: {args.wabas:,} WABAs x {args.templates} templates, "
        f"{args.new_per_day} new templates (Meta decides after 5-30 min), seed {args.seed}; "
        + "; ".join(about[name] for name in args.strategies)
        + f"; page limit {PAGE_LIMIT} (Graph and platform alike)."
    )


def main() -> None:
    args = parse_args()
    if args.database_url:
        bench(args, args.database_url)
        return
    with tempfile.TemporaryDirectory(prefix="poller-cost-") as directory:
        bench(args, f"sqlite:///{directory}/template-sync.db")


if __name__ == "__main__":
    main()
