"""`template-sync doctor`'s checks against the Meta simulator, on both store backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from service.config import Secret, Settings
from service.crypto import KEY_FILE, TokenCipher, generate_key
from service.doctor import (
    Check,
    channel_checks,
    check_channel,
    graph_client,
    render,
    run_doctor,
    subscribe,
)
from service.simulator import Simulator
from service.storage import Store, Throttle, open_store
from service.storage.schema import MIGRATIONS
from service.times import now_ms

from .conftest import APP_SECRET, META_TOKEN, WABA_ID, Tenant, simulated
from .service_process import run_cli, service_env

HEALTHY = [
    "config: app secret",
    "config: verify token",
    "config: encryption keys",
    "store: reachable",
    "store: migrated",
    f"WABA {WABA_ID}: access token",
    f"WABA {WABA_ID}: subscribed",
    f"WABA {WABA_ID}: throttling",
]


@pytest.fixture
async def sim() -> AsyncIterator[tuple[Simulator, str]]:
    simulator = Simulator(app_secret=APP_SECRET, app_name="Acme template-sync")
    simulator.add_waba(WABA_ID, META_TOKEN, name="Acme WABA")
    async with simulated(simulator) as running:
        yield running


@pytest.fixture
def settings(settings: Settings, sim: tuple[Simulator, str]) -> Settings:
    return replace(settings, graph_url=sim[1])


async def subscribed(settings: Settings) -> None:
    async with aiohttp.ClientSession() as session:
        done = await subscribe(graph_client(session, settings), WABA_ID, META_TOKEN)
    assert done == Check(
        f"WABA {WABA_ID}: subscribe", True, "app subscribed to the WABA's webhooks"
    )


def failures(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks if not check.ok}


async def test_healthy_setup_passes_every_check(
    settings: Settings, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    await subscribed(settings)
    checks = await run_doctor(settings)
    assert [check.name for check in checks] == HEALTHY
    assert failures(checks) == {}
    details = {check.name: check.detail for check in checks}
    assert details[f"WABA {WABA_ID}: access token"] == "valid for 'Acme WABA'"
    assert details[f"WABA {WABA_ID}: subscribed"] == "apps: Acme template-sync"
    assert "% of the hourly call budget used" in details[f"WABA {WABA_ID}: throttling"]
    assert render(checks).endswith("8 passed, 0 failed")
    # Two Graph calls per channel, read-only: GET /{waba_id} and GET .../subscribed_apps.
    assert [(c.method, c.path.split("/", 2)[2]) for c in sim[0].calls[1:]] == [
        ("GET", WABA_ID), ("GET", f"{WABA_ID}/subscribed_apps"),
    ]  # fmt: skip


async def test_missing_app_secret(settings: Settings, tenant: Tenant) -> None:
    await subscribed(settings)
    bad = failures(await run_doctor(replace(settings, meta_app_secrets=())))
    assert bad["config: app secret"].fix.startswith("set TEMPLATE_SYNC_META_APP_SECRET")
    # The simulated app requires appsecret_proof, as apps with "Require App Secret" do.
    token = bad.pop(f"WABA {WABA_ID}: access token")
    assert "appsecret_proof" in token.detail
    assert list(bad) == ["config: app secret"]


async def test_wrong_app_secret_is_named_by_the_token_check(
    settings: Settings, tenant: Tenant
) -> None:
    bad = failures(await run_doctor(replace(settings, meta_app_secrets=(Secret("other"),))))
    check = bad[f"WABA {WABA_ID}: access token"]
    assert "Graph code 100" in check.detail
    assert (
        check.fix
        == "TEMPLATE_SYNC_META_APP_SECRET must be the secret of the app that issued the token"
    )


async def test_missing_verify_token(settings: Settings, tenant: Tenant) -> None:
    await subscribed(settings)
    bad = failures(await run_doctor(replace(settings, meta_verify_token=None)))
    assert list(bad) == ["config: verify token"]
    assert "TEMPLATE_SYNC_META_VERIFY_TOKEN" in bad["config: verify token"].fix


async def test_unusable_encryption_key_skips_the_channels(
    settings: Settings, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    checks = await run_doctor(replace(settings, encryption_keys=(Secret("not-a-fernet-key"),)))
    bad = failures(checks)
    assert list(bad) == ["config: encryption keys", "channels"]
    assert "template-sync keys generate" in bad["config: encryption keys"].fix
    assert sim[0].calls == []


async def test_unset_encryption_keys_fail_even_with_a_generated_key(
    settings: Settings, tenant: Tenant
) -> None:
    unset = replace(settings, encryption_keys=())
    bad = failures(await run_doctor(unset))
    assert "holds no usable key" in bad["config: encryption keys"].detail
    assert not (settings.data_dir / KEY_FILE).exists()  # the doctor never makes one
    settings.data_dir.mkdir()
    (settings.data_dir / KEY_FILE).write_text(settings.encryption_keys[0].value + "\n")
    await subscribed(settings)
    bad = failures(await run_doctor(unset))
    assert list(bad) == ["config: encryption keys"]  # the channel was read with the file's key
    assert "the content of" in bad["config: encryption keys"].fix


async def test_token_under_a_removed_key(settings: Settings, tenant: Tenant) -> None:
    bad = failures(await run_doctor(replace(settings, encryption_keys=(Secret(generate_key()),))))
    check = bad[f"WABA {WABA_ID}: access token"]
    assert check.detail == "stored token was encrypted under a key that is not configured"
    assert list(bad) == [f"WABA {WABA_ID}: access token"]


async def test_store_unreachable(settings: Settings) -> None:
    checks = await run_doctor(replace(settings, database_url="postgresql://u@127.0.0.1:9/x"))
    assert [c.name for c in checks][-1] == "store: reachable"
    assert "cannot connect to PostgreSQL" in failures(checks)["store: reachable"].detail


async def test_missing_sqlite_file_is_not_created(settings: Settings) -> None:
    url = f"sqlite:///{settings.data_dir}/absent.db"
    bad = failures(await run_doctor(replace(settings, database_url=url)))
    assert bad["store: reachable"].fix.startswith("run `template-sync migrate`")
    assert not settings.data_dir.exists()


async def test_store_not_migrated(settings: Settings, database_url: str) -> None:
    empty = await open_store(database_url)  # no migrate(): a new SQLite file or PG schema
    await empty.close()
    checks = await run_doctor(settings)
    bad = failures(checks)
    assert list(bad) == ["store: migrated"]
    latest = max(version for version, _ in MIGRATIONS)
    assert bad["store: migrated"].detail == f"schema at migration 0 of {latest}"
    assert bad["store: migrated"].fix.startswith("run `template-sync migrate`")


@pytest.mark.parametrize("status", [400, 401])
async def test_invalid_token_190(
    settings: Settings, tenant: Tenant, sim: tuple[Simulator, str], status: int
) -> None:
    sim[0].fail(WABA_ID, "190", http_status=status)
    bad = failures(await run_doctor(settings))
    check = bad.pop(f"WABA {WABA_ID}: access token")
    assert bad == {}
    assert check.detail.startswith("token_invalid (Graph code 190)")
    assert "system-user token" in check.fix and "--waba-id 102290129340398" in check.fix


async def test_token_without_access_to_the_waba(
    settings: Settings, store: Store, sim: tuple[Simulator, str]
) -> None:
    sim[0].add_waba("555", "other-token")
    async with aiohttp.ClientSession() as session:
        checks = await channel_checks(graph_client(session, settings), "555", META_TOKEN, store)
    assert [(c.name, c.ok) for c in checks] == [("WABA 555: access token", False)]
    assert "Assign assets" in checks[0].fix


async def test_app_not_subscribed_and_channel_add_subscribe(
    settings: Settings, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    bad = failures(await run_doctor(settings))
    assert list(bad) == [f"WABA {WABA_ID}: subscribed"]
    assert "--subscribe" in bad[f"WABA {WABA_ID}: subscribed"].fix
    without = await check_channel(settings, store, WABA_ID, META_TOKEN)
    assert [c.name for c in without if not c.ok] == [f"WABA {WABA_ID}: subscribed"]
    assert not sim[0].is_subscribed(WABA_ID)
    checks = await check_channel(settings, store, WABA_ID, META_TOKEN, do_subscribe=True)
    assert [c.name for c in checks] == [f"WABA {WABA_ID}: subscribe", *HEALTHY[5:]]
    assert failures(checks) == {} and sim[0].is_subscribed(WABA_ID)
    again = await check_channel(settings, store, WABA_ID, META_TOKEN, do_subscribe=True)
    assert [c.name for c in again] == HEALTHY[5:]  # subscribed already: no second POST


async def test_stored_throttle_fails_without_calling_meta(
    settings: Settings, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    await store.set_throttle(Throttle(WABA_ID, now_ms() + 600_000, 80008))
    bad = failures(await run_doctor(settings))
    check = bad.pop(f"WABA {WABA_ID}: throttling")
    assert bad == {}
    assert check.detail.startswith("Meta throttled this WABA (code 80008) until ")
    assert check.fix.startswith("wait until ")
    assert sim[0].calls == []


async def test_80008_from_meta_is_stored(
    settings: Settings, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    sim[0].fail(WABA_ID, "80008", regain_min=7)
    before = now_ms()
    bad = failures(await run_doctor(settings))
    assert list(bad) == [f"WABA {WABA_ID}: throttling"]
    throttle = (await store.throttles([WABA_ID]))[WABA_ID]
    assert throttle.code == 80008
    assert before + 7 * 60_000 <= throttle.blocked_until <= now_ms() + 7 * 60_000
    calls = len(sim[0].calls)
    assert list(failures(await run_doctor(settings))) == [f"WABA {WABA_ID}: throttling"]
    assert len(sim[0].calls) == calls  # the stored block is honoured


async def test_graph_unreachable(settings: Settings, tenant: Tenant) -> None:
    await subscribed(settings)
    bad = failures(await run_doctor(replace(settings, graph_url="http://127.0.0.1:9/v25.0")))
    check = bad.pop("Graph API: reachable")
    assert bad == {}
    assert check.detail.startswith(f"WABA {WABA_ID}: ClientConnectorError")
    assert "TEMPLATE_SYNC_GRAPH_URL" in check.fix


async def test_no_channel(settings: Settings, store: Store) -> None:
    bad = failures(await run_doctor(settings))
    assert list(bad) == ["channels"]
    assert bad["channels"].fix.startswith("add one: template-sync channel add")


def test_render_lists_fixes_under_failures() -> None:
    text = render([Check("a", True, "fine"), Check("longer name", False, "broken", "do this")])
    assert text == (
        "PASS  a            fine\nFAIL  longer name  broken\n      fix: do this\n1 passed, 1 failed"
    )


async def test_cli_channel_add_subscribe_set_token_and_doctor(
    settings: Settings, store: Store, sim: tuple[Simulator, str], tmp_path: Path
) -> None:
    """The commands as a user runs them, against the simulator."""
    simulator, _ = sim
    workspace = await store.create_workspace("Acme", now_ms())
    env = {**service_env(settings), "TEMPLATE_SYNC_GRAPH_URL": settings.graph_url,
           "META_TOKEN": META_TOKEN, "NEW_TOKEN": "EAAG-rotated"}  # fmt: skip

    async def cli(*args: str) -> tuple[int, str, str]:
        return await run_cli(env, tmp_path, *args)

    add = ("channel", "add", "--workspace", workspace.id, "--waba-id", WABA_ID,
           "--access-token-env", "META_TOKEN")  # fmt: skip
    code, out, err = await cli(*add, "--subscribe")
    assert code == 0 and out.strip() == (await store.list_channels(workspace.id))[0].id
    assert simulator.is_subscribed(WABA_ID) and "FAIL" not in err, err
    assert (await cli("doctor"))[0] == 0
    simulator.add_waba(WABA_ID, "EAAG-rotated")
    simulator.fail(WABA_ID, "190", sticky=True)
    code, out, _ = await cli("doctor")
    assert code == 1 and "channel set-token" in out and META_TOKEN not in out
    simulator.clear_faults()
    code, _, err = await cli("channel", "set-token", "--waba-id", WABA_ID,
                             "--access-token-env", "NEW_TOKEN")  # fmt: skip
    assert code == 0 and "replaced" in err
    [channel] = await store.list_channels(workspace.id)
    assert TokenCipher(settings.encryption_keys).decrypt(channel.access_token_enc) == "EAAG-rotated"
    missing = ("channel", "set-token", "--waba-id", "999", "--access-token-env", "NEW_TOKEN")
    code, _, err = await cli(*missing)
    assert code == 1 and "no channel for WABA 999" in err
