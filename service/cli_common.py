"""What every `template-sync` command shares: settings, the store (or every part `serve`
runs on), one-line errors, output conventions."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import click

from .assembly import Assembly, assembled
from .config import ConfigError, Settings
from .logs import configure
from .storage import Conflict, NotFound, Store, StoreUnavailable, open_store
from .sync import Syncer

T = TypeVar("T")


def load_settings() -> Settings:
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    configure(settings.log_format, settings.log_level)
    return settings


def with_store(
    settings: Settings, action: Callable[[Store], Awaitable[T]], *, migrate: bool = True
) -> T:
    """Run `action` against a migrated store; store problems become clear CLI errors."""

    async def run() -> T:
        store = await open_store(settings.database_url)
        try:
            if migrate:
                await store.migrate()
            return await action(store)
        finally:
            await store.close()

    return run_command(run())


def with_assembly(settings: Settings, action: Callable[[Assembly], Awaitable[T]]) -> T:
    """Run `action` with what `serve` runs on (service.assembly): store, cipher, syncer..."""

    async def run() -> T:
        async with assembled(settings) as parts:
            return await action(parts)

    return run_command(run())


def with_syncer(settings: Settings, action: Callable[[Syncer], Awaitable[T]]) -> T:
    """Run `action` with a Syncer over a migrated store and a fresh HTTP session."""
    return with_assembly(settings, lambda parts: action(parts.syncer))


def run_command(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; store, key and lookup problems become one-line errors."""
    try:
        return asyncio.run(main)
    except StoreUnavailable as error:
        raise click.ClickException(f"{error}: {error.fix}" if error.fix else str(error)) from None
    except (ConfigError, Conflict, NotFound) as error:
        raise click.ClickException(str(error)) from None


def emit(value: str, as_json: bool, **fields: Any) -> None:
    """The created thing: alone on stdout, or as a JSON object with --json."""
    click.echo(json.dumps(fields) if as_json else value)


def json_flag(command: Callable[..., None]) -> Callable[..., None]:
    return click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")(command)


def digits(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not (value.isdecimal() and value.isascii()):
        raise click.BadParameter("must be Meta's numeric id")
    return value


def read_secret(env_var: str | None, from_stdin: bool, option: str, what: str) -> str:
    """A secret from the variable named by `{option}-env` or from one line of stdin
    (`{option}-stdin`): never from the command line, where `ps` and shell history see it."""
    if bool(env_var) == from_stdin:
        raise click.UsageError(f"give exactly one of {option}-env or {option}-stdin")
    secret = (sys.stdin.readline() if from_stdin else os.environ.get(env_var or "", "")).strip()
    if not secret:
        source = "standard input" if from_stdin else f"the variable {env_var}"
        raise click.ClickException(f"no {what} in {source}")
    return secret
