"""Open-loop load: signed deliveries sent at a fixed rate whatever the answers (bench only).

    python bench/openloop.py --port P --rate 1000 --seconds 10 [--connections 64] [--offset N]

Request i is due at start + i/rate. Its latency counts from that moment, not from when a
connection was free to send it, so a stalled server shows as latency instead of slowing
the sender down (no coordinated omission). Prints one JSON line of results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from ingest import body, signature


def request_bytes(index: int) -> bytes:
    data = body(index)
    head = (
        "POST /webhooks/meta HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Hub-Signature-256: {signature(data)}\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":", 1)[1]))
    return status


async def run(
    port: int, rate: float, seconds: float, connections: int, offset: int
) -> dict[str, float]:
    count = int(rate * seconds)
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    latencies: list[float] = []
    errors = 0

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while True:
            due, payload = await queue.get()
            try:
                writer.write(payload)
                status = await read_response(reader)
                latencies.append(time.perf_counter() - due)
                errors += status != 200
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
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
    await queue.join()
    for worker in workers:
        worker.cancel()
    latencies.sort()
    return {
        "rate": rate,
        "sent": count,
        "acked": count - errors,
        "errors": errors,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "max_ms": latencies[-1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--offset", type=int, default=0, help="first body index (distinct runs)")
    args = parser.parse_args()
    result = asyncio.run(run(args.port, args.rate, args.seconds, args.connections, args.offset))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
