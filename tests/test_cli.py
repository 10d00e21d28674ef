"""The `template-sync` command line, driven for real on both backends.

Creating commands print the new id alone on stdout; logs and errors go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pty
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.fernet import Fernet

from service.cli import main
from service.config import Secret
from service.crypto import TokenCipher, generate_key, hash_secret, token_id_of
from service.simulator import Simulator
from service.storage import Store, TemplateFilter, open_store

from .conftest import APP_SECRET, simulated

VENV_BIN = Path(sys.executable).parent
WABA = "102290129340398"
META_TOKEN = "EAAG-secret-meta-token-value"
TOKEN_LINE = re.compile(r"tsk_[0-9a-f]{16}\.[A-Za-z0-9_-]{43}\n")
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@dataclass
class Cli:
    """Runs the CLI in a clean working directory against one database."""

    database_url: str
    key: str

    def __call__(self, command: str, *extra: str, input: str | None = None, **env: str) -> Result:
        """Run `command` (split like a shell would) followed by `extra` arguments."""
        args = [*shlex.split(command), *extra]
        environ = {
            "TEMPLATE_SYNC_DATABASE_URL": self.database_url,
            "TEMPLATE_SYNC_ENCRYPTION_KEYS": self.key,
            "TEMPLATE_SYNC_LOG_FORMAT": "json",
            **env,
        }
        return CliRunner().invoke(main, args, input=input, env=environ, catch_exceptions=False)

    def ok(self, command: str, *extra: str, input: str | None = None, **env: str) -> Result:
        result = self(command, *extra, input=input, **env)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        return result

    def created(self, command: str, *extra: str, input: str | None = None, **env: str) -> str:
        """Run a creating command; its stdout must be exactly one line, the new id."""
        stdout = self.ok(command, *extra, input=input, **env).stdout
        assert stdout.endswith("\n") and stdout.count("\n") == 1, stdout
        return stdout.removesuffix("\n")

    def workspace(self, name: str = "Acme") -> str:
        return self.created("workspace create", name)

    def channel(self, workspace_id: str, waba_id: str = WABA) -> str:
        command = f"channel add --workspace {workspace_id} --waba-id {waba_id} --no-check"
        return self.created(command, "--access-token-env", "META_TOKEN", META_TOKEN=META_TOKEN)

    def template(self, workspace_id: str, provider_id: str, *extra: str) -> int:
        command = (
            f"template add --workspace {workspace_id} --waba-id {WABA} "
            f"--provider-id {provider_id} --name t_{provider_id} --language en_US"
        )
        return int(self.created(command, *extra))


def failed(result: Result, exit_code: int, message: str) -> None:
    """An error: nothing on stdout, a message on stderr, no traceback."""
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert isinstance(result.exception, SystemExit)


def with_store(url: str, action: Callable[[Store], Any]) -> Any:
    async def run() -> Any:
        store = await open_store(url)
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


@pytest.fixture(autouse=True)
def clean_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No `.env`, `data/` or TEMPLATE_SYNC_* variable leaks in; the CLI's log set-up leaks out."""
    for name in list(os.environ):
        if name.startswith("TEMPLATE_SYNC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def cli(database_url: str) -> Cli:
    return Cli(database_url, generate_key())


@pytest.fixture
def workspace_id(cli: Cli) -> str:
    return cli.workspace()


def test_migrate_applies_once(cli: Cli) -> None:
    first = cli.ok("migrate")
    assert first.stdout == ""
    applied = re.search(r"\((\d+) migrations applied now\)", first.stderr)
    assert applied and int(applied.group(1)) >= 1, first.stderr
    second = cli.ok("migrate")
    assert "(0 migrations applied now)" in second.stderr


def test_workspace_create_prints_only_the_uuid(cli: Cli) -> None:
    created = cli.workspace("Acme")
    assert str(uuid.UUID(created)) == created
    found = with_store(cli.database_url, lambda store: store.get_workspace(created))
    assert found is not None and found.name == "Acme"


def test_workspace_create_json(cli: Cli) -> None:
    document = json.loads(cli.created("workspace create 'Acme Ltd' --json"))
    assert document["name"] == "Acme Ltd"
    assert document["id"] == str(uuid.UUID(document["id"]))


WORKSPACES_HEADER = "ID  CREATED  CHANNELS  ACTIVE_TOKENS  TEMPLATES  PENDING  NAME"


def test_workspace_list_with_what_each_holds(cli: Cli) -> None:
    assert cli.ok("workspace list").stdout == WORKSPACES_HEADER + "\n"
    first, second = cli.workspace("First"), cli.workspace("Second one")
    cli.channel(first)
    cli.template(first, "1001")
    cli.template(first, "1002", "--status", "APPROVED")
    cli.ok(f"token create --workspace {first}")
    revoked = token_id_of(cli.ok(f"token create --workspace {first}").stdout.strip())
    cli.ok(f"token revoke {revoked}")
    header, *lines = cli.ok("workspace list").stdout.splitlines()
    assert header.split() == WORKSPACES_HEADER.split()
    rows = {line.split()[0]: line.split()[2:] for line in lines}
    assert rows == {
        first: ["1", "1", "2", "1", "First"],
        second: ["0", "0", "0", "0", "Second", "one"],
    }
    listed = {w["id"]: w for w in json.loads(cli.ok("workspace list --json").stdout)}
    assert listed[second]["name"] == "Second one"
    assert ISO_TIME.fullmatch(listed[first].pop("created_at"))
    assert listed[first] == {
        "id": first, "name": "First", "channels": 1, "tokens": 2, "active_tokens": 1,
        "templates": 2, "pending_templates": 1, "sync_runs": 0,
    }  # fmt: skip


def test_channel_add_from_env_stores_the_token_encrypted(cli: Cli, workspace_id: str) -> None:
    channel_id = cli.channel(workspace_id)
    assert channel_id == str(uuid.UUID(channel_id))
    channels = with_store(cli.database_url, lambda store: store.list_channels(workspace_id))
    assert [(c.id, c.waba_id) for c in channels] == [(channel_id, WABA)]
    assert META_TOKEN not in channels[0].access_token_enc
    assert TokenCipher((Secret(cli.key),)).decrypt(channels[0].access_token_enc) == META_TOKEN


def test_channel_add_from_stdin(cli: Cli, workspace_id: str) -> None:
    command = (
        f"channel add --workspace {workspace_id} --waba-id {WABA} --access-token-stdin --no-check"
    )
    channel_id = cli.created(command, input=f"  {META_TOKEN}  \n")
    channels = with_store(cli.database_url, lambda store: store.list_channels(workspace_id))
    assert channels[0].id == channel_id
    assert META_TOKEN not in channels[0].access_token_enc
    assert TokenCipher((Secret(cli.key),)).decrypt(channels[0].access_token_enc) == META_TOKEN


def test_channel_add_json(cli: Cli, workspace_id: str) -> None:
    command = (
        f"channel add --workspace {workspace_id} --waba-id {WABA} --access-token-stdin --no-check"
    )
    document = json.loads(cli.created(command, "--json", input=META_TOKEN))
    assert document["workspace_id"] == workspace_id and document["waba_id"] == WABA
    assert document["id"] == str(uuid.UUID(document["id"]))
    assert META_TOKEN not in json.dumps(document)


@pytest.mark.parametrize(
    "token_options",
    ["", "--access-token-env META_TOKEN --access-token-stdin"],
    ids=["neither", "both"],
)
def test_channel_add_needs_exactly_one_token_source(
    cli: Cli, workspace_id: str, token_options: str
) -> None:
    command = f"channel add --workspace {workspace_id} --waba-id {WABA} {token_options}"
    result = cli(command, input=META_TOKEN, META_TOKEN=META_TOKEN)
    failed(result, 2, "exactly one of --access-token-env or --access-token-stdin")
    assert with_store(cli.database_url, lambda store: store.list_channels(workspace_id)) == []


def test_channel_add_rejects_an_empty_token(cli: Cli, workspace_id: str) -> None:
    command = f"channel add --workspace {workspace_id} --waba-id {WABA}"
    empty = cli(command + " --access-token-env META_TOKEN", META_TOKEN="")
    failed(empty, 1, "no access token in the variable META_TOKEN")
    unset = cli(command + " --access-token-env UNSET_TOKEN_VARIABLE")
    failed(unset, 1, "no access token in the variable UNSET_TOKEN_VARIABLE")
    blank_stdin = cli(command + " --access-token-stdin", input="  \n")
    failed(blank_stdin, 1, "no access token in standard input")
    assert with_store(cli.database_url, lambda store: store.list_channels(workspace_id)) == []


def test_channel_add_duplicate_waba(cli: Cli, workspace_id: str) -> None:
    cli.channel(workspace_id)
    other = cli.workspace("Other")
    for target in (workspace_id, other):
        command = f"channel add --workspace {target} --waba-id {WABA} --access-token-env T"
        failed(cli(command, T="another-token"), 1, f"WABA {WABA} already has a channel")
    assert with_store(cli.database_url, lambda store: store.list_channels(other)) == []


def test_channel_add_unknown_workspace(cli: Cli) -> None:
    missing = str(uuid.uuid4())
    command = f"channel add --workspace {missing} --waba-id {WABA} --access-token-env T"
    failed(cli(command, T=META_TOKEN), 1, f"workspace {missing} does not exist")


@pytest.mark.parametrize("waba_id", ["waba-1", "12.5", "", "-5", "١٢٣"])
def test_channel_add_rejects_a_non_numeric_waba_id(
    cli: Cli, workspace_id: str, waba_id: str
) -> None:
    command = f"channel add --workspace {workspace_id} --access-token-env T --waba-id"
    failed(cli(command, waba_id, T=META_TOKEN), 2, "numeric")


def test_token_create_and_revoke(cli: Cli, workspace_id: str) -> None:
    result = cli.ok(f"token create --workspace {workspace_id} --name crm")
    assert TOKEN_LINE.fullmatch(result.stdout), result.stdout
    token = result.stdout.strip()
    token_id = token_id_of(token)
    assert token_id is not None
    stored = with_store(cli.database_url, lambda store: store.find_token(token_id))
    assert stored.workspace_id == workspace_id and stored.name == "crm"
    assert stored.token_hash == hash_secret(token) and stored.revoked_at is None
    assert stored.read_only is False  # read-write unless asked

    revoked = cli.ok(f"token revoke tsk_{token_id}")
    assert revoked.stdout == ""
    assert f"revoked tsk_{token_id}" in revoked.stderr
    stored = with_store(cli.database_url, lambda store: store.find_token(token_id))
    assert stored.revoked_at is not None

    failed(cli(f"token revoke {token_id}"), 1, f"token tsk_{token_id} was revoked already")
    failed(cli("token revoke 0123456789abcdef"), 1, "no token tsk_0123456789abcdef;")


def test_token_create_json(cli: Cli, workspace_id: str) -> None:
    document = json.loads(cli.created(f"token create --workspace {workspace_id} --json"))
    assert TOKEN_LINE.fullmatch(document["token"] + "\n")
    assert document["id"] == "tsk_" + str(token_id_of(document["token"]))
    assert document["token"].startswith(document["id"] + ".")  # the id is the part before the dot
    assert document["workspace_id"] == workspace_id and document["read_only"] is False


def test_token_create_read_only(cli: Cli, workspace_id: str) -> None:
    result = cli.ok(f"token create --workspace {workspace_id} --read-only --name dashboard")
    assert TOKEN_LINE.fullmatch(result.stdout), result.stdout  # the token alone, as ever
    token_id = token_id_of(result.stdout.strip())
    assert token_id is not None
    stored = with_store(cli.database_url, lambda store: store.find_token(token_id))
    assert stored.read_only is True and stored.name == "dashboard"
    document = json.loads(
        cli.created(f"token create --workspace {workspace_id} --read-only --json")
    )
    assert document["read_only"] is True


def test_token_create_for_an_unknown_workspace(cli: Cli) -> None:
    failed(cli("token create --workspace nope"), 1, "workspace nope does not exist")


def test_template_add_prints_the_local_id_and_defaults_to_pending(
    cli: Cli, workspace_id: str
) -> None:
    cli.channel(workspace_id)
    first = cli.template(workspace_id, "1001")
    second = cli.template(workspace_id, "1002", "--status", "approved", "--category", "UTILITY")
    assert second != first
    listed, _ = with_store(
        cli.database_url,
        lambda store: store.list_templates(workspace_id, TemplateFilter(), 0, 100),
    )
    found = {t.id: t for t in listed}
    assert found[first].status == "PENDING" and found[first].provider_id == "1001"
    assert found[first].category is None
    assert found[second].status == "APPROVED" and found[second].category == "UTILITY"
    assert (found[second].name, found[second].language) == ("t_1002", "en_US")


def test_template_add_json(cli: Cli, workspace_id: str) -> None:
    cli.channel(workspace_id)
    command = (
        f"template add --workspace {workspace_id} --waba-id {WABA} --provider-id 77 "
        "--name n --language en --json"
    )
    document = json.loads(cli.created(command))
    assert isinstance(document["id"], int) and document["provider_id"] == "77"


def template_add(workspace_id: str, provider_id: str = "1001") -> str:
    return (
        f"template add --workspace {workspace_id} --waba-id {WABA} "
        f"--provider-id {provider_id} --name n --language en"
    )


def test_template_add_rejects_an_unknown_status(cli: Cli, workspace_id: str) -> None:
    cli.channel(workspace_id)
    failed(cli(template_add(workspace_id), "--status", "LIVE"), 2, "--status")


def test_template_add_rejects_a_non_numeric_provider_id(cli: Cli, workspace_id: str) -> None:
    cli.channel(workspace_id)
    failed(cli(template_add(workspace_id, "abc")), 2, "numeric")


def test_template_add_needs_a_channel_in_that_workspace(cli: Cli, workspace_id: str) -> None:
    failed(
        cli(template_add(workspace_id)),
        1,
        f"workspace {workspace_id} has no channel for WABA {WABA}",
    )
    cli.channel(cli.workspace("Other"))  # the WABA belongs to another workspace
    failed(cli(template_add(workspace_id)), 1, f"has no channel for WABA {WABA}")


def test_template_add_duplicate_provider_id(cli: Cli, workspace_id: str) -> None:
    cli.channel(workspace_id)
    cli.template(workspace_id, "1001")
    failed(cli(template_add(workspace_id)), 1, f"template 1001 of WABA {WABA} exists already")


def test_templates_table(cli: Cli, workspace_id: str) -> None:
    cli.channel(workspace_id)
    pending = cli.template(workspace_id, "1001")
    approved = cli.template(workspace_id, "1002", "--status", "APPROVED")
    rejected = cli.template(workspace_id, "1003", "--status", "REJECTED")

    header, *rows = cli.ok(f"templates --workspace {workspace_id}").stdout.splitlines()
    assert header.split() == ["ID", "PROVIDER_ID", "NAME", "LANGUAGE", "STATUS", "SOURCE"]
    assert [row.split() for row in rows] == [
        [str(pending), "1001", "t_1001", "en_US", "PENDING", "api"],
        [str(approved), "1002", "t_1002", "en_US", "APPROVED", "api"],
        [str(rejected), "1003", "t_1003", "en_US", "REJECTED", "api"],
    ]
    status_column = header.index("STATUS")
    assert all(row[status_column:].split()[0] == row.split()[4] for row in rows)  # aligned

    filtered = cli.ok(f"templates --workspace {workspace_id} --status approved").stdout
    assert [row.split()[0] for row in filtered.splitlines()[1:]] == [str(approved)]
    several = cli.ok(f"templates --workspace {workspace_id}", "--status", "APPROVED, rejected")
    assert [row.split()[0] for row in several.stdout.splitlines()[1:]] == [
        str(approved),
        str(rejected),
    ]
    as_json = json.loads(cli.ok(f"templates --workspace {workspace_id} --json").stdout)
    assert [(t["id"], t["status"]) for t in as_json] == [
        (pending, "PENDING"),
        (approved, "APPROVED"),
        (rejected, "REJECTED"),
    ]


def test_templates_of_an_empty_workspace_prints_the_header(cli: Cli, workspace_id: str) -> None:
    stdout = cli.ok(f"templates --workspace {workspace_id}").stdout
    assert stdout == "ID  PROVIDER_ID  NAME  LANGUAGE  STATUS  SOURCE\n"


def test_templates_of_an_unknown_workspace(cli: Cli) -> None:
    missing = str(uuid.uuid4())
    failed(cli(f"templates --workspace {missing}"), 1, f"workspace {missing} does not exist")


def test_deliveries_on_an_empty_store(cli: Cli) -> None:
    assert cli.ok("deliveries").stdout == ""
    assert cli.ok("deliveries --quarantined --body").stdout == ""


def test_keys_generate_prints_a_fernet_key(cli: Cli) -> None:
    first = cli.created("keys generate")
    assert cli.created("keys generate") != first
    encrypted = Fernet(first.encode()).encrypt(b"meta-token").decode()
    assert TokenCipher((Secret(first),)).decrypt(encrypted) == "meta-token"


def test_bad_configuration_is_a_clear_error(cli: Cli) -> None:
    result = cli("workspace list", TEMPLATE_SYNC_PORT="eighty")
    failed(result, 1, "TEMPLATE_SYNC_PORT must be a number")


def test_bad_encryption_key_is_a_clear_error(cli: Cli, workspace_id: str) -> None:
    command = (
        f"channel add --workspace {workspace_id} --waba-id {WABA} --access-token-env T --no-check"
    )
    result = cli(command, T=META_TOKEN, TEMPLATE_SYNC_ENCRYPTION_KEYS="not-a-fernet-key")
    failed(result, 1, "TEMPLATE_SYNC_ENCRYPTION_KEYS must be Fernet keys")
    assert "not-a-fernet-key" not in result.stderr


def test_serve_with_a_bad_encryption_key_stops_with_one_line(cli: Cli) -> None:
    """`serve` assembles what the app runs on before serving: no traceback from the app."""
    result = cli("serve --port 0", TEMPLATE_SYNC_ENCRYPTION_KEYS="not-a-fernet-key")
    failed(result, 1, "TEMPLATE_SYNC_ENCRYPTION_KEYS must be Fernet keys")
    assert result.stderr.count("\n") == 1 and "not-a-fernet-key" not in result.stderr


def test_unreachable_database_is_a_clear_error() -> None:
    cli = Cli("postgresql://nobody@127.0.0.1:1/none", generate_key())
    failed(cli("workspace list"), 1, "cannot connect to PostgreSQL")


def test_unknown_command_is_a_usage_error(cli: Cli) -> None:
    failed(cli("frobnicate"), 2, "No such command")


def test_entry_points_run_for_real(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPLATE_SYNC_")}
    env |= {
        "TEMPLATE_SYNC_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
        "TEMPLATE_SYNC_ENCRYPTION_KEYS": generate_key(),
        "TEMPLATE_SYNC_LOG_FORMAT": "json",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30, check=False
        )

    script = str(VENV_BIN / "template-sync")
    created = run(script, "workspace", "create", "X")
    assert created.returncode == 0, created.stderr
    assert re.fullmatch(r"[0-9a-f-]{36}\n", created.stdout), created.stdout
    workspace_id = str(uuid.UUID(created.stdout.strip()))

    listed = run(script, "workspace", "list").stdout.splitlines()
    assert [line.split()[0] for line in listed] == ["ID", workspace_id]

    missing = run(script, "templates", "--workspace", "nope")
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert "workspace nope does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr

    helped = run(str(VENV_BIN / "python"), "-m", "service", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "Usage: template-sync" in helped.stdout
    for command in ("migrate", "workspace", "channel", "token", "template", "templates"):
        assert command in helped.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cli.db"]  # no .env, no data/


def test_send_webhook_needs_the_app_secret(cli: Cli) -> None:
    result = cli("send-webhook --waba-id 1 --template-id 2 --name n")
    assert result.exit_code == 1 and result.stdout == ""
    assert "TEMPLATE_SYNC_META_APP_SECRET" in result.stderr and "Traceback" not in result.stderr


def test_send_webhook_to_nothing_is_a_clear_error(cli: Cli) -> None:
    result = cli(
        "send-webhook --url http://127.0.0.1:9/webhooks/meta --waba-id 1 --template-id 2 --name n",
        TEMPLATE_SYNC_META_APP_SECRET="s",
    )
    assert result.exit_code == 1 and "could not reach" in result.stderr
    assert "Traceback" not in result.stderr


def test_keys_rotate_reencrypts_and_reports_what_it_cannot_read(
    cli: Cli, workspace_id: str
) -> None:
    old_key, new_key = cli.key, generate_key()
    cli.channel(workspace_id, "111")
    both = f"{new_key},{old_key}"
    result = cli.ok("keys rotate", TEMPLATE_SYNC_ENCRYPTION_KEYS=both)
    assert "first key" in result.stderr

    async def stored() -> str:
        store = await open_store(cli.database_url)
        try:
            [channel] = await store.list_channels(workspace_id)
            return channel.access_token_enc
        finally:
            await store.close()

    rotated = asyncio.run(stored())
    assert TokenCipher((Secret(new_key),)).decrypt(rotated) == META_TOKEN  # old key not needed
    cli.channel(workspace_id, "222")  # encrypted under old_key, the current key of `cli`
    result = cli("keys rotate", TEMPLATE_SYNC_ENCRYPTION_KEYS=new_key)
    assert result.exit_code == 1 and "222" in result.stderr and "Traceback" not in result.stderr


def tokens_of(cli: Cli, workspace_id: str) -> list[Any]:
    return with_store(cli.database_url, lambda store: store.list_tokens(workspace_id))


def test_token_list_shows_ids_as_the_user_saw_them_and_never_a_secret(
    cli: Cli, workspace_id: str
) -> None:
    first = cli.ok(f"token create --workspace {workspace_id} --name crm").stdout.strip()
    second = cli.ok(f"token create --workspace {workspace_id} --read-only").stdout.strip()
    first_id, second_id = first.split(".")[0], second.split(".")[0]  # tsk_<id>
    cli.ok(f"token revoke {first_id}")
    cli.ok(f"token create --workspace {cli.workspace('Other')}")  # not listed
    result = cli.ok(f"token list --workspace {workspace_id}")
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "CREATED", "REVOKED", "ACCESS", "NAME"]
    cells = {row.split()[0]: row.split()[1:] for row in rows}
    assert sorted(cells) == sorted([first_id, second_id])
    assert ISO_TIME.fullmatch(cells[first_id][1]) and cells[first_id][2:] == ["read-write", "crm"]
    assert ISO_TIME.fullmatch(cells[second_id][0])
    assert cells[second_id][1:] == ["-", "read-only", "-"]
    listed = json.loads(cli.ok(f"token list --workspace {workspace_id} --json").stdout)
    assert {t["id"]: (t["name"], t["revoked"], t["read_only"]) for t in listed} == {
        first_id: ("crm", True, False),
        second_id: (None, False, True),
    }
    assert set(listed[0]) == {"id", "name", "created_at", "revoked", "revoked_at", "read_only"}
    shown = result.stdout + json.dumps(listed)
    for token in (first, second):
        assert token.split(".")[1] not in shown and hash_secret(token) not in shown
    failed(cli("token list --workspace nope"), 1, "workspace nope does not exist")


@pytest.mark.parametrize("form", ["shown", "bare", "whole token", "whole token, spaced"])
def test_token_revoke_takes_the_id_in_any_form_and_never_echoes_a_secret(
    cli: Cli, workspace_id: str, form: str
) -> None:
    token = cli.ok(f"token create --workspace {workspace_id}").stdout.strip()
    shown, secret = token.split(".", 1)
    given = {"shown": shown, "bare": shown.removeprefix("tsk_"), "whole token": token,
             "whole token, spaced": f"  {token} "}[form]  # fmt: skip
    revoked = cli.ok("token revoke", given)
    assert revoked.stdout == "" and f"revoked {shown}" in revoked.stderr
    assert [t.revoked_at is not None for t in tokens_of(cli, workspace_id)] == [True]
    again = cli("token revoke", given)
    failed(again, 1, f"token {shown} was revoked already")
    assert secret not in revoked.stderr + again.stderr


def test_token_revoke_of_an_unknown_or_malformed_id(cli: Cli, workspace_id: str) -> None:
    secret = "s3cr3t-part-of-a-pasted-token"
    failed(cli("token revoke", f"tsk_00ff.{secret}"), 1, "no token tsk_00ff;")
    malformed = cli("token revoke", f"Bearer tsk_00ff.{secret}")
    failed(malformed, 2, "not a token id: give tsk_<id>")
    for result in (cli("token revoke", f"tsk_00ff.{secret}"), malformed, cli("token revoke", "")):
        assert secret not in result.stdout + result.stderr
    assert "tsk_<id>" in cli.ok("token revoke --help").stdout


def test_a_webhooks_only_channel_has_no_token_and_takes_no_token_options(
    cli: Cli, workspace_id: str
) -> None:
    base = f"channel add --workspace {workspace_id} --waba-id 333 --webhooks-only"
    for extra in ("--access-token-stdin", "--access-token-env META_TOKEN", "--subscribe"):
        failed(cli(f"{base} {extra}", META_TOKEN=META_TOKEN), 2, "--webhooks-only takes no token")
    created = cli.created(base)
    [stored] = with_store(cli.database_url, lambda store: store.list_channels(workspace_id))
    assert (stored.id, stored.waba_id, stored.access_token_enc) == (created, "333", None)
    [row] = cli.ok(f"channel list --workspace {workspace_id}").stdout.splitlines()[1:]
    assert row.split()[2:6] == ["333", "none", "(webhooks", "only)"]
    [shown] = json.loads(cli.ok(f"channel list --workspace {workspace_id} --json").stdout)
    assert shown["webhooks_only"] is True
    failed(cli("channel subscribe --waba-id 333"), 1, "WABA 333 routes webhooks only")


def test_channel_list_never_shows_a_token(cli: Cli, workspace_id: str) -> None:
    first = cli.channel(workspace_id, "111")
    other = cli.workspace("Other")
    second = cli.channel(other, "222")
    [stored] = with_store(cli.database_url, lambda store: store.list_channels(workspace_id))
    everything = cli.ok("channel list").stdout
    header, *rows = everything.splitlines()
    assert header.split() == ["ID", "WORKSPACE", "WABA_ID", "META_TOKEN", "CREATED"]
    assert sorted(row.split()[:4] for row in rows) == sorted(
        [[first, workspace_id, "111", "stored"], [second, other, "222", "stored"]]
    )
    mine = json.loads(cli.ok(f"channel list --workspace {workspace_id} --json").stdout)
    assert [(c["id"], c["workspace_id"], c["waba_id"]) for c in mine] == [
        (first, workspace_id, "111")
    ]
    assert ISO_TIME.fullmatch(mine[0]["created_at"]) and len(mine[0]) == 5
    assert mine[0]["webhooks_only"] is False
    for shown in (everything, json.dumps(mine)):
        assert META_TOKEN not in shown and stored.access_token_enc not in shown
    failed(cli("channel list --workspace nope"), 1, "workspace nope does not exist")


def test_channel_remove_keeps_its_templates(cli: Cli, workspace_id: str) -> None:
    cli.channel(workspace_id)
    template_id = cli.template(workspace_id, "1001")
    refused = cli(f"channel remove --waba-id {WABA}")
    failed(refused, 1, "nothing deleted: there is no terminal to confirm on; add --yes")
    assert with_store(cli.database_url, lambda store: store.channel_for_waba(WABA)) is not None
    removed = cli.ok(f"channel remove --waba-id {WABA} --yes")
    assert removed.stdout == "" and "its templates stay" in removed.stderr
    assert with_store(cli.database_url, lambda store: store.channel_for_waba(WABA)) is None
    kept = with_store(cli.database_url, lambda store: store.get_template(workspace_id, template_id))
    assert kept is not None and kept.provider_id == "1001"
    failed(cli(f"channel remove --waba-id {WABA} --yes"), 1, f"no channel for WABA {WABA}")
    help_text = cli.ok("channel remove --help").stdout
    assert "templates stay" in help_text and "no longer updated" in help_text


async def test_channel_subscribe_uses_the_stored_token(cli: Cli, workspace_id: str) -> None:
    """The command doctor prints for an unsubscribed WABA, pasted as is."""
    simulator = Simulator(app_secret=APP_SECRET, app_name="Acme template-sync")
    simulator.add_waba(WABA, META_TOKEN)
    env = {"TEMPLATE_SYNC_META_APP_SECRET": APP_SECRET}
    async with simulated(simulator) as (_, graph_url):
        env["TEMPLATE_SYNC_GRAPH_URL"] = graph_url
        await asyncio.to_thread(cli.channel, workspace_id)
        assert not simulator.is_subscribed(WABA)
        pasted = f"template-sync channel subscribe --waba-id {WABA}"
        done = await asyncio.to_thread(cli.ok, pasted.removeprefix("template-sync "), **env)
        assert simulator.is_subscribed(WABA)
        assert done.stdout == "" and f"PASS  WABA {WABA}: subscribe" in done.stderr
        assert "FAIL" not in done.stderr and META_TOKEN not in done.stderr
        posts = [c for c in simulator.calls if c.method == "POST"]
        again = await asyncio.to_thread(cli.ok, pasted.removeprefix("template-sync "), **env)
        assert re.search(rf"PASS  WABA {WABA}: subscribed +apps: Acme template-sync", again.stderr)
        assert [c for c in simulator.calls if c.method == "POST"] == posts  # none needed
        simulator.add_waba("999")  # Meta knows it, but the stored token cannot reach it
        unknown = await asyncio.to_thread(cli, "channel subscribe --waba-id 999", **env)
        failed(unknown, 1, "no channel for WABA 999; add one with 'channel add'")
        other = await asyncio.to_thread(cli.workspace, "Other")
        await asyncio.to_thread(cli.channel, other, "999")
        denied = await asyncio.to_thread(cli, "channel subscribe --waba-id 999", **env)
        assert denied.exit_code == 1 and "FAIL  WABA 999: access token" in denied.stderr
        assert not simulator.is_subscribed("999") and META_TOKEN not in denied.stderr


def test_template_remove_by_either_id(cli: Cli, workspace_id: str) -> None:
    cli.channel(workspace_id)
    by_id, by_provider, kept = (cli.template(workspace_id, p) for p in ("1001", "1002", "1003"))
    for choice in ("", f"--id {by_id} --provider-id 1002"):
        failed(cli(f"template remove --workspace {workspace_id} {choice}"), 2, "exactly one of")
    refused = cli(f"template remove --workspace {workspace_id} --id {by_id}")
    failed(refused, 1, "nothing deleted: there is no terminal to confirm on")
    cli.ok(f"template remove --workspace {workspace_id} --id {by_id} --yes")
    cli.ok(f"template remove --workspace {workspace_id} --provider-id 1002 --yes")
    listed, _ = with_store(
        cli.database_url, lambda store: store.list_templates(workspace_id, TemplateFilter(), 0, 9)
    )
    assert [t.id for t in listed] == [kept]
    assert by_provider not in [t.id for t in listed]
    failed(
        cli(f"template remove --workspace {workspace_id} --id {by_id} --yes"),
        1,
        f"workspace {workspace_id} has no template {by_id}",
    )
    other = cli.workspace("Other")
    failed(
        cli(f"template remove --workspace {other} --id {kept} --yes"),
        1,
        f"workspace {other} has no template {kept}",
    )
    failed(
        cli(f"template remove --workspace {workspace_id} --provider-id 1002 --yes"),
        1,
        "has no template with Meta id 1002",
    )
    assert "never from Meta" in cli.ok("template remove --help").stdout


def test_workspace_delete_removes_everything_it_holds(cli: Cli, workspace_id: str) -> None:
    cli.channel(workspace_id)
    cli.template(workspace_id, "1001")
    cli.ok(f"token create --workspace {workspace_id}")
    other = cli.workspace("Other")
    refused = cli(f"workspace delete {workspace_id}")
    failed(refused, 1, "nothing deleted: there is no terminal to confirm on; add --yes")
    deleted = cli.ok(f"workspace delete {workspace_id} --yes")
    assert deleted.stdout == ""
    assert "1 channel(s) with their Meta tokens, 1 bearer token(s) (1 active)" in deleted.stderr
    assert [w.id for w in with_store(cli.database_url, lambda s: s.list_workspaces())] == [other]
    failed(cli(f"workspace delete {workspace_id} --yes"), 1, "does not exist")
    cli.channel(other)  # its WABA is free again


def test_deletes_ask_on_a_terminal_and_refuse_with_stdin_closed(
    cli: Cli, workspace_id: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPLATE_SYNC_")}
    env |= {
        "TEMPLATE_SYNC_DATABASE_URL": cli.database_url,
        "TEMPLATE_SYNC_ENCRYPTION_KEYS": cli.key,
        "TEMPLATE_SYNC_LOG_FORMAT": "json",
    }
    command = [str(VENV_BIN / "template-sync"), "workspace", "delete", workspace_id]
    cli.channel(workspace_id)

    def on_a_terminal(answer: str) -> subprocess.CompletedProcess[str]:
        main_fd, terminal = pty.openpty()
        try:
            os.write(main_fd, answer.encode())  # typed ahead: the terminal keeps it
            return subprocess.run(
                command, stdin=terminal, capture_output=True, text=True, env=env,
                cwd=tmp_path, timeout=30, check=False,
            )  # fmt: skip
        finally:
            os.close(terminal)
            os.close(main_fd)

    declined = on_a_terminal("n\n")
    assert declined.returncode == 1 and "Aborted" in declined.stderr, declined.stderr
    assert f"Delete workspace 'Acme' ({workspace_id}) and 1 channel(s)" in declined.stderr
    assert "This cannot be undone. [y/N]" in declined.stderr and declined.stdout == ""
    closed = subprocess.run(
        ["sh", "-c", '"$@" <&-', "sh", *command], capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=30, check=False,
    )  # fmt: skip
    assert closed.returncode == 1 and "no terminal to confirm on" in closed.stderr
    assert "Traceback" not in closed.stderr
    assert with_store(cli.database_url, lambda s: s.get_workspace(workspace_id)) is not None
    accepted = on_a_terminal("y\n")
    assert accepted.returncode == 0, accepted.stderr
    assert with_store(cli.database_url, lambda s: s.get_workspace(workspace_id)) is None


@pytest.mark.parametrize(
    ("given", "stored"),
    [("utility", "UTILITY"), ("Marketing", "MARKETING"), ("AUTHENTICATION", "AUTHENTICATION")],
)
def test_template_add_category_in_any_case_is_stored_upper_case(
    cli: Cli, workspace_id: str, given: str, stored: str
) -> None:
    cli.channel(workspace_id)
    template_id = cli.template(workspace_id, "1001", "--category", given)
    found = with_store(cli.database_url, lambda s: s.get_template(workspace_id, template_id))
    assert found.category == stored


@pytest.mark.parametrize("language", ["en", "en_US", "pt_BR", "zh_CN", "es_AR", "fil", "prs_AF"])
def test_template_add_takes_metas_language_codes(
    cli: Cli, workspace_id: str, language: str
) -> None:
    cli.channel(workspace_id)
    command = template_add(workspace_id).replace("--language en", f"--language {language}")
    template_id = int(cli.created(command))
    found = with_store(cli.database_url, lambda s: s.get_template(workspace_id, template_id))
    assert found.language == language


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--category", "PROMO", "must be one of AUTHENTICATION, MARKETING, UTILITY"),
        ("--category", "", "must be one of"),
        ("--language", "en-US", "must be a Meta language code such as en, en_US"),
        ("--language", "en_us", "must be a Meta language code"),
        ("--language", "EN", "must be a Meta language code"),
        ("--language", "english", "must be a Meta language code"),
        ("--language", "en_US ", "must be a Meta language code"),
    ],
)
def test_template_add_refuses_a_bad_category_or_language(
    cli: Cli, workspace_id: str, option: str, value: str, message: str
) -> None:
    cli.channel(workspace_id)
    command = template_add(workspace_id).removesuffix(" --language en")
    extra = [option, value] + ([] if option == "--language" else ["--language", "en"])
    failed(cli(command, *extra), 2, message)
    assert f"Invalid value for '{option}'" in cli(command, *extra).stderr
    listed, _ = with_store(
        cli.database_url, lambda store: store.list_templates(workspace_id, TemplateFilter(), 0, 9)
    )
    assert listed == []
