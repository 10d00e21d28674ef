"""Commands that run the service: serve, migrate, doctor, sync, import, poll, dispatch."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import math
import signal
import sys
from collections.abc import Callable

import click

from . import retention
from .assembly import Assembly
from .checkup import run_doctor
from .cli_common import load_settings, with_assembly, with_store, with_syncer
from .doctor import failed, render, warned
from .retention import Pruned
from .sources import WabaFailure
from .storage import RemoteCounts
from .sync import NoPendingTemplates, Syncer, report_json
from .times import iso, now_ms


@click.command()
@click.option("--host", help="Listen address (default TEMPLATE_SYNC_HOST or 127.0.0.1).")
@click.option("--port", type=int, help="Listen port (default TEMPLATE_SYNC_PORT or 8000).")
def serve(host: str | None, port: int | None) -> None:
    """Serve the webhook receiver and the API; migrations are applied on start."""
    from .app import create_app  # the web app: only the command that serves it imports it
    from .server import build_server  # imports uvicorn: only when serving

    settings = load_settings()
    settings = dataclasses.replace(
        settings, host=host or settings.host, port=settings.port if port is None else port
    )
    # Assembled here first: a store or key problem is then one line, not a traceback from the app.
    with_assembly(settings, ready)
    server = build_server(create_app(settings), settings)
    tune_garbage_collector()
    server.run()
    if not server.started:
        sys.exit(3)  # start-up failed; uvicorn logged why


async def ready(parts: Assembly) -> None:
    """Nothing to do: that the parts were assembled is the check."""


def tune_garbage_collector() -> None:
    """Fewer, cheaper collections for a server: what start-up built lives as long as the
    process, so it is frozen out of the full passes that otherwise stall every request in
    flight, and young objects are collected every 10,000 allocations, not 700.
    (Measured: bench/RESULTS.md, "Why the code is as it is".)"""
    gc.set_threshold(10_000, 10, 10)
    gc.freeze()


@click.command()
def migrate() -> None:
    """Create or upgrade the schema."""
    applied = with_store(load_settings(), lambda store: store.migrate(), migrate=False)
    click.echo(f"schema up to date ({len(applied)} migrations applied now)", err=True)


@click.command()
def prune() -> None:
    """Delete raw deliveries, sync runs and failed relay rows older than RETENTION_DAYS and
    clear dedupe keys older than DEDUPE_DAYS now (`serve` does it hourly); progress on
    stderr, totals on stdout."""
    settings = load_settings()

    def report(pruned: Pruned) -> None:
        click.echo(f"pruned so far: {pruned.describe()}", err=True)

    done = with_store(settings, lambda store: retention.prune(store, settings, now_ms(), report))
    click.echo(json.dumps(dataclasses.asdict(done)))


@click.command()
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too, not only on failures.")
def doctor(strict: bool) -> None:
    """Check configuration, store, every channel with Meta and every upstream, each with its
    fix. Exits 1 when a check FAILs (broken now); a WARN (works, but risky) exits 0 unless
    --strict."""
    checks = asyncio.run(run_doctor(load_settings()))
    click.echo(render(checks))
    if failed(checks) or (strict and warned(checks)):
        sys.exit(1)


def echo_failures(failures: list[WabaFailure]) -> None:
    for failure in failures:
        where = f"WABA {failure.waba_id}" if failure.waba_id else "workspace"
        label = "HTTP" if failure.kind.startswith("upstream_") else "Graph code"
        code = "" if failure.code is None else f" ({label} {failure.code})"
        line = f"{where}: {failure.kind}{code}: {failure.detail}"
        if failure.retry_after_s is not None:  # Meta's throttle window: nothing calls it before
            line += f"; try again in {math.ceil(failure.retry_after_s)} s"
        click.echo(line, err=True)


@click.command()
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
def sync(workspace_id: str) -> None:
    """Sync pending templates with Meta (or the workspace's upstream), like the API
    endpoint; prints the result."""
    try:
        report = with_syncer(load_settings(), lambda syncer: syncer.sync(workspace_id, "cli"))
    except NoPendingTemplates:
        raise click.ClickException("No pending templates found") from None
    click.echo(json.dumps({**report_json(report), "graph_calls": report.graph_calls}))
    echo_failures(report.failures)
    if report.failures:
        raise click.ClickException("Failed to sync the templates")


@click.command("import")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
def import_(workspace_id: str) -> None:
    """Add or update every template Meta (or the workspace's upstream) has for the
    workspace's WABAs (onboarding)."""

    async def run(syncer: Syncer) -> tuple[RemoteCounts, list[WabaFailure]]:
        return await syncer.import_workspace(workspace_id)

    counts, failures = with_syncer(load_settings(), run)
    click.echo(json.dumps(dataclasses.asdict(counts)))
    echo_failures(failures)
    if failures:
        raise click.ClickException("some WABAs could not be imported")


@click.command()
@click.option("--once", is_flag=True, help="One pass, then exit (for cron or a check).")
def poll(once: bool) -> None:
    """The polling fallback on its own: sync workspaces whose webhooks did not come."""
    settings = load_settings()

    async def run(parts: Assembly) -> None:
        poller = parts.poller
        if once:
            report = await poller.run_once()
            shown = {**dataclasses.asdict(report), "next_due_at": iso(report.next_due_at)}
            click.echo(json.dumps(shown))
            return
        on_stop_signals(poller.stop)
        click.echo(f"polling every {settings.poll_tick_s:g} s; Ctrl-C stops", err=True)
        await poller.run()

    with_assembly(settings, run)


@click.command()
@click.option("--once", is_flag=True, help="One pass, then exit (for cron or a check).")
def dispatch(once: bool) -> None:
    """The dispatcher on its own: send relayed deliveries and notifications (`serve` does
    it too)."""
    settings = load_settings()

    async def run(parts: Assembly) -> None:
        dispatcher = parts.dispatcher
        if once:
            report = await dispatcher.run_once()
            click.echo(json.dumps(dataclasses.asdict(report)))
            return
        on_stop_signals(dispatcher.stop)
        click.echo(f"dispatching every {settings.dispatch_tick_s:g} s; Ctrl-C stops", err=True)
        await dispatcher.run()

    with_assembly(settings, run)


def on_stop_signals(stop: Callable[[], None]) -> None:
    """Call `stop` on Ctrl-C or SIGTERM, so a loop ends after its current pass."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
