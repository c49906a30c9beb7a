import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { sizeDelimitedDecodeStream, sizeDelimitedEncode } from "@bufbuild/protobuf/wire";
import { describe, expect, it } from "vitest";
import { encodeFrame, FrameDecoder, FramingError } from "../src/framing.js";
import { ServerFrameSchema, type ServerFrame } from "../src/gen/signalgate/v1/signalgate_pb.js";

function frame(seq: number, room = "demo"): ServerFrame {
  return create(ServerFrameSchema, {
    seq: BigInt(seq),
    msg: { case: "peerJoined", value: { room, peer: { peerId: `peer-${seq}`, state: 1 } } },
  });
}

const bytes = (f: ServerFrame) => toBinary(ServerFrameSchema, f);

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

describe("framing", () => {
  it("encodes exactly like protobuf-es sizeDelimitedEncode (and so prost encode_length_delimited)", () => {
    for (const f of [frame(1), frame(2, "x".repeat(200)), create(ServerFrameSchema)]) {
      expect(encodeFrame(bytes(f))).toEqual(sizeDelimitedEncode(ServerFrameSchema, f));
    }
  });

  it("round-trips one frame per chunk", () => {
    const d = new FrameDecoder();
    for (let i = 1; i <= 3; i++) {
      const out = d.push(encodeFrame(bytes(frame(i))));
      expect(out).toHaveLength(1);
      expect(fromBinary(ServerFrameSchema, out[0]!).seq).toBe(BigInt(i));
    }
    expect(d.pendingBytes).toBe(0);
  });

  it("reassembles frames split at every byte, including inside a 2-byte length prefix", () => {
    const big = frame(7, "r".repeat(300)); // > 127 bytes: the prefix takes 2 bytes
    const stream = concat([encodeFrame(bytes(frame(1))), encodeFrame(bytes(big)), encodeFrame(bytes(frame(9)))]);
    const d = new FrameDecoder();
    const got: ServerFrame[] = [];
    for (const b of stream) got.push(...d.push(Uint8Array.of(b)).map((x) => fromBinary(ServerFrameSchema, x)));
    expect(got.map((f) => f.seq)).toEqual([1n, 7n, 9n]);
    expect(got[1]).toEqual(big);
  });

  it("returns several frames from one merged chunk and keeps a trailing partial frame", () => {
    const a = encodeFrame(bytes(frame(1)));
    const b = encodeFrame(bytes(frame(2)));
    const c = encodeFrame(bytes(frame(3)));
    const d = new FrameDecoder();
    const first = d.push(concat([a, b, c.subarray(0, 3)]));
    expect(first.map((x) => fromBinary(ServerFrameSchema, x).seq)).toEqual([1n, 2n]);
    expect(d.pendingBytes).toBe(3);
    const rest = d.push(c.subarray(3));
    expect(rest.map((x) => fromBinary(ServerFrameSchema, x).seq)).toEqual([3n]);
  });

  it("passes an empty (zero-length) frame through", () => {
    expect(new FrameDecoder().push(Uint8Array.of(0))).toEqual([new Uint8Array(0)]);
  });

  it("refuses an oversized length as soon as the prefix shows it, without waiting for the body", () => {
    const d = new FrameDecoder(1000);
    const prefix = encodeFrame(new Uint8Array(1001)).subarray(0, 2);
    expect(() => d.push(prefix)).toThrow(FramingError);
    // and stays failed
    expect(() => d.push(Uint8Array.of(0))).toThrow(FramingError);
  });

  it("accepts a frame of exactly maxFrameBytes", () => {
    const d = new FrameDecoder(1000);
    expect(d.push(encodeFrame(new Uint8Array(1000)))[0]).toHaveLength(1000);
  });

  it("refuses a huge varint length (e.g. 2^35) even with a large limit", () => {
    const d = new FrameDecoder(2 ** 32);
    expect(() => d.push(Uint8Array.of(0x80, 0x80, 0x80, 0x80, 0x80, 0x01))).toThrow(/exceeds/);
  });

  it("refuses a varint that never ends", () => {
    const d = new FrameDecoder(2 ** 40);
    expect(() => d.push(new Uint8Array(11).fill(0x80))).toThrow(FramingError);
  });

  it("decodes what our encoder writes with protobuf-es sizeDelimitedDecodeStream", async () => {
    const stream = concat([1, 2, 3].map((i) => encodeFrame(bytes(frame(i)))));
    async function* chunks() {
      for (let i = 0; i < stream.length; i += 5) yield stream.subarray(i, i + 5);
    }
    const seqs: bigint[] = [];
    for await (const f of sizeDelimitedDecodeStream(ServerFrameSchema, chunks())) seqs.push(f.seq);
    expect(seqs).toEqual([1n, 2n, 3n]);
  });
});
