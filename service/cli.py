"""The `template-sync` command line. Creating commands print the new id or token alone."""

from __future__ import annotations

import click

from . import (
    cli_admin,
    cli_channels,
    cli_ops,
    cli_relays,
    cli_templates,
    cli_tools,
    cli_upstream,
    cli_webhooks,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Keep WhatsApp template statuses in sync with Meta."""


for command in (
    cli_ops.serve, cli_ops.migrate, cli_ops.doctor, cli_admin.workspace, cli_channels.channel,
    cli_admin.token, cli_templates.template, cli_templates.templates, cli_ops.import_, cli_ops.sync,
    cli_ops.poll, cli_ops.dispatch, cli_ops.prune, cli_admin.deliveries, cli_admin.keys,
    cli_tools.simulator, cli_tools.send_webhook, cli_tools.demo, cli_relays.relay,
    cli_webhooks.webhook, cli_upstream.upstream,
):  # fmt: skip
    main.add_command(command)
