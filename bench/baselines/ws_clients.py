#!/usr/bin/env python3
"""N quiet WebSocket clients (python `websockets`) for the seed and websockets baselines.

Like a browser's WebSocket, they never send pings of their own (--ping-interval none) but
answer the server's pings (websockets does it in its protocol layer). Client i connects
after a delay spread evenly over --spread-secs, so that a cut meets each connection at a
random phase of the server's heartbeat. Prints `{"event": "ready", ...}` once all tried.
"""

import argparse
import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

GOLDEN = 0.6180339887498949


def emit(**fields) -> None:
    fields.setdefault("t", time.time())
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--spread-secs", type=float, default=0)
    ap.add_argument("--bind", default="")
    ap.add_argument("--ping-interval", default="none")
    ap.add_argument("--max-secs", type=float, default=900)
    args = ap.parse_args()
    ping = None if args.ping_interval == "none" else float(args.ping_interval)
    sources = [s for s in args.bind.split(",") if s]
    results = {"connected": 0, "failed": 0}
    all_tried = asyncio.Event()

    async def one(i: int) -> None:
        await asyncio.sleep(args.spread_secs * ((i * GOLDEN) % 1.0))
        ws = None
        for attempt in range(3):
            try:
                kwargs = {"local_addr": (sources[i % len(sources)], 0)} if sources else {}
                ws = await connect(args.url, ping_interval=ping, open_timeout=20, **kwargs)
                break
            except (OSError, asyncio.TimeoutError) as e:
                error = repr(e)
                await asyncio.sleep(0.5 * (attempt + 1))
        results["connected" if ws else "failed"] += 1
        if not ws:
            emit(event="connect_failed", index=i, error=error)
        if results["connected"] + results["failed"] == args.count:
            all_tried.set()
        if ws:
            try:
                async for _ in ws:
                    pass
            except ConnectionClosed:
                pass

    tasks = [asyncio.create_task(one(i)) for i in range(args.count)]
    await all_tried.wait()
    emit(event="ready", **results)
    await asyncio.sleep(args.max_secs)
    for task in tasks:
        task.cancel()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
