#!/usr/bin/env python3
"""Baseline: a python `websockets` server with its default keepalive (ping_interval=20 s,
ping_timeout=20 s, close_timeout=10 s).

Prints JSON lines: ready; connected {client, peer}; keepalive_timeout {client} (the moment
websockets gives up waiting for a pong, taken from its debug log); disconnected {client,
reason} (the moment the application's handler learns the connection is gone: after the
keepalive timeout websockets sends a Close and waits up to close_timeout for the peer
before aborting). Each with t = CLOCK_REALTIME seconds.
"""

import argparse
import asyncio
import itertools
import json
import logging
import sys
import time

import websockets
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


def emit(**fields) -> None:
    fields.setdefault("t", time.time())
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class KeepaliveTimeouts(logging.Handler):
    """Turns websockets' debug line for a missed pong into an event."""

    def __init__(self, ids: dict):
        super().__init__(logging.DEBUG)
        self.ids = ids

    def emit(self, record: logging.LogRecord) -> None:
        if "timed out waiting for keepalive pong" in str(record.msg):
            # The log record carries a weak proxy of the connection.
            ws = getattr(record, "websocket", None)
            emit(event="keepalive_timeout", client=self.ids.get(getattr(ws, "id", None), -1))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--max-secs", type=float, default=1800)
    args = ap.parse_args()
    ids: dict = {}  # connection UUID -> client number
    counter = itertools.count()
    logger = logging.getLogger("websockets.server")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(KeepaliveTimeouts(ids))
    logger.propagate = False

    async def handler(ws) -> None:
        client = next(counter)
        ids[ws.id] = client
        emit(event="connected", client=client, peer=ws.remote_address[0])
        try:
            async for _ in ws:
                pass
            reason = f"closed: code {ws.close_code} {ws.close_reason!r}"
        except ConnectionClosed as e:
            reason = f"closed: {e}"
        emit(event="disconnected", client=client, reason=reason)

    # The library's defaults: ping_interval=20, ping_timeout=20, close_timeout=10.
    async with serve(handler, args.host, args.port, logger=logger):
        emit(event="ready", version=websockets.__version__)
        await asyncio.sleep(args.max_secs)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
