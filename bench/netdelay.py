#!/usr/bin/env python3
"""A fixed delay line for the benchmark's router namespace (python3 stdlib only).

This kernel has no netem, no fq/etf (so no BPF earliest-departure-time either) and no
NFQUEUE; tbf only delays packets while a backlog stands in its queue, which idle signaling
sessions never build. So the router sends the packets to delay into a TUN device (policy
routing on their input interface, see run.py) and this process writes each one back
DELAY ms later: the kernel then forwards it as if it had just arrived. Order is kept, the
delay is constant (like `netem delay 100ms` without jitter).

Run inside the router namespace on an existing, up TUN device:
    netdelay.py --dev sgbdelay --delay-ms 100 --max-secs 600
"""

import argparse
import asyncio
import fcntl
import os
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev", required=True)
    ap.add_argument("--delay-ms", type=float, required=True)
    ap.add_argument("--max-secs", type=float, default=900)
    args = ap.parse_args()

    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", args.dev.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    loop = asyncio.new_event_loop()
    delay = args.delay_ms / 1000.0
    counts = {"delayed": 0, "write_errors": 0}
    # How late each packet was written back (ms, 1-ms buckets): the delay is only as constant
    # as this process keeps up (it shares the CPU with everything else).
    late_ms: dict[int, int] = {}

    def write(packet: bytes, due: float) -> None:
        late = int((loop.time() - due) * 1000)
        late_ms[late] = late_ms.get(late, 0) + 1
        try:
            os.write(fd, packet)
        except OSError:
            counts["write_errors"] += 1

    def readable() -> None:
        while True:
            try:
                packet = os.read(fd, 65536)
            except BlockingIOError:
                return
            counts["delayed"] += 1
            due = loop.time() + delay
            loop.call_at(due, write, packet, due)

    loop.add_reader(fd, readable)
    loop.call_later(args.max_secs, loop.stop)
    print("ready", flush=True)
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass
    total = sum(late_ms.values())

    def pct(p: float) -> int:
        seen = 0
        for ms in sorted(late_ms):
            seen += late_ms[ms]
            if seen >= p / 100 * total:
                return ms
        return 0

    lateness = (f"; written late by p50 {pct(50)} / p99 {pct(99)} / p99.9 {pct(99.9)} / max {max(late_ms)} ms"
                if total else "")
    print(f"delayed {counts['delayed']} packets, {counts['write_errors']} write errors{lateness}", flush=True)
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    sys.exit(main())
