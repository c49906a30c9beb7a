#!/usr/bin/env python3
"""The seed's design, as a reference server for the benchmark (python3 stdlib only).

A plain WebSocket server (RFC 6455, no TLS, no library) that sends every client a keep-alive
text message every 20 s and never requires a reply: it only learns that a client is gone when
a read or a write fails. After a silent cut its writes keep succeeding (the kernel queues
them and retransmits with back-off) until TCP gives up, ~924.6 s later with tcp_retries2=15.

Prints JSON lines: ready; connected {client, peer}; write {client, ok}; disconnected
{client, reason}; each with t = CLOCK_REALTIME seconds.
"""

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import sys
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEEPALIVE = b"keepalive"


def emit(**fields) -> None:
    fields.setdefault("t", time.time())
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def text_frame(payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes([0x81, len(payload)]) + payload  # FIN + text, unmasked (server to client)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--interval", type=float, default=20.0)
    ap.add_argument("--max-secs", type=float, default=1800)
    args = ap.parse_args()
    ids = itertools.count()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = next(ids)
        peer = writer.get_extra_info("peername")[0]
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            key = next(
                line.split(b":", 1)[1].strip()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, StopIteration) as e:
            emit(event="handshake_failed", client=client, error=repr(e))
            writer.close()
            return
        emit(event="connected", client=client, peer=peer)
        done = asyncio.Event()
        reason = []

        async def read() -> None:
            try:
                while await reader.read(4096):
                    pass  # The clients send nothing; a Close would be seen as data here.
                reason.append("eof")
            except OSError as e:
                reason.append(f"read error: {e!r}")
            done.set()

        async def keepalive() -> None:
            while not done.is_set():
                await asyncio.sleep(args.interval)
                try:
                    writer.write(text_frame(KEEPALIVE))
                    await writer.drain()
                    emit(event="write", client=client, ok=True)
                except OSError as e:
                    emit(event="write", client=client, ok=False, error=repr(e))
                    reason.append(f"write error: {e!r}")
                    done.set()

        tasks = [asyncio.create_task(read()), asyncio.create_task(keepalive())]
        await done.wait()
        for task in tasks:
            task.cancel()
        emit(event="disconnected", client=client, reason=reason[0] if reason else "?")
        writer.close()

    server = await asyncio.start_server(handle, args.host, args.port, backlog=4096)
    emit(event="ready", interval_s=args.interval)
    async with server:
        await asyncio.sleep(args.max_secs)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
