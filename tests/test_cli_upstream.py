"""`template-sync upstream set|show|remove` and the doctor's upstream and webhooks-only checks,
run as test_cli runs the CLI, against a real template-sync served on loopback as the upstream
(its own SQLite database and tenant), on both backends for the local store."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from click.testing import Result

from service.config import Secret, Settings
from service.crypto import TokenCipher, generate_key
from service.storage import Upstream, open_store

from .conftest import APP_SECRET, VERIFY_TOKEN, Server, add_template, make_tenant, serving
from .service_process import free_port
from .test_cli import Cli, clean_process, failed  # noqa: F401 (an autouse fixture)

REMOTE_TEMPLATES = ("1001", "1002", "1003")
WRONG_TOKEN = "tsk_0000000000000000.not-the-token-of-anyone"
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
WEBHOOKS_ONLY_WABA = "555000111"
DOCTOR_ENV = {
    "TEMPLATE_SYNC_META_APP_SECRET": APP_SECRET,
    "TEMPLATE_SYNC_META_VERIFY_TOKEN": VERIFY_TOKEN,
    "TEMPLATE_SYNC_GRAPH_URL": "http://127.0.0.1:9/v25.0",  # a Graph call fails, never leaves
}
TEMPLATE_LISTS = re.compile(
    r'^template_sync_http_request_duration_seconds_count\{method="GET",'
    r'route="templates",status="(\d+)"\} ([0-9.]+)$',
    re.M,
)


@dataclass
class Remote:
    """The upstream: a template-sync on loopback with one workspace and its bearer token."""

    server: Server
    workspace_id: str
    token: str

    @property
    def url(self) -> str:
        return self.server.base_url

    async def list_calls(self) -> dict[str, float]:
        """GETs of its template list so far, by HTTP status (from its /metrics)."""
        _, text, _ = await self.server.request("GET", "/metrics")
        return {status: float(count) for status, count in TEMPLATE_LISTS.findall(text)}


@pytest.fixture
async def remote(settings: Settings, tmp_path: Path) -> AsyncIterator[Remote]:
    remote_settings = replace(
        settings,
        database_url=f"sqlite:///{tmp_path}/upstream.db",
        data_dir=tmp_path / "upstream-data",
    )
    store = await open_store(remote_settings.database_url)
    try:
        await store.migrate()
        tenant = await make_tenant(store, remote_settings)
        for provider_id in REMOTE_TEMPLATES:
            await add_template(store, tenant, provider_id)
    finally:
        await store.close()
    async with serving(remote_settings) as server:
        yield Remote(server, tenant.workspace_id, tenant.token)


@pytest.fixture
def cli(database_url: str) -> Cli:
    return Cli(database_url, generate_key())


@pytest.fixture
def workspace_id(cli: Cli) -> str:
    return cli.workspace()


async def run(cli: Cli, command: str, *extra: str, input: str | None = None, **env: str) -> Result:
    """The CLI in a thread (it runs its own event loop) while the upstream serves in this one;
    every log line at DEBUG, so that the no-token assertions cover the logs too."""
    env.setdefault("TEMPLATE_SYNC_LOG_LEVEL", "DEBUG")
    return await asyncio.to_thread(cli, command, *extra, input=input, **env)


def set_command(workspace_id: str, url: str, remote_workspace: str, *extra: str) -> str:
    options = f"--workspace {workspace_id} --url {url} --remote-workspace {remote_workspace}"
    return " ".join(("upstream set", options, *extra))


async def set_upstream(
    cli: Cli, workspace_id: str, remote: Remote, *, token: str | None = None, url: str = "",
    remote_workspace: str = "",
) -> Result:  # fmt: skip
    """`upstream set` with the token in UPSTREAM_TOKEN: it must exit 0 and print nothing on
    stdout, the token nowhere."""
    command = set_command(
        workspace_id, url or remote.url, remote_workspace or remote.workspace_id,
        "--token-env UPSTREAM_TOKEN",
    )  # fmt: skip
    token = remote.token if token is None else token
    result = await run(cli, command, UPSTREAM_TOKEN=token)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert token not in result.stderr
    return result


async def stored(cli: Cli, workspace_id: str) -> Upstream | None:
    """The upstream as the CLI's store holds it."""
    store = await open_store(cli.database_url)
    try:
        return await store.get_upstream(workspace_id)
    finally:
        await store.close()


def check_line(result: Result, verdict: str, workspace_id: str, detail: str) -> None:
    """The check's line as `render` prints it, on stderr."""
    line = rf"^{verdict}  upstream of workspace {workspace_id} +{re.escape(detail)}"
    assert re.search(line, result.stderr, re.M), result.stderr


# --- set -------------------------------------------------------------------------------


async def test_set_stores_the_token_encrypted_and_checks_it_with_one_call(
    cli: Cli, workspace_id: str, remote: Remote
) -> None:
    before = await remote.list_calls()
    done = await set_upstream(cli, workspace_id, remote, url=remote.url + "/")
    assert (await remote.list_calls()).get("200", 0) == before.get("200", 0) + 1
    assert sum((await remote.list_calls()).values()) == sum(before.values()) + 1
    confirmation = (
        f"upstream of workspace {workspace_id} set: {remote.url}, remote workspace "
        f"{remote.workspace_id}"
    )
    assert confirmation in done.stderr
    check_line(done, "PASS", workspace_id, "reachable, token accepted, 3 templates")
    assert "1 passed, 0 warnings, 0 failed" in done.stderr
    found = await stored(cli, workspace_id)
    assert found is not None
    assert (found.url, found.remote_workspace) == (remote.url, remote.workspace_id)  # no "/"
    assert remote.token not in found.token_enc
    assert TokenCipher((Secret(cli.key),)).decrypt(found.token_enc) == remote.token


async def test_set_from_stdin_replaces_the_upstream_and_keeps_its_creation_time(
    cli: Cli, workspace_id: str, remote: Remote
) -> None:
    await set_upstream(cli, workspace_id, remote, token=WRONG_TOKEN)
    first = await stored(cli, workspace_id)
    command = set_command(workspace_id, remote.url + "/", remote.workspace_id, "--token-stdin")
    replaced = await run(cli, command, input=f"  {remote.token}  \n")
    assert replaced.exit_code == 0 and replaced.stdout == "", replaced.stderr
    check_line(replaced, "PASS", workspace_id, "reachable, token accepted, 3 templates")
    second = await stored(cli, workspace_id)
    assert first is not None and second is not None
    assert TokenCipher((Secret(cli.key),)).decrypt(second.token_enc) == remote.token
    assert second.created_at == first.created_at and second.updated_at >= first.updated_at
    assert remote.token not in replaced.stderr


async def test_set_without_check_calls_nothing(cli: Cli, workspace_id: str, remote: Remote) -> None:
    before = await remote.list_calls()
    done = await set_upstream(cli, workspace_id, remote, token=WRONG_TOKEN)
    assert "FAIL" in done.stderr  # checked by default
    quiet = await run(
        cli, set_command(workspace_id, remote.url, "other", "--token-env T --no-check"), T="t0k"
    )
    assert quiet.exit_code == 0 and quiet.stdout == ""
    assert "upstream of workspace" in quiet.stderr and "passed" not in quiet.stderr
    assert sum((await remote.list_calls()).values()) == sum(before.values()) + 1
    found = await stored(cli, workspace_id)
    assert found is not None and found.remote_workspace == "other"


async def test_set_with_a_wrong_token_fails_its_check_and_stays_stored(
    cli: Cli, workspace_id: str, remote: Remote
) -> None:
    done = await set_upstream(cli, workspace_id, remote, token=WRONG_TOKEN)
    check_line(done, "FAIL", workspace_id, "the upstream refused the token (HTTP 401")
    fix = (
        f"template-sync upstream set --workspace {workspace_id} --url {remote.url} "
        f"--remote-workspace {remote.workspace_id} --token-env UPSTREAM_TOKEN"
    )
    assert fix in done.stderr
    assert "the upstream is stored; fix the above, then run 'template-sync doctor'" in done.stderr
    assert await stored(cli, workspace_id) is not None
    assert (await remote.list_calls()).get("401") == 1


async def test_set_with_a_wrong_remote_workspace_fails_as_not_found(
    cli: Cli, workspace_id: str, remote: Remote
) -> None:
    done = await set_upstream(cli, workspace_id, remote, remote_workspace="no-such-workspace")
    detail = "the upstream has no workspace no-such-workspace: the remote workspace id is wrong"
    check_line(done, "FAIL", workspace_id, detail)
    assert "--remote-workspace ID --token-env UPSTREAM_TOKEN" in done.stderr


async def test_set_with_a_closed_port_fails_as_unreachable(
    cli: Cli, workspace_id: str, remote: Remote
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    done = await set_upstream(cli, workspace_id, remote, url=closed)
    check_line(done, "FAIL", workspace_id, f"unreachable at {closed}: ")
    assert "check the URL and that this host can reach it" in done.stderr
    found = await stored(cli, workspace_id)
    assert found is not None and found.url == closed


BAD_URLS = [
    ("ftp://upstream.example.com", "must start with http:// or https://"),
    ("upstream.example.com", "must start with http:// or https://"),
    ("https://", "has no host"),
    ("https://user:secret@upstream.example.com", "must not carry a user or password"),
    ("https://user@upstream.example.com", "must not carry a user or password"),
    ("https://upstream.example.com/?token=t", "must not have a query"),
    ("https://upstream.example.com/#top", "must not have a fragment"),
    ("https://upstream.example.com:99999", "not a URL"),
    ("https://upstream example.com", "must not contain spaces"),
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("url", "problem"), BAD_URLS, ids=[u for u, _ in BAD_URLS])
def test_set_refuses_a_bad_url(cli: Cli, workspace_id: str, url: str, problem: str) -> None:
    options = ("--workspace", workspace_id, "--url", url, "--remote-workspace", "7")
    result = cli("upstream set", *options, "--token-env", "T", T="t0k")
    failed(result, 2, problem)
    assert "Invalid value for '--url'" in result.stderr and "t0k" not in result.stderr
    assert asyncio.run(stored(cli, workspace_id)) is None


@pytest.mark.parametrize("sources", ["", "--token-env T --token-stdin"], ids=["neither", "both"])
def test_set_needs_exactly_one_token_source(cli: Cli, workspace_id: str, sources: str) -> None:
    command = set_command(workspace_id, "https://upstream.example.com", "7", sources)
    failed(cli(command, input="t0k\n", T="t0k"), 2, "exactly one of --token-env or --token-stdin")
    assert asyncio.run(stored(cli, workspace_id)) is None


def test_set_refuses_an_empty_token_a_bad_remote_or_an_unknown_workspace(
    cli: Cli, workspace_id: str
) -> None:
    url = "https://upstream.example.com"
    empty = cli(set_command(workspace_id, url, "7", "--token-env T --no-check"), T=" ")
    failed(empty, 1, "no upstream token in the variable T")
    dots = cli(set_command(workspace_id, url, "..", "--token-env T --no-check"), T="t0k")
    failed(dots, 1, "upstream not set: ")
    spaced = cli(set_command(workspace_id, url, "7", "--token-stdin --no-check"), input="a b\n")
    failed(spaced, 1, "upstream not set: ")
    assert "a b" not in spaced.stderr
    assert asyncio.run(stored(cli, workspace_id)) is None
    missing = cli(set_command("nope", url, "7", "--token-env T --no-check"), T="t0k")
    failed(missing, 1, "workspace nope does not exist")


# --- show and remove ---------------------------------------------------------------------


async def test_show_never_prints_the_token(cli: Cli, workspace_id: str, remote: Remote) -> None:
    await set_upstream(cli, workspace_id, remote)
    text = await run(cli, f"upstream show --workspace {workspace_id}")
    assert text.exit_code == 0 and remote.token not in text.stdout + text.stderr
    lines = text.stdout.splitlines()
    assert lines[:4] == [
        f"workspace: {workspace_id}", f"url: {remote.url}",
        f"remote workspace: {remote.workspace_id}", "token: stored (encrypted)",
    ]  # fmt: skip
    assert [line.split(": ")[0] for line in lines[4:]] == ["created", "updated"]
    assert all(ISO_TIME.fullmatch(line.split(": ")[1]) for line in lines[4:])
    as_json = await run(cli, f"upstream show --workspace {workspace_id} --json")
    document = json.loads(as_json.stdout)
    assert remote.token not in as_json.stdout + as_json.stderr
    assert ISO_TIME.fullmatch(document.pop("created_at"))
    assert ISO_TIME.fullmatch(document.pop("updated_at"))
    assert document == {
        "workspace_id": workspace_id, "url": remote.url, "remote_workspace": remote.workspace_id,
        "token": "stored (encrypted)",
    }  # fmt: skip


def test_show_and_remove_without_an_upstream(cli: Cli, workspace_id: str) -> None:
    none = f"workspace {workspace_id} has no upstream: it syncs with Meta through its channels"
    failed(cli(f"upstream show --workspace {workspace_id}"), 1, none)
    failed(cli(f"upstream remove --workspace {workspace_id} --yes"), 1, none)
    failed(cli("upstream show --workspace nope"), 1, "workspace nope does not exist")


async def test_remove_asks_then_forgets_the_upstream_and_its_token(
    cli: Cli, workspace_id: str, remote: Remote
) -> None:
    await set_upstream(cli, workspace_id, remote)
    refused = await run(cli, f"upstream remove --workspace {workspace_id}")
    failed(refused, 1, "nothing deleted: there is no terminal to confirm on; add --yes")
    assert await stored(cli, workspace_id) is not None
    removed = await run(cli, f"upstream remove --workspace {workspace_id} --yes")
    assert removed.exit_code == 0 and removed.stdout == ""
    assert f"removed the upstream of workspace {workspace_id}" in removed.stderr
    assert await stored(cli, workspace_id) is None
    gone = await run(cli, f"upstream show --workspace {workspace_id}")
    failed(gone, 1, f"workspace {workspace_id} has no upstream")


# --- doctor ------------------------------------------------------------------------------


def webhooks_only_channel(cli: Cli, workspace_id: str) -> None:
    command = f"channel add --workspace {workspace_id} --waba-id {WEBHOOKS_ONLY_WABA}"
    cli.created(command, "--webhooks-only")


def doctor_line(result: Result, verdict: str, name: str, detail: str) -> None:
    line = rf"^{verdict}  {re.escape(name)} +{re.escape(detail)}"
    assert re.search(line, result.stdout, re.M), result.stdout


async def test_doctor_warns_of_a_webhooks_only_channel_without_an_upstream(
    cli: Cli, workspace_id: str, remote: Remote
) -> None:
    await asyncio.to_thread(webhooks_only_channel, cli, workspace_id)
    alone = await run(cli, "doctor", **DOCTOR_ENV)
    assert alone.exit_code == 0, alone.stdout  # a warning
    name = f"WABA {WEBHOOKS_ONLY_WABA}: webhooks only"
    detail = f"no Meta token and workspace {workspace_id} has no upstream"
    doctor_line(alone, "WARN", name, detail)
    assert f"template-sync upstream set --workspace {workspace_id} --url BASE" in alone.stdout
    assert "upstream of workspace" not in alone.stdout
    strict = await run(cli, "doctor --strict", **DOCTOR_ENV)
    assert strict.exit_code == 1

    await set_upstream(cli, workspace_id, remote)
    before = await remote.list_calls()
    healthy = await run(cli, "doctor", **DOCTOR_ENV)
    assert healthy.exit_code == 0 and "FAIL" not in healthy.stdout, healthy.stdout
    doctor_line(healthy, "PASS", name, f"no Meta token: workspace {workspace_id} syncs through")
    doctor_line(
        healthy, "PASS", f"upstream of workspace {workspace_id}",
        "reachable, token accepted, 3 templates",
    )  # fmt: skip
    assert sum((await remote.list_calls()).values()) == sum(before.values()) + 1
    assert remote.token not in healthy.stdout + healthy.stderr


async def test_doctor_fails_an_upstream_that_refuses_its_token(
    cli: Cli, workspace_id: str, remote: Remote
) -> None:
    await set_upstream(cli, workspace_id, remote, token=WRONG_TOKEN)
    result = await run(cli, "doctor", **DOCTOR_ENV)
    assert result.exit_code == 1
    name = f"upstream of workspace {workspace_id}"
    doctor_line(result, "FAIL", name, "the upstream refused the token (HTTP 401")
    assert "--token-env UPSTREAM_TOKEN" in result.stdout and WRONG_TOKEN not in result.stdout


async def test_doctor_fails_an_upstream_token_under_a_key_no_longer_configured(
    cli: Cli, workspace_id: str, remote: Remote
) -> None:
    await set_upstream(cli, workspace_id, remote)
    before = await remote.list_calls()
    result = await run(cli, "doctor", TEMPLATE_SYNC_ENCRYPTION_KEYS=generate_key(), **DOCTOR_ENV)
    assert result.exit_code == 1
    doctor_line(
        result, "FAIL", f"upstream of workspace {workspace_id}",
        "stored token was encrypted under a key that is not configured",
    )  # fmt: skip
    assert f"--url {remote.url} --remote-workspace {remote.workspace_id}" in result.stdout
    assert await remote.list_calls() == before  # nothing to call it with
