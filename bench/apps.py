"""Reference webhook endpoints the service is measured against (bench only).

uvicorn bench.apps:bare    a Starlette endpoint answering 200 without reading the body
uvicorn bench.apps:pywa    pywa's async handler: signature check and parsing, stores nothing
uvicorn bench.apps:floor   the floor of durable ingest: signature check, JSON parse and one
                           INSERT of the body per request, commits grouped across requests
                           (SQLite WAL, synchronous=FULL; the file is $BENCH_FLOOR_DB)
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from service.webhooks import SignatureError, verify_signature

SECRET = os.environ.get("BENCH_APP_SECRET", "bench-secret")


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


def make_pywa() -> Starlette:
    from pywa_async import WhatsApp  # bench-only dependency

    wa = WhatsApp(phone_id="1", token="bench", server=None, app_secret=SECRET, verify_token="bench")

    async def handle(request: Request) -> Response:
        body = await request.body()
        refused = await wa.webhook_update_validator(
            body, request.headers.get("x-hub-signature-256")
        )
        if refused:
            return PlainTextResponse(refused[0], status_code=refused[1])
        text, status = await wa.webhook_update_handler(body)
        return PlainTextResponse(text, status_code=status)

    return Starlette(routes=[Route("/webhooks/meta", handle, methods=["POST"])])


class GroupCommit:
    """Each body is one INSERT; whatever queued while a commit ran is committed next, in one
    transaction on one thread, and each request is answered only after its own commit."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS deliveries (id INTEGER PRIMARY KEY, received_at INTEGER "
            "NOT NULL, body BLOB NOT NULL)"
        )
        self._queue: list[tuple[bytes, asyncio.Future[None]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def store(self, body: bytes) -> None:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((body, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await asyncio.to_thread(self._commit, [body for body, _ in batch])
            except sqlite3.Error as error:  # those requests fail (500); none is acknowledged
                for _, future in batch:
                    future.set_exception(error)
            else:
                for _, future in batch:
                    future.set_result(None)

    def _commit(self, bodies: list[bytes]) -> None:
        now = int(time.time() * 1000)
        with self._db:  # BEGIN ... COMMIT, or ROLLBACK on error
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO deliveries (received_at, body) VALUES (?, ?)",
                [(now, body) for body in bodies],
            )


def make_floor(path: str) -> Starlette:
    writer = GroupCommit(path)
    secrets = (SECRET.encode(),)

    async def handle(request: Request) -> Response:
        body = await request.body()
        try:
            verify_signature(body, request.headers.get("x-hub-signature-256"), secrets)
        except SignatureError:
            return PlainTextResponse("bad signature", status_code=401)
        json.loads(body)
        await writer.store(body)
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/webhooks/meta", handle, methods=["POST"])])


bare = Starlette(routes=[Route("/webhooks/meta", ok, methods=["POST"])])
pywa = make_pywa() if os.environ.get("BENCH_TARGET") == "pywa" else None
floor = make_floor(os.environ["BENCH_FLOOR_DB"]) if os.environ.get("BENCH_FLOOR_DB") else None
