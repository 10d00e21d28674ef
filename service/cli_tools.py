"""Offline tools: the Meta simulator, a signed webhook sender and the demo."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import aiohttp
import click

from .cli_common import digits, load_settings
from .logs import configure


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8010, show_default=True, type=click.IntRange(0, 65535))
@click.option("--waba-id", callback=digits, help="Seed this WABA...")
@click.option("--token", help="...with this Meta access token valid for it.")
@click.option("--templates", default=0, show_default=True, help="...and this many templates,")
@click.option("--pending", default=0, show_default=True, help="...the last N of them PENDING.")
@click.option("--app-secret", help="Require appsecret_proof made with this secret.")
def simulator(
    host: str, port: int, waba_id: str | None, token: str | None, templates: int, pending: int,
    app_secret: str | None,
) -> None:  # fmt: skip
    """Run a fake Meta Graph API (offline) to point TEMPLATE_SYNC_GRAPH_URL at."""
    from .demo import run_simulator

    configure("text", "INFO")
    coroutine = run_simulator(
        host, port, waba_id=waba_id, token=token, templates=templates, pending=pending,
        app_secret=app_secret, say=lambda line: click.echo(line, err=True),
    )  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(coroutine)


@click.command("send-webhook")
@click.option("--url", default="http://127.0.0.1:8000/webhooks/meta", show_default=True)
@click.option("--waba-id", required=True, callback=digits)
@click.option("--template-id", required=True, callback=digits, help="Meta's template id.")
@click.option("--event", default="APPROVED", show_default=True, help="e.g. REJECTED, PAUSED.")
@click.option("--name", required=True, help="Template name.")
@click.option("--language", default="en_US", show_default=True)
@click.option("--reason", help="Rejection reason, e.g. INVALID_FORMAT.")
def send_webhook(
    url: str, waba_id: str, template_id: str, event: str, name: str, language: str,
    reason: str | None,
) -> None:  # fmt: skip
    """Send a template status webhook signed with TEMPLATE_SYNC_META_APP_SECRET, as Meta would."""
    from .demo import send_webhook as send

    secret = load_settings().current_app_secret
    if secret is None:
        raise click.ClickException("set TEMPLATE_SYNC_META_APP_SECRET to the service's secret")
    try:
        status, text = asyncio.run(
            send(url, secret, waba_id=waba_id, template_id=template_id, event=event.upper(),
                 name=name, language=language, reason=reason)
        )  # fmt: skip
    except aiohttp.ClientError as error:
        raise click.ClickException(f"could not reach {url}: {error}") from None
    click.echo(f"{status} {text}")
    if status != 200:
        sys.exit(1)


@click.command()
@click.option("--workdir", default="demo", show_default=True, type=click.Path(file_okay=False))
def demo(workdir: str) -> None:
    """Show the whole loop offline: webhook, API, a lost webhook repaired by a sync."""
    from pathlib import Path

    from .demo import DemoError, run_demo

    try:
        asyncio.run(run_demo(Path(workdir), say=click.echo))
    except DemoError as error:
        raise click.ClickException(str(error)) from None
