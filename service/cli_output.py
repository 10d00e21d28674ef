"""What the operator's commands print and ask: tables, JSON lists, masked URLs, confirmations."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click

from .times import iso


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns aligned with two spaces; the header is printed even with no rows."""
    lines = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


def print_json(items: Sequence[dict[str, Any]]) -> None:
    click.echo(json.dumps(list(items)))


def when(ms: int | None) -> str:
    """A time for a table cell: ISO 8601, or `-` when there is none."""
    return iso(ms) or "-"


def masked(url: str) -> str:
    """The URL as output shows it: a password in it and the query's values (often a token)
    become ***, since lists get pasted into tickets."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    pairs = (pair.partition("=") for pair in parts.query.split("&")) if parts.query else ()
    query = "&".join(f"{name}=***" if equals else name for name, equals, _ in pairs)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def confirm(question: str, yes: bool) -> None:
    """Ask before deleting; `--yes` answers for scripts. Without a terminal to ask on (stdin
    redirected or closed), refuse rather than read an answer from whatever stdin is."""
    if yes:
        return
    if sys.stdin is None or not sys.stdin.isatty():
        raise click.ClickException(
            "nothing deleted: there is no terminal to confirm on; add --yes to confirm"
        )
    click.confirm(question, abort=True, err=True)


def yes_flag(command: Callable[..., None]) -> Callable[..., None]:
    return click.option(
        "--yes", "-y", is_flag=True, help="Confirm without asking (needed without a terminal)."
    )(command)


def json_list_flag(command: Callable[..., None]) -> Callable[..., None]:
    return click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")(command)
