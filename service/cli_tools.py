"""Offline tools: the Meta simulator, a signed webhook sender and the demo."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from pathlib import Path

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
@click.option("--webhook-url", help="POST review verdicts there, signed with --app-secret.")
@click.option("--review-delay", default=1.0, show_default=True, type=click.FloatRange(0),
              help="Seconds before a new or edited template is reviewed.")  # fmt: skip
@click.option("--drop-webhooks", is_flag=True, help="Review, but send no webhook.")
def simulator(
    host: str, port: int, waba_id: str | None, token: str | None, templates: int, pending: int,
    app_secret: str | None, webhook_url: str | None, review_delay: float, drop_webhooks: bool,
) -> None:  # fmt: skip
    """Run a fake Meta Graph API (offline) to point TEMPLATE_SYNC_GRAPH_URL at."""
    from .demo import run_simulator

    if webhook_url and not app_secret:
        raise click.UsageError("--webhook-url needs --app-secret to sign the webhooks with")
    if webhook_url and not webhook_url.startswith(("http://", "https://")):
        raise click.UsageError("--webhook-url must be an http:// or https:// URL")
    configure("text", "INFO")
    coroutine = run_simulator(
        host, port, waba_id=waba_id, token=token, templates=templates, pending=pending,
        app_secret=app_secret, say=lambda line: click.echo(line, err=True),
        webhook_url=webhook_url, review_delay_s=review_delay, drop_webhooks=drop_webhooks,
    )  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(coroutine)


@click.command("send-webhook")
@click.option(
    "--url", help="Default: /webhooks/meta on TEMPLATE_SYNC_HOST and TEMPLATE_SYNC_PORT (this "
    "machine's service, as `serve` would listen).",
)  # fmt: skip
@click.option("--waba-id", required=True, callback=digits)
@click.option("--template-id", required=True, callback=digits, help="Meta's template id.")
@click.option("--event", default="APPROVED", show_default=True, help="e.g. REJECTED, PAUSED.")
@click.option("--name", required=True, help="Template name.")
@click.option("--language", default="en_US", show_default=True)
@click.option("--reason", help="Rejection reason, e.g. INVALID_FORMAT.")
@click.option(
    "--cacert", type=click.Path(path_type=Path),
    help="For an https URL, trust the CA certificates in this PEM file (like curl's).",
)  # fmt: skip
def send_webhook(
    url: str | None, waba_id: str, template_id: str, event: str, name: str, language: str,
    reason: str | None, cacert: Path | None,
) -> None:  # fmt: skip
    """Send a template status webhook signed with TEMPLATE_SYNC_META_APP_SECRET, as Meta would."""
    from .demo import send_webhook as send

    settings = load_settings()
    secret = settings.current_app_secret
    if secret is None:
        raise click.ClickException(
            "set TEMPLATE_SYNC_META_APP_SECRET (in .env or the environment) to the secret the "
            "service uses; a service started before it was set needs a restart"
        )
    url = url or f"http://{local_address(settings.host)}:{settings.port}/webhooks/meta"
    tls = trusting(cacert)
    try:
        status, text = asyncio.run(
            send(url, secret, waba_id=waba_id, template_id=template_id, event=event.upper(),
                 name=name, language=language, reason=reason, tls=tls)
        )  # fmt: skip
    except aiohttp.ClientConnectorCertificateError as error:
        hint = "" if cacert else "; if it is self-signed, pass its CA with --cacert FILE"
        raise click.ClickException(
            f"could not verify {url}: {error.certificate_error}{hint}"
        ) from None
    except aiohttp.ClientError as error:
        raise click.ClickException(f"could not reach {url}: {error}") from None
    click.echo(f"{status} {text}")
    if status == 503 and "TEMPLATE_SYNC_META_APP_SECRET" in text:
        click.echo("The service was started without the secret: restart it.", err=True)
    if status != 200:
        sys.exit(1)


def local_address(host: str) -> str:
    """Where this machine reaches a service listening on `host`."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    return f"[{host}]" if ":" in host else host


@click.command()
@click.option("--workdir", default="demo", show_default=True, type=click.Path(file_okay=False))
def demo(workdir: str) -> None:
    """Show the whole loop offline: webhook, API, a lost webhook repaired by a sync."""
    from .demo import DemoError, run_demo

    try:
        asyncio.run(run_demo(Path(workdir), say=click.echo))
    except DemoError as error:
        raise click.ClickException(str(error)) from None


def trusting(cacert: Path | None) -> ssl.SSLContext | None:
    """A TLS context that trusts only the CAs in the PEM file `cacert`, like curl's --cacert
    (None: the system's CAs)."""
    if cacert is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(cacert))
    except ssl.SSLError:  # an OSError too: first
        raise click.ClickException(f"--cacert {cacert}: no PEM certificate in it") from None
    except OSError as error:  # missing, a directory, unreadable
        raise click.ClickException(f"--cacert {cacert}: {error.strerror or error}") from None
