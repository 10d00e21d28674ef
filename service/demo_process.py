"""The demo's service as a child process: run with `python -m service` in the demo's working
directory and set up with its CLI, as a user would, so the demo shows the real commands."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .crypto import generate_key

VERIFY_TOKEN = "demo-verify"  # noqa: S105 (the demo's published handshake token)
TOKEN_ENV = "DEMO_META_ACCESS_TOKEN"  # noqa: S105 (a variable name)
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
CLI_TIMEOUT_S = 30.0
# The poller's settings in the demo, far shorter than the defaults: it polls a template whose
# webhook has not come after 2 s, the same workspace again 2 s later at the soonest.
POLL_SETTINGS = {
    "TEMPLATE_SYNC_POLL_GRACE_S": "2",
    "TEMPLATE_SYNC_POLL_INTERVAL_S": "2",
    "TEMPLATE_SYNC_POLL_TICK_S": "0.5",
}


class DemoError(Exception):
    """A demo step got an answer other than the one it expects (the message says both)."""


def service_env(workdir: Path, secret: str, graph_url: str, meta_token: str) -> dict[str, str]:
    """The service's environment: the caller's without its TEMPLATE_SYNC_ settings, plus the
    demo's. Private webhook URLs are allowed because the demo's receivers are on loopback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPLATE_SYNC_")}
    source_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, env.get("PYTHONPATH")]))
    env.update(
        TEMPLATE_SYNC_DATABASE_URL=f"sqlite:///{workdir}/demo.db",
        TEMPLATE_SYNC_META_APP_SECRET=secret,
        TEMPLATE_SYNC_META_VERIFY_TOKEN=VERIFY_TOKEN,
        TEMPLATE_SYNC_GRAPH_URL=graph_url,
        TEMPLATE_SYNC_ENCRYPTION_KEYS=generate_key(),
        # `serve` does not poll: its poller would repair step B's lost webhook before the
        # sync endpoint can show it. The demo runs `template-sync poll` for step D instead,
        # with these short settings (POLL_SETTINGS) so it acts within seconds.
        TEMPLATE_SYNC_POLL_ENABLED="false",
        **POLL_SETTINGS,
        TEMPLATE_SYNC_WEBHOOKS_ALLOW_PRIVATE="true",
        TEMPLATE_SYNC_LOG_FORMAT="json",
    )
    env[TOKEN_ENV] = meta_token
    return env


def prepare(workdir: Path) -> Path:
    """The working directory, created and absolute (the service runs inside it); each run
    starts from an empty database."""
    workdir.mkdir(parents=True, exist_ok=True)
    for leftover in workdir.glob("demo.db*"):
        leftover.unlink()
    return workdir.resolve()


@dataclass(frozen=True)
class ServiceProcess:
    """`python -m service` in `workdir` with `env`: its CLI, and `serve` or `poll` for a
    while."""

    workdir: Path
    env: dict[str, str]

    @property
    def log(self) -> Path:
        return self.workdir / "service.log"

    @property
    def poll_log(self) -> Path:
        return self.workdir / "poller.log"

    async def cli(self, *args: str) -> str:
        """Run `python -m service ARGS`; its stdout, stripped."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", *args, cwd=self.workdir, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise DemoError(f"template-sync {args[0]} took over {CLI_TIMEOUT_S:.0f} s") from None
        if proc.returncode != 0:
            said = err.decode(errors="replace").strip()[-800:]
            command = " ".join(args[:2])
            raise DemoError(f"template-sync {command} failed ({proc.returncode}): {said}")
        return out.decode().strip()

    @asynccontextmanager
    async def serving(self, http: aiohttp.ClientSession) -> AsyncIterator[str]:
        """`serve` on a free loopback port, healthy, for the block; its base URL. Stopped
        gracefully on the way out (killed if it does not stop in time)."""
        port = _free_port()
        proc = await self._start(self.log, "serve", "--port", str(port))
        try:
            url = f"http://127.0.0.1:{port}"
            await self._wait_healthy(http, url, proc)
            yield url
        finally:
            await _stop(proc)

    @asynccontextmanager
    async def polling(self) -> AsyncIterator[asyncio.subprocess.Process]:
        """`template-sync poll`, the poller on its own, for the block; stopped like `serving`.
        A DemoError of the block says so, with the log's tail, when the poller had exited."""
        proc = await self._start(self.poll_log, "poll")
        try:
            yield proc
        except DemoError as error:
            if proc.returncode is None:
                raise
            raise DemoError(f"{error}\nthe poller had exited with {proc.returncode}; log tail:\n"
                            f"{tail(self.poll_log)}") from None  # fmt: skip
        finally:
            await _stop(proc)

    async def _start(self, log: Path, *args: str) -> asyncio.subprocess.Process:
        """`python -m service ARGS` in the background, its stderr appended to `log`."""
        with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "service", *args, cwd=self.workdir, env=self.env,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=handle,
            )  # fmt: skip

    async def _wait_healthy(
        self, http: aiohttp.ClientSession, url: str, proc: asyncio.subprocess.Process
    ) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise DemoError(
                    f"service exited with {proc.returncode}; log tail:\n{tail(self.log)}"
                )
            try:
                async with http.get(url + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise DemoError(
            f"service not healthy after {START_TIMEOUT_S:.0f} s; log tail:\n{tail(self.log)}"
        )


def tail(log: Path, lines: int = 20) -> str:
    """The last `lines` of a process's log, for an error message."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
    await proc.wait()
