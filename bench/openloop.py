"""Open-loop load: signed deliveries sent at a fixed rate whatever the answers (bench only).

    python bench/openloop.py --port P --rate 1000 --seconds 10 [--connections 64] [--offset N]
                             [--answers FILE] [--answer-timeout S]

Request i is due at start + i/rate. Its latency counts from that moment, not from when a
connection was free to send it, so a stalled server shows as latency instead of slowing
the sender down (no coordinated omission). Prints one JSON line of results. With --answers,
also writes FILE: each 200-answered body's digest (`body_digest`) and the `time.perf_counter()`
at which its answer was read. On Linux that clock is CLOCK_MONOTONIC, one for the whole
machine, so another process's receipt of the same bytes can be timed against it
(bench/outbox.py's relay lag).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import time
from contextlib import suppress
from pathlib import Path

from ingest import body, signature


def request_bytes(index: int) -> bytes:
    data = body(index)
    head = (
        "POST /webhooks/meta HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Hub-Signature-256: {signature(data)}\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def body_digest(data: bytes) -> str:
    """A body's key: the SHA-256 of its exact bytes, cheaper to keep and compare than them."""
    return hashlib.sha256(data).hexdigest()


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":", 1)[1]))
    return status


async def run(
    port: int,
    rate: float,
    seconds: float,
    connections: int,
    offset: int,
    answers: dict[str, float] | None = None,
    answer_timeout_s: float | None = None,
) -> dict[str, float]:
    """Send; with `answers`, fill it with each 200-answered body's digest and answer time.
    With `answer_timeout_s`, stop waiting for answers that long after the last send: those
    still unanswered count as errors (`unanswered`), so a stalled server ends the run."""
    count = int(rate * seconds)
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    latencies: list[float] = []
    errors = finished = 0

    async def connection() -> None:
        nonlocal errors, finished
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while True:
            due, payload = await queue.get()
            try:
                writer.write(payload)
                status = await read_response(reader)
                answered = time.perf_counter()
                latencies.append(answered - due)
                errors += status != 200
                if answers is not None and status == 200:
                    answers[body_digest(payload.split(b"\r\n\r\n", 1)[1])] = answered
                finished += 1
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
                finished += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            finally:
                queue.task_done()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    await asyncio.sleep(0.2)  # connections open before the clock starts
    start = time.perf_counter()
    for index in range(count):
        payload = request_bytes(offset + index)  # made as it goes: a million fit in no memory
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, payload))
    with suppress(TimeoutError):
        await asyncio.wait_for(queue.join(), answer_timeout_s)
    unanswered = count - finished
    for worker in workers:
        worker.cancel()
    latencies = sorted(latencies) or [math.inf]
    result = {
        "rate": rate,
        "sent": count,
        "acked": count - errors - unanswered,
        "errors": errors + unanswered,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "max_ms": latencies[-1] * 1000,
    }
    return result if answer_timeout_s is None else {**result, "unanswered": unanswered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--offset", type=int, default=0, help="first body index (distinct runs)")
    parser.add_argument("--answers", type=Path, help="write each answered body's answer time")
    parser.add_argument("--answer-timeout", type=float, help="seconds after the last send")
    args = parser.parse_args()
    answers: dict[str, float] | None = None if args.answers is None else {}
    result = asyncio.run(
        run(args.port, args.rate, args.seconds, args.connections, args.offset, answers,
            args.answer_timeout)
    )  # fmt: skip
    if args.answers is not None:
        args.answers.write_text(json.dumps(answers))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
