"""Graph calls one sync spends per WABA, for both strategies, against the Meta simulator.

    .venv/bin/python bench/sync_calls.py [--templates 1000] [--pending 1,25,500]

Prints a table: calls by paging the whole list, calls by one GET per pending template,
and what the service's rule (service/sync.py) chooses.
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp

from service.graph import GraphClient
from service.simulator import Simulator, base_url, make_templates, serve
from service.source_graph import read_one_by_one

WABA_ID = "102290129340398"
TOKEN = "bench-token"


async def measure(templates: int, pending: int, page_limit: int) -> tuple[int, int]:
    sim = Simulator()
    sim.add_waba(WABA_ID, TOKEN)
    listed = make_templates(WABA_ID, templates, pending=pending)
    sim.add_templates(WABA_ID, listed)
    runner = await serve(sim)
    try:
        async with aiohttp.ClientSession() as session:
            graph = GraphClient(session, base_url(runner), None, page_limit=page_limit)
            found = await graph.list_templates(WABA_ID, TOKEN)
            assert sum(t.status == "PENDING" for t in found) == pending
            by_list = graph.calls
            for template in listed[templates - pending :]:
                await graph.get_template(template["id"], TOKEN)
            return by_list, graph.calls - by_list
    finally:
        await runner.cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--templates", type=int, default=1000)
    parser.add_argument("--pending", default="1,25,500")
    parser.add_argument("--page-limit", type=int, default=100)
    args = parser.parse_args()
    print(f"WABA of {args.templates} templates, page limit {args.page_limit}")
    print("| pending | list (paging) | one GET each | rule picks | calls spent |")
    print("|---:|---:|---:|---|---:|")
    for pending in (int(p) for p in args.pending.split(",")):
        by_list, by_get = await measure(args.templates, pending, args.page_limit)
        each = read_one_by_one(pending, args.templates, args.page_limit)
        choice, spent = ("one GET each", by_get) if each else ("list", by_list)
        print(f"| {pending} | {by_list} | {by_get} | {choice} | {spent} |")


if __name__ == "__main__":
    asyncio.run(main())
