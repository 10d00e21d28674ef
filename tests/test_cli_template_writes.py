"""`template-sync template create` and `template delete` as a user runs them, on both
backends, against the Meta simulator: what Meta and the store hold afterwards, and `--wait`
ending with the verdict a running `serve` receives from the simulator's review webhook."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from service.cli import main
from service.config import Settings
from service.simulator import Simulator
from service.storage import Store, Template, TemplateFilter

from .conftest import APP_SECRET, META_TOKEN, WABA_ID, Tenant, simulated
from .service_process import ServiceProcess, exit_code, run_cli, service_env
from .test_cli import failed
from .test_cli_relays import refused
from .waiting import eventually

OTHER_WABA = "200300400500600"
BODY = {"type": "BODY", "text": "Your order {{1}} has shipped."}
WAIT_TIMEOUT_S = 30
# `python -m service` with Ctrl-C raising KeyboardInterrupt, as on a terminal, even when these
# tests run where SIGINT is ignored (a background job of a script), which a child inherits.
AS_ON_A_TERMINAL = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('service', run_name='__main__', alter_sys=True)"
)


@dataclass
class Meta:
    """The simulator as the CLI's Graph API, and the CLI's environment pointing at it."""

    sim: Simulator
    env: dict[str, str]
    cwd: Path
    workspace_id: str

    async def cli(self, *args: str) -> tuple[int, str, str]:
        return await run_cli(self.env, self.cwd, "template", *args)

    async def create(self, path: Path, *extra: str) -> tuple[int, str, str]:
        return await self.cli("create", "--workspace", self.workspace_id, "--file", str(path),
                              *extra)  # fmt: skip

    async def created(self, path: Path, *extra: str) -> int:
        """`create`'s local id: stdout is that id alone on a line."""
        code, out, err = await self.create(path, *extra)
        assert code == 0, err
        assert out.endswith("\n") and out.count("\n") == 1 and out.strip().isdecimal(), out
        return int(out)

    def graph_calls(self, method: str) -> int:
        return sum(call.method == method for call in self.sim.calls)

    def start(self, *args: str) -> Started:
        """`template ARGS` in the background: no terminal on stdin, Ctrl-C as on a terminal."""
        out, err = self.cwd / "cli.out", self.cwd / "cli.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-c", AS_ON_A_TERMINAL, "template", *args], env=self.env,
                cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
            )  # fmt: skip
        return Started(process, out, err)


@dataclass
class Started:
    """A CLI process and the files its stdout and stderr go to."""

    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    def said(self) -> str:
        return self.err.read_text()


@pytest.fixture
async def meta(settings: Settings, tenant: Tenant, tmp_path: Path) -> AsyncIterator[Meta]:
    sim = Simulator(app_secret=APP_SECRET, review_delay_s=None)  # tests that review turn it on
    async with simulated(sim, WABA_ID) as (_, graph_url):
        env = service_env(replace(settings, graph_url=graph_url))
        yield Meta(sim, env, tmp_path, tenant.workspace_id)


def template_file(directory: Path, name: str = "order_shipped", **fields: Any) -> Path:
    """A create body as a user writes it, in a file."""
    body = {"name": name, "language": "en_US", "category": "UTILITY", "components": [BODY]}
    path = directory / f"{name}.json"
    path.write_text(json.dumps({**body, **fields}))
    return path


async def stored(store: Store, meta: Meta, template_id: int) -> Template:
    found = await store.get_template(meta.workspace_id, template_id)
    assert found is not None
    return found


async def test_create_prints_the_local_id_of_what_meta_created(
    meta: Meta, store: Store, tmp_path: Path
) -> None:
    template_id = await meta.created(template_file(tmp_path))
    template = await stored(store, meta, template_id)
    [at_meta] = meta.sim.templates(WABA_ID)
    assert (template.provider_id, template.waba_id) == (str(at_meta["id"]), WABA_ID)
    assert (template.name, template.language, template.category, template.status) == (
        "order_shipped", "en_US", "UTILITY", "PENDING",
    )  # fmt: skip
    history = await store.template_history(meta.workspace_id, template_id) or []
    assert [(event.row.event, event.row.source) for event in history] == [
        ("CREATED", "api"), ("PENDING", "api"),
    ]  # fmt: skip
    assert meta.graph_calls("POST") == 1


@pytest.mark.parametrize(
    ("name", "exit_code", "verdict"),
    [("order_shipped", 0, "APPROVED"), ("reject_order_shipped", 3, "REJECTED (INVALID_FORMAT)")],
)
async def test_wait_ends_with_the_verdict_serve_receives(
    meta: Meta, store: Store, tmp_path: Path, name: str, exit_code: int, verdict: str
) -> None:
    service = ServiceProcess(meta.env, tmp_path)
    await service.start()
    try:
        meta.sim.set_webhook(service.url + "/webhooks/meta")
        meta.sim.review_delay_s = 1.0  # the CLI is waiting on the history when it comes
        code, out, err = await meta.create(template_file(tmp_path, name), "--wait",
                                           "--timeout", str(WAIT_TIMEOUT_S))  # fmt: skip
    finally:
        await service.stop()
    assert code == exit_code, err
    template = await stored(store, meta, int(out))
    assert out == f"{template.id}\n"
    assert f"waiting up to {WAIT_TIMEOUT_S} s for Meta's review of template {template.id}" in err
    assert "receiving Meta's webhooks or polling" in err
    assert err.endswith(f"template {template.id} ({name}, en_US): {verdict}\n"), err
    assert (template.status, template.status_source) == (verdict.split()[0], "webhook")
    assert [hook.status for hook in meta.sim.webhooks] == [200]


async def test_wait_out_of_time_exits_4(meta: Meta, store: Store, tmp_path: Path) -> None:
    code, out, err = await meta.create(template_file(tmp_path), "--wait", "--timeout", "0.5")
    assert code == 4, err
    assert err.endswith(f"timed out after 0.5 s: template {int(out)} is still in review (exit 4)\n")
    assert (await stored(store, meta, int(out))).status == "PENDING"


async def test_wait_for_a_template_meta_approved_at_once_returns_at_once(
    meta: Meta, tmp_path: Path
) -> None:
    """Nothing to wait for (and no service running): the status Meta answered is final."""
    meta.sim.create_status = "APPROVED"
    code, out, err = await meta.create(template_file(tmp_path), "--wait")
    assert code == 0, err
    assert err.endswith(f"template {int(out)} (order_shipped, en_US): APPROVED\n")


async def test_ctrl_c_stops_waiting_cleanly(meta: Meta, store: Store, tmp_path: Path) -> None:
    cli = meta.start("create", "--workspace", meta.workspace_id, "--file",
                     str(template_file(tmp_path)), "--wait")  # fmt: skip
    await eventually(lambda: "waiting up to" in cli.said(), WAIT_TIMEOUT_S)
    cli.process.send_signal(signal.SIGINT)
    assert await exit_code(cli.process, WAIT_TIMEOUT_S) == 130, cli.said()
    template_id = int(cli.out.read_text())
    said = cli.said()
    assert said.endswith(f"stopped waiting: template {template_id} is still in review\n"), said
    assert "Traceback" not in said and "Aborted" not in said
    assert (await stored(store, meta, template_id)).status == "PENDING"


def test_a_bad_file_is_one_line_and_reaches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is checked before the settings are read: no store, no Graph call."""
    monkeypatch.chdir(tmp_path)
    no_settings = {name: None for name in os.environ if name.startswith("TEMPLATE_SYNC_")}
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"name": "order_shipped",}')
    wrong = template_file(tmp_path, "Order Shipped", language="english", category="PROMO",
                          components=[{"type": "HEADER"}], colour="red")  # fmt: skip
    cases = [
        (tmp_path / "missing.json", "cannot read", "No such file or directory"),
        (tmp_path, "cannot read", "Is a directory"),
        (bad_json, "bad.json is not JSON", "line 1 column 26"),
        (wrong, "Order Shipped.json: colour: The colour field is not accepted", "name: The name"),
    ]
    for path, message, detail in cases:
        args = ["template", "create", "--workspace", "ws", "--file", str(path)]
        result = CliRunner().invoke(main, args, env=no_settings)
        failed(result, 1, message)
        assert detail in result.stderr and result.stderr.count("\n") == 1, result.stderr
    fields = ("language:", "category:", "components: The components field must hold")
    for field in fields:  # the last case names every wrong field
        assert field in result.stderr


async def test_metas_refusal_is_one_line_with_its_detail(
    meta: Meta, store: Store, tmp_path: Path
) -> None:
    no_text = template_file(tmp_path, components=[{"type": "BODY"}])
    code, out, err = await meta.create(no_text)
    refused((code, out, err), 1, "Meta refused the template: The BODY component needs a text.")
    assert "(Graph code 100/2388044, fbtrace_id A" in err.splitlines()[-1]
    assert meta.sim.templates(WABA_ID) == []
    assert await store.list_templates(meta.workspace_id, TemplateFilter(), 0, 10) == ([], 0)


async def test_a_name_already_here_is_refused_before_meta(meta: Meta, tmp_path: Path) -> None:
    path = template_file(tmp_path)
    await meta.created(path)
    refused(await meta.create(path), 1, "Template already exists")
    assert meta.graph_calls("POST") == 1


async def test_waba_id_names_the_channel(meta: Meta, store: Store, tmp_path: Path) -> None:
    meta.sim.add_waba(OTHER_WABA, META_TOKEN)
    channel = await store.channel_for_waba(WABA_ID)
    assert channel is not None
    await store.add_channel(meta.workspace_id, OTHER_WABA, channel.access_token_enc, 0)
    path = template_file(tmp_path)
    refused(await meta.create(path), 1, "waba_id: The waba_id field is required")
    template_id = await meta.created(path, "--waba-id", OTHER_WABA)
    assert (await stored(store, meta, template_id)).waba_id == OTHER_WABA
    assert [t["name"] for t in meta.sim.templates(OTHER_WABA)] == ["order_shipped"]
    named = template_file(tmp_path, "other_name", waba_id=WABA_ID)
    refused(await meta.create(named, "--waba-id", OTHER_WABA), 2, "differs from the file's")


async def test_delete_at_meta_keeps_the_row_and_its_history(
    meta: Meta, store: Store, tmp_path: Path
) -> None:
    template_id = await meta.created(template_file(tmp_path))
    delete = ("delete", "--workspace", meta.workspace_id, str(template_id))
    asked = meta.start(*delete)  # no --yes, and no terminal to ask on
    assert await exit_code(asked.process, WAIT_TIMEOUT_S) == 1
    assert "nothing deleted: there is no terminal to confirm on" in asked.said()
    assert meta.graph_calls("DELETE") == 0
    delete = (*delete, "--yes")
    code, out, err = await meta.cli(*delete)
    assert (code, out) == (0, ""), err
    assert f"deleted template {template_id} (order_shipped, en_US; Meta id" in err
    assert [t["status"] for t in meta.sim.templates(WABA_ID)] == ["DELETED"]
    assert (await stored(store, meta, template_id)).status == "DELETED"
    history = await store.template_history(meta.workspace_id, template_id) or []
    assert [(event.row.new_status, event.row.source) for event in history][-1] == ("DELETED", "api")
    again = await meta.cli(*delete)
    assert again[0] == 0 and meta.graph_calls("DELETE") == 1  # nothing left to delete at Meta
    missing = await meta.cli("delete", "--workspace", meta.workspace_id, "999", "--yes")
    refused(missing, 1, f"workspace {meta.workspace_id} has no template 999")
