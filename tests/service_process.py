"""The real `template-sync serve` in a subprocess, and an open-loop webhook sender for it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from service.config import Settings

from .conftest import APP_SECRET, VERIFY_TOKEN, sign
from .waiting import eventually

START_TIMEOUT_S = 20.0
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a `serve` subprocess for `settings`; `extra` overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPLATE_SYNC_")}
    env.update(
        TEMPLATE_SYNC_DATABASE_URL=settings.database_url,
        TEMPLATE_SYNC_META_APP_SECRET=APP_SECRET,
        TEMPLATE_SYNC_META_VERIFY_TOKEN=VERIFY_TOKEN,
        TEMPLATE_SYNC_ENCRYPTION_KEYS=settings.encryption_keys[0].value,
        TEMPLATE_SYNC_GRAPH_URL=settings.graph_url,
        TEMPLATE_SYNC_POLL_ENABLED="false",
        TEMPLATE_SYNC_LOG_FORMAT="json",
        TEMPLATE_SYNC_LOG_LEVEL="WARNING",
        PYTHONPATH=str(REPO),  # for `-m tests.fault_server` from another working directory
    )
    env.update(extra)
    return env


async def run_cli(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    """`python -m service ARGS` as a user runs it: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


@dataclass
class ServiceProcess:
    """One `serve` process at a time on a fixed port; restartable after a kill.

    A plain Popen polled from the event loop: asyncio's child watcher sometimes loses the
    exit status of a process that dies at once and reports 255.
    """

    env: dict[str, str]
    cwd: Path
    command: Sequence[str] = ("-m", "service", "serve")
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        with (self.cwd / "service.log").open("ab") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220 (starts at once)
                [sys.executable, *self.command, "--port", str(self.port)],
                env=self.env, cwd=self.cwd, stdout=log, stderr=log,
            )  # fmt: skip
        process = self.process
        async with aiohttp.ClientSession() as session:

            async def healthy() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"service exited with {process.returncode}")
                try:
                    async with session.get(self.url + "/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(healthy, START_TIMEOUT_S, message=self._not_healthy)

    def _not_healthy(self) -> str:
        log = (self.cwd / "service.log").read_text(errors="replace")
        return f"service did not become healthy; its log ends:\n{log[-3000:]}"

    async def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return await exit_code(self.process, timeout_s)


async def exit_code(process: subprocess.Popen[bytes], timeout_s: float = 30) -> int:
    """The exit status of a process that is stopping; fails if it is still running after
    `timeout_s`."""
    await eventually(
        lambda: process.poll() is not None, timeout_s, message=f"process {process.pid} did not stop"
    )
    return process.returncode


@dataclass
class Ledger:
    """What an open-loop sender saw: every delivery sent is acked, refused or failed."""

    outcome: dict[int, str] = field(default_factory=dict)

    def counts(self) -> Counter[str]:
        return Counter(self.outcome.values())

    def ids(self, outcome: str) -> list[int]:
        return [i for i, seen in self.outcome.items() if seen == outcome]


async def send_open_loop(
    url: str, bodies: Sequence[bytes], rate_per_s: float, ledger: Ledger, timeout_s: float = 3
) -> None:
    """Send each body at its scheduled time whatever the answers (open loop)."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(index: int, body: bytes) -> None:
            headers = {"X-Hub-Signature-256": sign(body), "Content-Type": "application/json"}
            try:
                async with session.post(url + "/webhooks/meta", data=body, headers=headers) as resp:
                    await resp.read()
                    ledger.outcome[index] = "acked" if resp.status == 200 else "refused"
            except (aiohttp.ClientError, TimeoutError):
                ledger.outcome[index] = "failed"

        tasks = []
        for index, body in enumerate(bodies):
            delay = started + index / rate_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index, body)))
        await asyncio.gather(*tasks)
