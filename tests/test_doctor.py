"""`template-sync doctor`'s checks against the Meta simulator, on both store backends, and
the one-line store errors of every command, through the real `template-sync` command."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from service.checkup import run_doctor
from service.config import Secret, Settings
from service.crypto import KEY_FILE, TokenCipher, generate_key
from service.doctor import (
    FIX_INDENT,
    FIX_PREFIX,
    Check,
    channel_checks,
    check_channel,
    graph_client,
    render,
    subscribe,
)
from service.simulator import Simulator
from service.storage import Store, Throttle, open_store
from service.storage.postgres import connect_failure
from service.storage.schema import MIGRATIONS
from service.times import now_ms

from .conftest import APP_SECRET, META_TOKEN, POSTGRES_URL, WABA_ID, Tenant, simulated
from .service_process import REPO, ServiceProcess, free_port, run_cli, service_env
from .test_cli_relays import failed_deliveries

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
        f"WABA {WABA_ID}: subscribe", "PASS", "app subscribed to the WABA's webhooks"
    )


def failures(checks: list[Check]) -> dict[str, Check]:
    """The checks that did not pass: failed or warned."""
    return {check.name: check for check in checks if not check.ok}


def verdicts(checks: list[Check]) -> dict[str, str]:
    return {check.name: check.verdict for check in checks if not check.ok}


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
    assert render(checks).endswith("8 passed, 0 warnings, 0 failed")
    # Two Graph calls per channel, read-only: GET /{waba_id} and GET .../subscribed_apps.
    assert [(c.method, c.path.split("/", 2)[2]) for c in sim[0].calls[1:]] == [
        ("GET", WABA_ID), ("GET", f"{WABA_ID}/subscribed_apps"),
    ]  # fmt: skip


async def test_missing_app_secret_fails(settings: Settings, tenant: Tenant) -> None:
    await subscribed(settings)
    bad = failures(await run_doctor(replace(settings, meta_app_secrets=())))
    assert bad["config: app secret"].fix.startswith("set TEMPLATE_SYNC_META_APP_SECRET")
    # The simulated app requires appsecret_proof, as apps with "Require App Secret" do.
    token = bad.pop(f"WABA {WABA_ID}: access token")
    assert "appsecret_proof" in token.detail and token.verdict == "FAIL"
    assert verdicts(list(bad.values())) == {"config: app secret": "FAIL"}


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


async def test_missing_verify_token_warns(settings: Settings, tenant: Tenant) -> None:
    """Signed deliveries still arrive; only registering the callback URL needs it."""
    await subscribed(settings)
    checks = await run_doctor(replace(settings, meta_verify_token=None))
    assert verdicts(checks) == {"config: verify token": "WARN"}
    assert "TEMPLATE_SYNC_META_VERIFY_TOKEN" in failures(checks)["config: verify token"].fix
    assert render(checks).endswith("7 passed, 1 warning, 0 failed")


async def test_unusable_encryption_key_skips_the_channels(
    settings: Settings, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    checks = await run_doctor(replace(settings, encryption_keys=(Secret("not-a-fernet-key"),)))
    bad = failures(checks)
    assert verdicts(checks) == {"config: encryption keys": "FAIL", "channels": "FAIL"}
    assert "template-sync keys generate" in bad["config: encryption keys"].fix
    assert sim[0].calls == []


async def test_unset_encryption_keys_warn_and_a_lost_key_fails_the_channels(
    settings: Settings, tenant: Tenant
) -> None:
    unset = replace(settings, encryption_keys=())
    checks = await run_doctor(unset)
    assert verdicts(checks) == {"config: encryption keys": "WARN", "channels": "FAIL"}
    assert "serve generates a key" in failures(checks)["config: encryption keys"].detail
    assert "1 channel(s) not checked" in failures(checks)["channels"].detail
    assert not (settings.data_dir / KEY_FILE).exists()  # the doctor never makes one
    settings.data_dir.mkdir()
    (settings.data_dir / KEY_FILE).write_text(settings.encryption_keys[0].value + "\n")
    await subscribed(settings)
    checks = await run_doctor(unset)
    # The channel was read with the file's key: the generated key works, but is a risk.
    assert verdicts(checks) == {"config: encryption keys": "WARN"}
    check = failures(checks)["config: encryption keys"]
    assert "keep a copy of it elsewhere" in check.detail
    assert check.fix.startswith("printf ") and f"$(cat {settings.data_dir / KEY_FILE})" in check.fix
    (settings.data_dir / KEY_FILE).write_text("garbage\n")
    checks = await run_doctor(unset)
    assert verdicts(checks)["config: encryption keys"] == "FAIL"  # serve cannot start


async def test_token_under_a_removed_key(settings: Settings, tenant: Tenant) -> None:
    bad = failures(await run_doctor(replace(settings, encryption_keys=(Secret(generate_key()),))))
    check = bad[f"WABA {WABA_ID}: access token"]
    assert check.detail == "stored token was encrypted under a key that is not configured"
    assert check.fix.endswith(
        f"template-sync channel set-token --waba-id {WABA_ID} --access-token-env META_TOKEN"
    )
    assert list(bad) == [f"WABA {WABA_ID}: access token"]


async def test_store_unreachable(settings: Settings) -> None:
    checks = await run_doctor(replace(settings, database_url="postgresql://u@127.0.0.1:9/x"))
    assert [c.name for c in checks][-1] == "store: reachable"
    check = failures(checks)["store: reachable"]
    assert check.detail == "cannot connect to PostgreSQL at 127.0.0.1:9: Connection refused"
    assert check.fix == "start the database or fix TEMPLATE_SYNC_DATABASE_URL"


async def test_missing_sqlite_file_is_not_created(settings: Settings) -> None:
    url = f"sqlite:///{settings.data_dir}/absent.db"
    bad = failures(await run_doctor(replace(settings, database_url=url)))
    assert bad["store: reachable"].fix == "template-sync migrate"
    assert not settings.data_dir.exists()


async def test_store_not_migrated(settings: Settings, database_url: str) -> None:
    empty = await open_store(database_url)  # no migrate(): a new SQLite file or PG schema
    await empty.close()
    checks = await run_doctor(settings)
    bad = failures(checks)
    assert list(bad) == ["store: migrated"]
    latest = max(version for version, _ in MIGRATIONS)
    assert bad["store: migrated"].detail == f"schema at migration 0 of {latest}"
    assert bad["store: migrated"].fix == "template-sync migrate"


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
    assert verdicts(list(bad.values())) == {f"WABA {WABA_ID}: subscribed": "FAIL"}
    assert bad[f"WABA {WABA_ID}: subscribed"].fix == (
        f"template-sync channel subscribe --waba-id {WABA_ID}"
    )
    without = await check_channel(settings, store, WABA_ID, META_TOKEN)
    assert [c.name for c in without if not c.ok] == [f"WABA {WABA_ID}: subscribed"]
    assert not sim[0].is_subscribed(WABA_ID)
    checks = await check_channel(settings, store, WABA_ID, META_TOKEN, do_subscribe=True)
    assert [c.name for c in checks] == [f"WABA {WABA_ID}: subscribe", *HEALTHY[5:]]
    assert failures(checks) == {} and sim[0].is_subscribed(WABA_ID)
    again = await check_channel(settings, store, WABA_ID, META_TOKEN, do_subscribe=True)
    assert [c.name for c in again] == HEALTHY[5:]  # subscribed already: no second POST


async def test_stored_throttle_warns_without_calling_meta(
    settings: Settings, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    await store.set_throttle(Throttle(WABA_ID, now_ms() + 600_000, 80008))
    bad = failures(await run_doctor(settings))
    check = bad.pop(f"WABA {WABA_ID}: throttling")
    assert bad == {} and check.verdict == "WARN"  # syncs wait for Meta; webhooks arrive
    assert check.detail.startswith("Meta throttled this WABA (code 80008) until ")
    assert check.fix.startswith("wait until ")
    assert sim[0].calls == []


async def test_80008_from_meta_is_stored(
    settings: Settings, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    sim[0].fail(WABA_ID, "80008", regain_min=7)
    before = now_ms()
    checks = await run_doctor(settings)
    assert verdicts(checks) == {f"WABA {WABA_ID}: throttling": "WARN"}
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


async def test_no_channel_warns(settings: Settings, store: Store) -> None:
    checks = await run_doctor(settings)
    assert verdicts(checks) == {"channels": "WARN"}
    assert "\ntemplate-sync channel add --workspace WS" in failures(checks)["channels"].fix


async def test_failing_relay_warns_with_its_fix(
    settings: Settings, tenant: Tenant, store: Store
) -> None:
    """A warning per relay with failed deliveries, none for one without; a pass once
    retried (and nothing at all without relays: the healthy setup above)."""
    await subscribed(settings)
    await store.add_relay("https://other.example.com/hook", ["messages"], None, now_ms())
    relay = await store.add_relay("https://app.example.com/hook", [], "backend", now_ms())
    await failed_deliveries(store, 3, "HTTP 503")
    checks = await run_doctor(settings)
    assert [check.name for check in checks] == [*HEALTHY, f"relay {relay.id}"]
    assert checks[-1] == Check(
        f"relay {relay.id}", "WARN", "3 deliveries failed (last error: HTTP 503)",
        "fix the app at its URL (template-sync relay list shows it), then:\n"
        f"template-sync relay retry {relay.id}",
    )  # fmt: skip
    await store.retry_relay(relay.id, now_ms())
    checks = await run_doctor(settings)
    assert failures(checks) == {}
    assert checks[-1] == Check("relays", "PASS", "none failing (2 relay(s))")


def test_render_lists_fixes_under_failures_and_warnings() -> None:
    text = render([
        Check("a", "PASS", "fine"),
        Check("longer name", "FAIL", "broken", "do this"),
        Check("b", "WARN", "risky", "why, then:\nrun this"),
    ])  # fmt: skip
    assert text == (
        "PASS  a            fine\n"
        "FAIL  longer name  broken\n"
        "      fix: do this\n"
        "WARN  b            risky\n"
        "      fix: why, then:\n"
        "           run this\n"
        "1 passed, 1 warning, 1 failed"
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
    assert code == 1 and META_TOKEN not in out
    [set_token] = commands(out, f"WABA {WABA_ID}: access token")
    simulator.clear_faults()
    code, _, err = await shell(set_token, env | {"META_TOKEN": "EAAG-rotated"}, tmp_path)
    assert code == 0 and "replaced" in err
    assert (await cli("doctor"))[0] == 0
    [channel] = await store.list_channels(workspace.id)
    assert TokenCipher(settings.encryption_keys).decrypt(channel.access_token_enc) == "EAAG-rotated"
    missing = ("channel", "set-token", "--waba-id", "999", "--access-token-env", "NEW_TOKEN")
    code, _, err = await cli(*missing)
    assert code == 1 and "no channel for WABA 999" in err


# --- what the command line prints ------------------------------------------------------

PATH_WITH_CLI = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
COMMAND_TIMEOUT_S = 30.0


def commands(output: str, name: str) -> list[str]:
    """The lines of check `name`'s fix that are commands, exactly as doctor printed them."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line[6:].startswith(name + " "))
    fix = []
    for line in lines[start + 1 :]:
        if not line.startswith((FIX_PREFIX, FIX_INDENT)):
            break
        fix.append(line.removeprefix(FIX_PREFIX).removeprefix(FIX_INDENT))
    return [line for line in fix if line.startswith(("template-sync ", "printf "))]


def listed(output: str) -> list[str]:
    """Each check line of doctor's output as "VERDICT name"."""
    return [
        f"{line[:4]} {line[6:].split('  ')[0]}"
        for line in output.splitlines()
        if line[:4] in {"PASS", "WARN", "FAIL"}
    ]


async def shell(line: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """`line` pasted into a shell in `cwd`, with the venv's `template-sync` on the PATH."""
    return await run_bounded(["sh", "-c", line], env | {"PATH": PATH_WITH_CLI}, cwd)


async def run_bounded(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """A command that must finish within COMMAND_TIMEOUT_S; killed (and failed) otherwise."""
    process = await asyncio.create_subprocess_exec(
        *args, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{args} did not finish within {COMMAND_TIMEOUT_S} s")
    return process.returncode or 0, out.decode(), err.decode()


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without any TEMPLATE_SYNC_ variable, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPLATE_SYNC_")}
    return env | {"TEMPLATE_SYNC_LOG_FORMAT": "json", "PYTHONPATH": str(REPO)} | values


async def test_quickstart_setup_passes_with_warnings(tmp_path: Path) -> None:
    """`make run`'s defaults (SQLite under ./data, a generated key) and an app secret in
    .env: doctor exits 0 with warnings, --strict exits 1, and the key's fix, pasted, works."""
    (tmp_path / ".env").write_text("TEMPLATE_SYNC_META_APP_SECRET=quickstart-secret\n")
    env = clean_env()
    assert (await run_cli(env, tmp_path, "migrate"))[0] == 0
    service = ServiceProcess(env, tmp_path)  # `make run`: migrate, then serve
    await service.start()
    await service.stop()
    assert (tmp_path / "data" / KEY_FILE).exists()  # generated by serve

    code, out, err = await run_cli(env, tmp_path, "doctor")
    assert code == 0, out + err
    assert listed(out) == [
        "PASS config: app secret", "WARN config: verify token", "WARN config: encryption keys",
        "PASS store: reachable", "PASS store: migrated", "WARN channels",
    ]  # fmt: skip
    assert out.endswith("3 passed, 3 warnings, 0 failed\n")
    assert (await run_cli(env, tmp_path, "doctor", "--strict"))[0] == 1

    [fix] = commands(out, "config: encryption keys")
    key = (tmp_path / "data" / KEY_FILE).read_text().strip()
    assert (await shell(fix, env, tmp_path))[0] == 0
    assert (tmp_path / ".env").read_text().endswith(f"\nTEMPLATE_SYNC_ENCRYPTION_KEYS={key}\n")
    code, out, _ = await run_cli(env, tmp_path, "doctor")
    assert code == 0 and "PASS  config: encryption keys  1 key(s)" in out, out


async def test_printed_fixes_work_when_pasted(
    settings: Settings, sim: tuple[Simulator, str], tmp_path: Path
) -> None:
    """A new store, then a channel under the generated key and an unsubscribed app: each
    fix doctor prints, pasted as printed, makes its check pass, and tokens stay readable."""
    env = service_env(settings, META_TOKEN=META_TOKEN)
    del env["TEMPLATE_SYNC_ENCRYPTION_KEYS"]  # the generated key, as after `make run`
    code, out, _ = await run_cli(env, tmp_path, "doctor")
    # A new PostgreSQL schema exists but is empty; a new SQLite file does not exist yet.
    postgres = settings.database_url.startswith("postgres")
    store_check = "store: migrated" if postgres else "store: reachable"
    assert code == 1 and f"FAIL  {store_check}" in out, out
    [migrate] = commands(out, store_check)
    assert migrate == "template-sync migrate" and (await shell(migrate, env, tmp_path))[0] == 0
    code, out, _ = await run_cli(env, tmp_path, "doctor")
    assert "PASS  store: reachable" in out and "PASS  store: migrated" in out, out

    code, workspace, _ = await run_cli(env, tmp_path, "workspace", "create", "Acme")
    assert code == 0
    add = ("channel", "add", "--workspace", workspace.strip(), "--waba-id", WABA_ID,
           "--access-token-env", "META_TOKEN", "--no-check")  # fmt: skip
    assert (await run_cli(env, tmp_path, *add))[0] == 0  # encrypted with a generated key
    code, out, _ = await run_cli(env, tmp_path, "doctor")
    assert code == 1 and not sim[0].is_subscribed(WABA_ID)
    assert [v for v in listed(out) if not v.startswith("PASS")] == [
        "WARN config: encryption keys",
        f"FAIL WABA {WABA_ID}: subscribed",
    ]
    [key_fix] = commands(out, "config: encryption keys")
    [subscribe_fix] = commands(out, f"WABA {WABA_ID}: subscribed")
    assert subscribe_fix == f"template-sync channel subscribe --waba-id {WABA_ID}"
    for line in (key_fix, subscribe_fix):
        code, _, err = await shell(line, env, tmp_path)
        assert code == 0, err
    code, out, _ = await run_cli(env, tmp_path, "doctor")
    # The token stored under the generated key is read with the key now in .env.
    assert code == 0 and out.endswith("8 passed, 0 warnings, 0 failed\n"), out
    assert sim[0].is_subscribed(WABA_ID)


async def test_printed_relay_fix_works_when_pasted(
    settings: Settings, tenant: Tenant, store: Store, tmp_path: Path
) -> None:
    """A failing relay is a warning (exit 0: the service works, the app misses deliveries);
    its fix, pasted, queues them again."""
    await subscribed(settings)
    relay = await store.add_relay("https://app.example.com/hook", [], None, now_ms())
    await failed_deliveries(store, 1, "timeout after 10 s")
    env = service_env(settings)
    code, out, _ = await run_cli(env, tmp_path, "doctor")
    assert code == 0 and f"WARN relay {relay.id}" in listed(out), out
    assert "1 delivery failed (last error: timeout after 10 s)\n" in out
    [retry] = commands(out, f"relay {relay.id}")
    assert retry == f"template-sync relay retry {relay.id}"
    code, out, err = await shell(retry, env, tmp_path)
    assert (code, out) == (0, "1\n"), err
    code, out, _ = await run_cli(env, tmp_path, "doctor")
    assert code == 0 and "PASS relays" in listed(out), out
    assert out.endswith("9 passed, 0 warnings, 0 failed\n"), out


# --- a store that cannot be opened: one line, whatever the command --------------------


def postgres_url(**parts: str) -> str:
    """The test server's URL with another user or database, and a password (the server
    trusts loopback, so any password does) that no output may show."""
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests need TEMPLATE_SYNC_TEST_POSTGRES_URL (see README)")
    url = urlsplit(POSTGRES_URL)
    user, password = parts.get("user", url.username or "postgres"), url.password or "pw-7f3a9"
    netloc = f"{user}:{password}@{url.hostname}:{url.port or 5432}"
    return urlunsplit((url.scheme, netloc, "/" + parts.get("database", url.path[1:]), "", ""))


async def one_line_error(url: str, command: str, cwd: Path) -> str:
    """Run `command` against `url`: it must fail at once with one line and no password."""
    args = [sys.executable, "-m", "service", *command.split()]
    args += ["--port", str(free_port())] if command == "serve" else []
    code, out, err = await run_bounded(args, clean_env(TEMPLATE_SYNC_DATABASE_URL=url), cwd)
    password = urlsplit(url).password
    assert code == 1 and "Traceback" not in out + err, out + err
    assert password is None or password not in out + err
    if command == "doctor":  # its report on stdout: the store check, its fix under it
        lines = out.splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("FAIL  store: reachable"))
        detail = lines[at].removeprefix("FAIL  store: reachable").strip()
        assert err == "" and lines[at + 1].startswith(FIX_PREFIX), out
        return f"{detail}: {lines[at + 1].removeprefix(FIX_PREFIX)}"
    assert out == "" and err.count("\n") == 1, err
    return err.removeprefix("Error: ").strip()


@pytest.mark.parametrize("command", ["doctor", "migrate", "serve", "workspace list"])
async def test_missing_postgres_database_or_role_is_one_line(command: str, tmp_path: Path) -> None:
    database, role = f"absent_{uuid.uuid4().hex[:8]}", f"absent_{uuid.uuid4().hex[:8]}"
    host = urlsplit(postgres_url()).netloc.rpartition("@")[2]
    user = urlsplit(postgres_url()).username
    line = await one_line_error(postgres_url(database=database), command, tmp_path)
    assert line == (
        f'database "{database}" does not exist on {host}: create it (createdb -h '
        f"{host.replace(':', ' -p ')} -U {user} {database}) or fix TEMPLATE_SYNC_DATABASE_URL"
    )
    line = await one_line_error(postgres_url(user=role), command, tmp_path)
    assert line == (
        f'role "{role}" does not exist on {host}: create it, as a superuser (createuser -h '
        f"{host.replace(':', ' -p ')} {role}), or fix TEMPLATE_SYNC_DATABASE_URL"
    )


def test_wrong_postgres_password_is_explained_without_it() -> None:
    """The test server trusts loopback, so the server's answer is built as asyncpg raises it."""
    url = "postgresql://app:s3cr%40t@db.internal:5433/templates"
    refused = asyncpg.InvalidPasswordError('password authentication failed for user "app"')
    error = connect_failure(url, refused)
    assert str(error) == 'password authentication failed for user "app" on db.internal:5433'
    assert error.fix.startswith("put the role's password in TEMPLATE_SYNC_DATABASE_URL")
    leaky = connect_failure(url, ValueError(f"cannot parse {url} (s3cr@t)"))
    assert "s3cr" not in str(leaky) + leaky.fix and str(leaky).count("***") == 2


@contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """`path` cannot be written while inside; root ignores modes, so as root it is made
    immutable (chattr +i) instead."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], check=False).returncode:
        pytest.skip("running as root, where chattr +i is unavailable: nothing is unwritable")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


async def test_unusable_sqlite_paths_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a database, and not a directory either\n")
    (tmp_path / "folder").mkdir()
    or_fix = "or fix TEMPLATE_SYNC_DATABASE_URL"
    cases = {
        "file/x.db": f"file is not a directory: name another path {or_fix}",
        "file": "it is not a SQLite database: name the service's database file, or a new one, "
        "in TEMPLATE_SYNC_DATABASE_URL",
        "folder": "it is a directory: name a file in TEMPLATE_SYNC_DATABASE_URL, e.g. "
        "sqlite:///folder/template-sync.db",
    }
    for path, why in cases.items():
        exists = (tmp_path / path).exists()  # doctor says to migrate where nothing exists
        for command in ("migrate", "doctor") if exists else ("migrate",):
            line = await one_line_error(f"sqlite:///{path}", command, tmp_path)
            assert line == f"cannot open SQLite database {path}: {why}"
    made = await run_cli(
        clean_env(TEMPLATE_SYNC_DATABASE_URL="sqlite:///folder/t.db"), tmp_path, "migrate"
    )
    assert made[0] == 0
    denied = (
        "permission denied: give the user running template-sync read and write access to it "
        f"and to folder (SQLite adds -wal and -shm files there) {or_fix}"
    )
    with unwritable(tmp_path / "folder" / "t.db"):  # an existing database
        line = await one_line_error("sqlite:///folder/t.db", "serve", tmp_path)
        assert line == f"cannot open SQLite database folder/t.db: {denied}"
    with unwritable(tmp_path / "folder"):  # a new one in a folder it cannot write
        line = await one_line_error("sqlite:///folder/new.db", "migrate", tmp_path)
        assert line == f"cannot open SQLite database folder/new.db: {denied}"
