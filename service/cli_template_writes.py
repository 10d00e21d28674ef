"""What `template create` and `template delete` do at Meta (design section 12), apart from
their options: the template file read and checked, Meta's refusals as one line, and the
wait for Meta's verdict.

The wait follows the template's events in the store's history (EventWatch), as a waiting
GET of the API does: the CLI never asks Meta for the status, so the verdict arrives when
the service records it, from Meta's webhook or from its polling.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import click

from .cli_common import load_settings, with_store, with_syncer
from .events import PENDING_STATUSES
from .storage import NotFound, Store, Template
from .sync import Syncer
from .template_drafts import Draft, DraftError, draft
from .template_writes import TemplateWriter, WriteRefused
from .watch import EventWatch, wait_until

TRIGGER = "cli"  # how the Graph calls are counted (metrics.GRAPH_CALL_REASONS)
APPROVED = "APPROVED"
EXIT_NOT_APPROVED = 3  # --wait: a final status other than APPROVED
EXIT_TIMED_OUT = 4  # --wait: still in review when --timeout ran out
EXIT_INTERRUPTED = 130  # --wait: Ctrl-C, as a shell reports SIGINT

Write = Callable[[TemplateWriter, Store], Awaitable[Template]]


def read_draft(path: Path, waba_id: str | None) -> Draft:
    """The template file as a Draft, `waba_id` (the --waba-id option) filled in; every
    problem is a one-line error naming the file, and each wrong field."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise click.ClickException(f"cannot read {path}: {error.strerror}") from None
    try:
        body = json.loads(raw)
    except ValueError as error:  # UnicodeDecodeError included
        raise click.ClickException(f"{path} is not JSON: {error}") from None
    named = waba_id is not None and isinstance(body, dict)
    if named and body.setdefault("waba_id", waba_id) != waba_id:
        raise click.UsageError(f"--waba-id {waba_id} differs from the file's waba_id")
    try:
        return draft(body)
    except DraftError as error:
        raise click.ClickException(f"{path}: {error}") from None


def refusal_line(refused: WriteRefused) -> str:
    """Why Meta (or the service) said no, with what Meta said for people and what its
    support asks for (code, subcode, fbtrace_id)."""
    line = refused.message
    error = refused.error
    if error is not None:
        codes = "/".join(str(code) for code in (error.code, error.subcode) if code is not None)
        kind = f"{error.kind}, " if refused.reason == "unavailable" else ""
        line += f": {error.user_message or error.message}"
        line += f" ({kind}Graph code {codes or 'none'}, fbtrace_id {error.fbtrace_id or 'none'})"
    if refused.retry_after_s is not None:
        line += f"; try again in {math.ceil(refused.retry_after_s)} s"
    return line


def write(subject: str, action: Write) -> Template:
    """Run `action` with a TemplateWriter whose Graph calls count as the CLI's, and the
    store; a refusal is a one-line error about `subject` (the file, the template)."""

    async def run(syncer: Syncer) -> Template:
        return await action(TemplateWriter(syncer, TRIGGER), syncer.store)

    try:
        return with_syncer(load_settings(), run)
    except DraftError as error:  # the channel to write through: none, or not named
        raise click.ClickException(f"{subject}: {error}") from None
    except WriteRefused as refused:
        raise click.ClickException(refusal_line(refused)) from None


def wait_for_verdict(template: Template, timeout_s: float) -> int:
    """Wait for Meta's verdict on `template` as the store records it; say it on stderr and
    return the exit code (see EXIT_*)."""
    try:  # the first line inside: a Ctrl-C once it is shown is always a clean stop
        click.echo(
            f"waiting up to {timeout_s:g} s for Meta's review of template {template.id} "
            f"({template.name}, {template.language}; Meta id {template.provider_id}); the service "
            "must be receiving Meta's webhooks or polling for the verdict to arrive; Ctrl-C stops "
            "waiting",
            err=True,
        )
        final = with_store(
            load_settings(), lambda store: verdict(store, template, timeout_s), migrate=False
        )
    except KeyboardInterrupt:
        click.echo(f"stopped waiting: template {template.id} is still in review", err=True)
        return EXIT_INTERRUPTED
    return _said(template, final, timeout_s)


def _said(template: Template, final: Template | None, timeout_s: float) -> int:
    """The wait's outcome on stderr, and its exit code."""
    if final is None:
        click.echo(f"timed out after {timeout_s:g} s: template {template.id} is still in "
                   "review (exit 4)", err=True)  # fmt: skip
        return EXIT_TIMED_OUT
    reason = f" ({final.rejected_reason})" if final.rejected_reason else ""
    click.echo(f"template {final.id} ({final.name}, {final.language}): {final.status}{reason}",
               err=True)  # fmt: skip
    return 0 if final.status == APPROVED else EXIT_NOT_APPROVED


async def verdict(store: Store, template: Template, timeout_s: float) -> Template | None:
    """The template once its status is final (no longer in review), or None when
    `timeout_s` passed first."""
    watch = EventWatch(store)
    async with watch.running():
        current = await wait_until(
            watch, template, partial(_read, store, template),
            lambda found: found.status not in PENDING_STATUSES, timeout_s,
        )  # fmt: skip
    return None if current.status in PENDING_STATUSES else current


async def _read(store: Store, template: Template) -> Template:
    found = await store.get_template(template.workspace_id, template.id)
    if found is None:
        raise NotFound(f"template {template.id} was removed from this service meanwhile")
    return found
