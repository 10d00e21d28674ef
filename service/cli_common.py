"""What every `template-sync` command shares: settings, the store, output conventions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import click

from .config import ConfigError, Settings
from .crypto import TokenCipher, load_cipher
from .logs import configure
from .metrics import Metrics
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

    try:
        return asyncio.run(run())
    except StoreUnavailable as error:
        raise click.ClickException(f"{error}: {error.fix}" if error.fix else str(error)) from None
    except (Conflict, NotFound) as error:
        raise click.ClickException(str(error)) from None


def with_syncer(settings: Settings, action: Callable[[Syncer], Awaitable[T]]) -> T:
    """Run `action` with a Syncer over a migrated store and a fresh HTTP session."""
    from .app import make_syncer

    async def run(store: Store) -> T:
        cipher = token_cipher(settings)
        async with aiohttp.ClientSession() as session:
            return await action(make_syncer(settings, store, session, cipher, Metrics()))

    return with_store(settings, run)


def token_cipher(settings: Settings) -> TokenCipher:
    """The cipher of Meta tokens at rest; a key problem is a clear CLI error."""
    try:
        return load_cipher(settings)
    except ConfigError as error:
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
