"""Durable webhook ingest measured side by side with a bare endpoint and pywa (issue #5).

    make bench                       (installs pywa, then runs this)
    .venv/bin/python bench/ingest.py [--seconds 10] [--connections 64] [--postgres-url URL]

Each server runs alone, pinned to core 0; wrk (64 connections) is pinned to core 1 and
sends distinct signed template-status bodies of ~800 bytes. For this service the ledger
must balance: deliveries stored >= requests acknowledged with 2xx, or the run is void.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from service.crypto import generate_key
from service.storage import open_store

SECRET = "bench-secret"
WABA_ID = "102290129340398"
ROOT = Path(__file__).resolve().parents[1]


def body(index: int) -> bytes:
    value = {
        "event": "PAUSED" if index % 3 else "APPROVED",
        "message_template_id": 5_000_000_000_000_000 + index % 5000,
        "message_template_name": f"order_confirmation_{index % 5000:05d}",
        "message_template_language": "en_US",
        "reason": "NONE",
        "message_template_category": "UTILITY",
        "other_info": {
            "title": "FIRST_PAUSE",
            "description": "Your message template has been paused for 3 hours because of "
            "low quality ratings from customers. It will be available again afterwards.",
        },
        "disable_info": {"disable_date": 1751864800},
    }
    change = {"field": "message_template_status_update", "value": value}
    entry = {"id": WABA_ID, "time": 1_751_000_000 + index, "changes": [change]}
    document = {"object": "whatsapp_business_account", "entry": [entry]}
    return json.dumps(document, separators=(",", ":")).encode()


def lua_script(directory: Path, count: int) -> Path:
    lines = ["local bodies, sigs = {}, {}"]
    for index in range(count):
        data = body(index)
        digest = hmac.new(SECRET.encode(), data, hashlib.sha256).hexdigest()
        lines.append(f"bodies[{index + 1}] = [=[{data.decode()}]=]")
        lines.append(f'sigs[{index + 1}] = "sha256={digest}"')
    lines.append(f"""
local n, i = {count}, 0
request = function()
  i = i % n + 1
  return wrk.format("POST", "/webhooks/meta",
    {{["Content-Type"] = "application/json", ["X-Hub-Signature-256"] = sigs[i]}}, bodies[i])
end
done = function(summary, latency, requests)
  io.write(string.format('LEDGER {{"requests": %d, "non2xx": %d, "errors": %d}}\\n',
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
""")
    path = directory / "bodies.lua"
    path.write_text("\n".join(lines))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *command] if shutil.which("taskset") else command


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("server did not start")


def run_wrk(port: int, script: Path, seconds: int, connections: int) -> dict[str, float]:
    command = pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
                         "--latency", f"http://127.0.0.1:{port}/webhooks/meta"])  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    ledger = json.loads(output.split("LEDGER ", 1)[1].splitlines()[0])
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        "p50_ms": latency_ms(output, "50%"),
        "p99_ms": latency_ms(output, "99%"),
        "acked": ledger["requests"] - ledger["non2xx"],
        "errors": ledger["errors"] + ledger["non2xx"],
    }


def latency_ms(output: str, label: str) -> float:
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


async def prepare_store(url: str, key: str) -> None:
    """A workspace and channel for the WABA, so deliveries are applied, not only stored."""
    from service.config import Secret
    from service.crypto import TokenCipher

    store = await open_store(url)
    try:
        await store.migrate()
        workspace = await store.create_workspace("bench", 0)
        token = TokenCipher((Secret(key),)).encrypt("bench-token")
        await store.add_channel(workspace.id, WABA_ID, token, 0)
    finally:
        await store.close()


async def stored(url: str) -> int:
    store = await open_store(url)
    try:
        return len(await store.list_deliveries(None, 10**9))
    finally:
        await store.close()


def measure(name: str, command: list[str], env: dict[str, str], args: argparse.Namespace,
            script: Path, url: str | None) -> dict[str, object]:  # fmt: skip
    port = free_port()
    process = subprocess.Popen(pinned(0, [*command, "--port", str(port)]), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_port(port, process)
        result: dict[str, object] = {"target": name, **run_wrk(port, script, args.seconds,
                                                                args.connections)}  # fmt: skip
    finally:
        process.terminate()
        process.wait(timeout=30)
    if url is not None:
        count = asyncio.run(stored(url))
        result["ledger"] = "balances" if count >= int(result["acked"]) else "VOID"  # type: ignore[call-overload]
        result["stored"] = count
    print(f"  {name}: {result}", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--bodies", type=int, default=20000)
    parser.add_argument("--postgres-url", help="also measure the service on this database")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="template-sync-bench-"))
    script = lua_script(work, args.bodies)
    python = [sys.executable, "-m", "uvicorn", "--no-access-log", "--log-level", "warning"]
    base_env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_APP_SECRET": SECRET}
    results = [
        measure("bare Starlette", [*python, "bench.apps:bare"], base_env, args, script, None),
        measure(
            "pywa handler",
            [*python, "bench.apps:pywa"],
            {**base_env, "BENCH_TARGET": "pywa"},
            args,
            script,
            None,
        ),
    ]
    databases = [("service, SQLite FULL", f"sqlite:///{work}/bench.db")]
    if args.postgres_url:
        databases.append(("service, PostgreSQL", args.postgres_url))
    for name, url in databases:
        key = generate_key()
        asyncio.run(prepare_store(url, key))
        env = {
            **base_env,
            "TEMPLATE_SYNC_DATABASE_URL": url,
            "TEMPLATE_SYNC_META_APP_SECRET": SECRET,
            "TEMPLATE_SYNC_ENCRYPTION_KEYS": key,
            "TEMPLATE_SYNC_POLL_ENABLED": "false",
            "TEMPLATE_SYNC_LOG_LEVEL": "WARNING",
            "TEMPLATE_SYNC_LOG_FORMAT": "json",
        }
        serve = [sys.executable, "-m", "service", "serve"]
        results.append(measure(name, serve, env, args, script, url))
    report(results)
    shutil.rmtree(work, ignore_errors=True)


def report(results: list[dict[str, object]]) -> None:
    bare, pywa = (float(r["rps"]) for r in results[:2])  # type: ignore[arg-type]
    print("| target | req/s | p50 ms | p99 ms | / bare | / pywa | ledger |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        rps = float(r["rps"])  # type: ignore[arg-type]
        print(f"| {r['target']} | {rps:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{rps / bare:.2f} | {rps / pywa:.2f} | {r.get('ledger', '-')} |")  # fmt: skip


if __name__ == "__main__":
    main()
