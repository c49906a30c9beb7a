#!/usr/bin/env python3
"""One TCP connection's timeline from two captures of it (e.g. bench/run.py --pcap: the
phone's interface and the gateway's), to see which segments the path dropped and how each
side's TCP recovered. Python 3 standard library only (reads pcap, Ethernet + IPv4).

    python3 bench/tcp_timeline.py --client 198.18.2.7:40312 PHONE.pcap GW.pcap [--from T] [--to T]

A segment seen in the sender's capture but not in the receiver's was lost on the way.
Sequence numbers are relative to each direction's first; times in seconds (CLOCK_REALTIME,
as the captures stamped them, so they line up with the gateway's log).
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path


def packets(path: Path):
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    endian, nano = ("<", False) if magic in (0xA1B2C3D4, 0xA1B23C4D) else (">", False)
    if magic in (0xA1B23C4D, 0x4D3CB2A1):
        nano = True
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(endian + "IIII", data[off:off + 16])
        off += 16
        frame = data[off:off + incl]
        off += incl
        t = sec + frac / (1e9 if nano else 1e6)
        ip = frame[14:] if linktype == 1 else frame
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 15) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        ipid = struct.unpack("!H", ip[4:6])[0]
        src, dst = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
        tcp = ip[ihl:]
        sport, dport, seq, ack, offflags = struct.unpack("!HHIIH", tcp[:14])
        thl = (offflags >> 12) * 4
        flags = offflags & 0x3F
        payload = total - ihl - thl
        sack = []
        opts = tcp[20:thl]
        i = 0
        while i < len(opts):
            kind = opts[i]
            if kind == 0:
                break
            if kind == 1:
                i += 1
                continue
            if i + 1 >= len(opts):
                break
            length = opts[i + 1]
            if kind == 5 and length >= 10:
                for j in range(i + 2, i + length, 8):
                    if j + 8 <= len(opts):
                        sack.append(struct.unpack("!II", opts[j:j + 8]))
            i += max(length, 2)
        yield {"t": t, "src": f"{src}:{sport}", "dst": f"{dst}:{dport}", "ipid": ipid, "seq": seq, "ack": ack,
               "len": payload, "flags": flags, "sack": sack}


def flag_text(f: int) -> str:
    return "".join(c for c, b in zip("FSRPA", (1, 2, 4, 8, 16)) if f & b) or "."


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--client", required=True, help="the client's IP:port")
    ap.add_argument("client_pcap", type=Path)
    ap.add_argument("server_pcap", type=Path)
    ap.add_argument("--from", dest="t_from", type=float, default=0)
    ap.add_argument("--to", dest="t_to", type=float, default=float("inf"))
    args = ap.parse_args()

    seen: dict[tuple, dict] = {}
    for side, path in (("client", args.client_pcap), ("server", args.server_pcap)):
        for p in packets(path):
            if args.client not in (p["src"], p["dst"]):
                continue
            up = p["src"] == args.client
            key = (up, p["ipid"], p["seq"], p["ack"], p["len"])
            entry = seen.setdefault(key, {**p, "up": up})
            entry[side] = p["t"]
    base = {True: None, False: None}
    for e in sorted(seen.values(), key=lambda e: e.get("client" if e["up"] else "server", e["t"])):
        if e["flags"] & 2:
            base[e["up"]] = e["seq"]
    rows = sorted(seen.values(), key=lambda e: e.get("client" if e["up"] else "server", e["t"]))
    # Acks are relative to the other direction's base.
    print("sent_at      arrived_at   dir           seq      len  ack      flags  sack")
    for e in rows:
        t_sent = e.get("client" if e["up"] else "server")
        t_recv = e.get("server" if e["up"] else "client")
        if t_sent is None:
            t_sent = t_recv
        if not (args.t_from <= t_sent <= args.t_to):
            continue
        b, ob = base[e["up"]] or 0, base[not e["up"]] or 0
        rel = (e["seq"] - b) % 2**32
        rack = (e["ack"] - ob) % 2**32 if e["flags"] & 16 else 0
        sack = " ".join(f"{(x - ob) % 2**32}-{(y - ob) % 2**32}" for x, y in e["sack"])
        arrived = f"{t_recv:.3f}" if t_recv is not None else "LOST      "
        print(f"{t_sent:.3f}  {arrived}  {'client->gw' if e['up'] else 'gw->client'}  {rel:8d} {e['len']:4d}  {rack:8d} {flag_text(e['flags']):5s}  {sack}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
