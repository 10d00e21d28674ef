"""`template-sync relay ...` as a user runs it, on both backends: the relays it adds, lists,
removes and retries, read back through the store."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from service.config import Settings
from service.meta_webhooks import status_delivery
from service.storage import Store
from service.times import now_ms
from service.webhooks import parse_delivery

from .conftest import NOW_MS, WABA_ID, sign
from .service_process import run_cli, service_env

Run = Callable[..., Awaitable[tuple[int, str, str]]]

URL = "https://app:s3cret@app.example.com/webhook?team=1&token=t0ken"
MASKED = "https://app:***@app.example.com/webhook?team=***&token=***"
RELAY_ID = re.compile(r"rl_[0-9a-f]{12}")
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
HEADER = ["ID", "NAME", "URL", "FIELDS", "QUEUED", "FAILED", "LAST_ERROR"]
UNKNOWN = "rl_000000000000"
OWNER = "tests"
LEASE_MS = 60_000


@pytest.fixture
def cli(settings: Settings, store: Store, tmp_path: Path) -> Run:
    """`template-sync ARGS` in a subprocess against the (migrated) test store."""
    env = service_env(settings)

    async def run(*args: str) -> tuple[int, str, str]:
        return await run_cli(env, tmp_path, *args)

    return run


async def added(cli: Run, *args: str) -> str:
    """`relay add ARGS`: its stdout must be the new id alone on a line."""
    code, out, err = await cli("relay", "add", *args)
    assert code == 0, err
    assert RELAY_ID.fullmatch(out.removesuffix("\n")) and out.count("\n") == 1, out
    return out.strip()


def refused(result: tuple[int, str, str], exit_code: int, message: str) -> None:
    """An error: nothing on stdout, the message on stderr, no traceback."""
    code, out, err = result
    assert (code, out) == (exit_code, ""), (code, out, err)
    assert message in err and "Traceback" not in err, err


def table(out: str) -> list[list[str]]:
    """`relay list`'s table, its cells split where two spaces or more separate them."""
    return [re.split(r" {2,}", line) for line in out.splitlines()]


async def queued_deliveries(store: Store, count: int, first: int = 0) -> None:
    """`count` signed deliveries stored as the webhook route stores them, so every relay
    taking them gets them queued."""
    for index in range(first, first + count):
        body = status_delivery(
            waba_id=WABA_ID, template_id=str(1000 + index), event="APPROVED",
            name=f"t_{index}", language="en_US", entry_time=1_751_000_000 + index,
        )  # fmt: skip
        parsed = parse_delivery(body)
        await store.record_delivery(body, NOW_MS, parsed.changes, None, sign(body), parsed.fields)


async def failed_deliveries(store: Store, count: int, error: str) -> None:
    """`count` deliveries queued for every relay, then failed for good with `error`, as the
    dispatcher leaves them after OUTBOX_MAX_AGE_S."""
    await queued_deliveries(store, count)
    for item in await store.claim_outbox(OWNER, NOW_MS, LEASE_MS, 1000):
        assert await store.finish_outbox(item, OWNER, NOW_MS, error, None)


async def test_add_prints_the_id_and_list_masks_the_password(cli: Run, store: Store) -> None:
    fields = " messages,account_update ,messages"
    relay_id = await added(cli, URL, "--fields", fields, "--name", "backend")
    [stored] = await store.list_relays()
    assert (stored.relay.id, stored.relay.url) == (relay_id, URL)  # sent with its password
    assert stored.relay.fields == ("messages", "account_update")
    assert stored.relay.name == "backend"

    code, out, err = await cli("relay", "list")
    assert code == 0, err
    assert table(out) == [
        HEADER, [relay_id, "backend", MASKED, "messages,account_update", "0", "0", "-"]
    ]  # fmt: skip
    code, out, err = await cli("relay", "list", "--json")
    assert code == 0, err
    [listed] = json.loads(out)
    assert ISO_TIME.fullmatch(listed.pop("created_at"))
    assert listed == {
        "id": relay_id, "name": "backend", "url": MASKED,
        "fields": ["messages", "account_update"], "queued": 0, "failed": 0, "last_error": None,
    }  # fmt: skip


async def test_add_json_masks_the_password(cli: Run, store: Store) -> None:
    code, out, err = await cli("relay", "add", URL, "--json")
    assert code == 0, err
    [stored] = await store.list_relays()
    assert json.loads(out) == {"id": stored.relay.id, "name": None, "url": MASKED, "fields": []}


async def test_list_counts_and_retry_requeues_the_failed(cli: Run, store: Store) -> None:
    relay_id = await added(cli, "http://127.0.0.1:9/hook")
    await failed_deliveries(store, 2, "HTTP 503")
    await queued_deliveries(store, 1, first=2)
    code, out, err = await cli("relay", "list")
    assert code == 0, err
    assert table(out)[1] == [relay_id, "-", "http://127.0.0.1:9/hook", "all", "1", "2", "HTTP 503"]

    code, out, err = await cli("relay", "retry", relay_id)
    assert (code, out) == (0, "2\n"), err
    assert f"re-queued 2 failed deliveries of relay {relay_id}" in err
    [summary] = await store.list_relays()
    assert (summary.queued, summary.failed) == (3, 0)
    due = await store.claim_outbox(OWNER, now_ms(), LEASE_MS, 1000)
    assert sorted(item.attempts for item in due) == [0, 0, 0]  # due now, starting over
    assert (await cli("relay", "retry", relay_id))[:2] == (0, "0\n")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://app.example.com/webhook",
        "https:///webhook",
        "app.example.com/webhook",
        "https://app.example.com:port/webhook",
        "https://app example.com/webhook",
        "",
    ],
)
async def test_add_refuses_a_url_that_is_not_http(cli: Run, store: Store, url: str) -> None:
    result = await cli("relay", "add", url)
    refused(result, 2, "must be an http:// or https:// URL with a host")
    assert await store.list_relays() == []


@pytest.mark.parametrize("fields", ["messages,,account_update", " ", "messages, "])
async def test_add_refuses_an_empty_field(cli: Run, store: Store, fields: str) -> None:
    result = await cli("relay", "add", URL, "--fields", fields)
    refused(result, 2, "give webhook field names separated by commas")
    assert await store.list_relays() == []


async def test_remove_drops_what_is_queued(cli: Run, store: Store) -> None:
    kept = await added(cli, "https://other.example.com/hook")
    relay_id = await added(cli, URL)
    await queued_deliveries(store, 2)
    code, out, err = await cli("relay", "remove", relay_id, "--yes")
    assert (code, out) == (0, ""), err
    assert f"removed relay {relay_id}" in err and "s3cret" not in err
    assert [s.relay.id for s in await store.list_relays()] == [kept]
    claimed = await store.claim_outbox(OWNER, NOW_MS, LEASE_MS, 1000)
    assert {item.target_id for item in claimed} == {kept}


async def test_unknown_relay_is_a_clear_error(cli: Run) -> None:
    message = f"no relay {UNKNOWN}; 'template-sync relay list' lists them"
    refused(await cli("relay", "remove", UNKNOWN, "--yes"), 1, message)
    refused(await cli("relay", "retry", UNKNOWN), 1, message)
