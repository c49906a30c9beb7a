import { create, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it, vi } from "vitest";
import { encodeFrame, FrameDecoder } from "../src/framing.js";
import { ServerFrameSchema } from "../src/gen/signalgate/v1/signalgate_pb.js";
import { webSocketConnector, type WebSocketConstructor } from "../src/transport/websocket.js";
import { CLOSE_GRACE_MS, webTransportConnector, type WebTransportConstructor } from "../src/transport/webtransport.js";
import type { CloseInfo, ConnectionHandlers } from "../src/transport/types.js";

function recorder() {
  const frames: Uint8Array[] = [];
  const closes: CloseInfo[] = [];
  const handlers: ConnectionHandlers = {
    onFrame: (f) => frames.push(f),
    onClose: (i) => closes.push(i),
  };
  return { frames, closes, handlers };
}

const settle = () => new Promise((r) => setTimeout(r, 0));

// ------------------------------------------------------------------------------------------
// WebSocket
// ------------------------------------------------------------------------------------------

class FakeWebSocket {
  static last: FakeWebSocket | undefined;
  binaryType = "blob";
  readyState = 0;
  sent: unknown[] = [];
  closeCalls: [number | undefined, string | undefined][] = [];
  onopen: ((ev: Event) => void) | null = null;
  onmessage: ((ev: MessageEvent) => void) | null = null;
  onerror: ((ev: Event) => void) | null = null;
  onclose: ((ev: CloseEvent) => void) | null = null;

  constructor(readonly url: string) {
    FakeWebSocket.last = this;
  }
  send(data: unknown) {
    this.sent.push(data);
  }
  close(code?: number, reason?: string) {
    if (code !== undefined && code !== 1000 && (code < 3000 || code > 4999)) {
      throw new Error("InvalidAccessError: browsers refuse this close code");
    }
    if (reason !== undefined && new TextEncoder().encode(reason).length > 123) {
      throw new Error("SyntaxError: the close reason is longer than 123 bytes");
    }
    this.closeCalls.push([code, reason]);
    this.readyState = 2;
  }
  // test side
  serverOpen() {
    this.readyState = 1;
    this.onopen?.(new Event("open"));
  }
  serverMessage(data: unknown) {
    this.onmessage?.({ data } as MessageEvent);
  }
  serverClose(code: number, wasClean: boolean) {
    this.readyState = 3;
    this.onclose?.({ code, wasClean, reason: "" } as CloseEvent);
  }
}

const WS = FakeWebSocket as unknown as WebSocketConstructor;

describe("WebSocket adapter", () => {
  it("opens with binaryType arraybuffer; one binary message = one frame, both ways", async () => {
    const r = recorder();
    const p = webSocketConnector(WS)("ws://h/ws", r.handlers, { signal: new AbortController().signal });
    const ws = FakeWebSocket.last!;
    expect(ws.url).toBe("ws://h/ws");
    expect(ws.binaryType).toBe("arraybuffer");
    ws.serverOpen();
    const conn = await p;
    expect(conn.kind).toBe("websocket");
    conn.send(Uint8Array.of(1, 2, 3));
    expect(ws.sent).toEqual([Uint8Array.of(1, 2, 3)]);
    ws.serverMessage(Uint8Array.of(4, 5).buffer);
    expect(r.frames).toEqual([Uint8Array.of(4, 5)]);
  });

  it("reports a close after open once; a clean close() by us sends code 1000 and reports nothing", async () => {
    const r = recorder();
    const p = webSocketConnector(WS)("ws://h/ws", r.handlers, { signal: new AbortController().signal });
    FakeWebSocket.last!.serverOpen();
    await p;
    FakeWebSocket.last!.serverClose(1006, false);
    expect(r.closes).toEqual([{ clean: false, code: 1006, reason: "close code 1006" }]);

    const r2 = recorder();
    const p2 = webSocketConnector(WS)("ws://h/ws", r2.handlers, { signal: new AbortController().signal });
    const ws2 = FakeWebSocket.last!;
    ws2.serverOpen();
    (await p2).close("liveness_timeout");
    expect(ws2.closeCalls).toEqual([[1000, "liveness_timeout"]]);
    ws2.serverClose(1000, true);
    expect(r2.closes).toEqual([]);
  });

  it("rejects when the socket closes before opening", async () => {
    const r = recorder();
    const p = webSocketConnector(WS)("ws://h/ws", r.handlers, { signal: new AbortController().signal });
    FakeWebSocket.last!.serverClose(1006, false);
    await expect(p).rejects.toThrow(/before opening/);
    expect(r.closes).toEqual([]);
  });

  it("abort before open closes the socket and rejects", async () => {
    const ac = new AbortController();
    const p = webSocketConnector(WS)("ws://h/ws", recorder().handlers, { signal: ac.signal });
    ac.abort();
    await expect(p).rejects.toThrow(/aborted/);
    expect(FakeWebSocket.last!.closeCalls).toHaveLength(1);
  });

  it("a text message is a protocol error: the socket is closed with a code browsers allow", async () => {
    const r = recorder();
    const p = webSocketConnector(WS)("ws://h/ws", r.handlers, { signal: new AbortController().signal });
    const ws = FakeWebSocket.last!;
    ws.serverOpen();
    await p;
    ws.serverMessage("hello");
    expect(r.frames).toEqual([]);
    expect(r.closes).toMatchObject([{ protocolError: true }]);
    expect(ws.closeCalls).toEqual([[1000, "text messages are not supported"]]);
  });

  it("a close reason too long for the Close frame is cut, so that the socket still closes", async () => {
    const p = webSocketConnector(WS)("ws://h/ws", recorder().handlers, { signal: new AbortController().signal });
    const ws = FakeWebSocket.last!;
    ws.serverOpen();
    (await p).close("é".repeat(100));
    expect(ws.closeCalls).toHaveLength(1);
    expect(new TextEncoder().encode(ws.closeCalls[0]![1]).length).toBeLessThanOrEqual(123);
  });

  it("rejects at once when WebSocket does not exist", async () => {
    await expect(
      webSocketConnector(undefined)("ws://h/ws", recorder().handlers, { signal: new AbortController().signal }),
    ).rejects.toThrow(/not available/);
  });
});

// ------------------------------------------------------------------------------------------
// WebTransport (fake session over real WHATWG streams)
// ------------------------------------------------------------------------------------------

class FakeWebTransport {
  static last: FakeWebTransport | undefined;
  readonly ready: Promise<void>;
  readonly closed: Promise<WebTransportCloseInfo>;
  closeCalls: (WebTransportCloseInfo | undefined)[] = [];
  streamsCreated = 0;
  /** What the client wrote on its stream (raw bytes, with the length prefixes). */
  written: Uint8Array[] = [];
  private toClient!: ReadableStreamDefaultController<Uint8Array>;
  private readyResolve!: () => void;
  private readyReject!: (e: Error) => void;
  private closedResolve!: (i: WebTransportCloseInfo) => void;

  constructor(
    readonly url: string,
    readonly options?: WebTransportOptions,
  ) {
    FakeWebTransport.last = this;
    this.ready = new Promise((res, rej) => {
      this.readyResolve = res;
      this.readyReject = rej;
    });
    this.closed = new Promise((res) => (this.closedResolve = res));
  }

  /** The client ended its side of the stream (FIN). */
  finSent = false;
  /** Writes never complete (a dead path). */
  stallWrites = false;

  async createBidirectionalStream() {
    this.streamsCreated++;
    const readable = new ReadableStream<Uint8Array>({ start: (c) => void (this.toClient = c) });
    const writable = new WritableStream<Uint8Array>({
      write: (chunk) => (this.stallWrites ? new Promise<void>(() => undefined) : void this.written.push(chunk)),
      close: () => {
        this.finSent = true;
      },
    });
    return { readable, writable };
  }

  close(info?: WebTransportCloseInfo) {
    this.closeCalls.push(info);
  }

  // test side
  serverReady() {
    this.readyResolve();
  }
  serverRefuse() {
    this.readyReject(new Error("WebTransportError: Opening handshake failed"));
  }
  serverSend(chunk: Uint8Array) {
    this.toClient.enqueue(chunk);
  }
  serverEndStream() {
    this.toClient.close();
  }
  serverCloseSession(code: number, reason: string) {
    this.closedResolve({ closeCode: code, reason });
  }
}

const WT = FakeWebTransport as unknown as WebTransportConstructor;

function serverFrame(seq: number): Uint8Array {
  return toBinary(
    ServerFrameSchema,
    create(ServerFrameSchema, { seq: BigInt(seq), msg: { case: "pong", value: { payload: Uint8Array.of(seq) } } }),
  );
}

async function openWt(r = recorder(), hashes = true) {
  const p = webTransportConnector(WT)("https://127.0.0.1:4433/wt", r.handlers, {
    signal: new AbortController().signal,
    ...(hashes ? { serverCertificateHashes: [{ algorithm: "sha-256" as const, value: new Uint8Array(32) }] } : {}),
  });
  const wt = FakeWebTransport.last!;
  wt.serverReady();
  const conn = await p;
  return { wt, conn, r };
}

describe("WebTransport adapter", () => {
  it("waits for ready, opens exactly one bidirectional stream, passes serverCertificateHashes", async () => {
    const { wt, conn } = await openWt();
    expect(conn.kind).toBe("webtransport");
    expect(wt.url).toBe("https://127.0.0.1:4433/wt");
    expect(wt.options?.serverCertificateHashes).toEqual([{ algorithm: "sha-256", value: new Uint8Array(32) }]);
    expect(wt.streamsCreated).toBe(1);
  });

  it("omits serverCertificateHashes when none are given (a real certificate)", async () => {
    const { wt } = await openWt(recorder(), false);
    expect(wt.options?.serverCertificateHashes).toBeUndefined();
  });

  it("writes each frame with a varint length prefix", async () => {
    const { wt, conn } = await openWt();
    conn.send(Uint8Array.of(7, 7, 7));
    conn.send(new Uint8Array(200));
    await settle();
    expect(wt.written[0]).toEqual(Uint8Array.of(3, 7, 7, 7));
    const d = new FrameDecoder();
    expect(d.push(wt.written[1]!)).toEqual([new Uint8Array(200)]);
  });

  it("reads frames split across and merged within stream chunks", async () => {
    const { wt, r } = await openWt();
    const all = new Uint8Array([...encodeFrame(serverFrame(1)), ...encodeFrame(serverFrame(2)), ...encodeFrame(serverFrame(3))]);
    wt.serverSend(all.subarray(0, 2));
    wt.serverSend(all.subarray(2, all.length - 4));
    await settle();
    expect(r.frames).toEqual([serverFrame(1), serverFrame(2)]);
    wt.serverSend(all.subarray(all.length - 4));
    await settle();
    expect(r.frames).toEqual([serverFrame(1), serverFrame(2), serverFrame(3)]);
  });

  it("an oversized length prefix closes the session as a protocol error", async () => {
    const r = recorder();
    const p = webTransportConnector(WT)("https://h/wt", r.handlers, { signal: new AbortController().signal, maxFrameBytes: 100 });
    const wt = FakeWebTransport.last!;
    wt.serverReady();
    await p;
    wt.serverSend(encodeFrame(new Uint8Array(101)).subarray(0, 1));
    await settle();
    expect(r.closes).toMatchObject([{ protocolError: true }]);
    expect(wt.closeCalls).toHaveLength(1);
  });

  it("reports the session's end once (stream end or session close)", async () => {
    const { wt, r } = await openWt();
    wt.serverCloseSession(0, "server shutting down");
    wt.serverEndStream();
    await settle();
    expect(r.closes).toHaveLength(1);
    expect(r.closes[0]).toMatchObject({ clean: true });
  });

  it("rejects when the handshake fails", async () => {
    const p = webTransportConnector(WT)("https://h/wt", recorder().handlers, { signal: new AbortController().signal });
    FakeWebTransport.last!.serverRefuse();
    await expect(p).rejects.toThrow(/Opening handshake failed/);
  });

  it("abort while connecting closes the session and rejects", async () => {
    const ac = new AbortController();
    const p = webTransportConnector(WT)("https://h/wt", recorder().handlers, { signal: ac.signal });
    const wt = FakeWebTransport.last!;
    ac.abort();
    wt.serverRefuse(); // a real session rejects `ready` when closed while connecting
    await expect(p).rejects.toThrow();
    expect(wt.closeCalls.length).toBeGreaterThanOrEqual(1);
  });

  it("close() ends the stream after the pending writes, then closes the session (a last Bye is not reset)", async () => {
    const { wt, conn, r } = await openWt();
    conn.send(Uint8Array.of(1, 2)); // e.g. the Bye of a page being unloaded
    conn.close("page unloaded");
    // Nothing may reset the stream before the write and the FIN are through.
    expect(wt.closeCalls).toHaveLength(0);
    await settle();
    expect(wt.written).toEqual([Uint8Array.of(2, 1, 2)]);
    expect(wt.finSent).toBe(true);
    expect(wt.closeCalls).toEqual([{ closeCode: 0, reason: "page unloaded" }]);
    expect(r.closes).toEqual([]);
    conn.send(Uint8Array.of(3));
    await settle();
    expect(wt.written).toHaveLength(1);
  });

  it("close(): if the stream cannot be ended within CLOSE_GRACE_MS, the session is closed anyway", async () => {
    vi.useFakeTimers();
    try {
      const { wt, conn } = await openWt();
      wt.stallWrites = true; // the path is dead: nothing drains
      conn.send(Uint8Array.of(1));
      conn.close("gone");
      await vi.advanceTimersByTimeAsync(CLOSE_GRACE_MS - 1);
      expect(wt.closeCalls).toHaveLength(0);
      await vi.advanceTimersByTimeAsync(1);
      expect(wt.closeCalls).toEqual([{ closeCode: 0, reason: "gone" }]);
    } finally {
      vi.useRealTimers();
    }
  });

  it("rejects at once when WebTransport does not exist", async () => {
    await expect(
      webTransportConnector(undefined)("https://h/wt", recorder().handlers, { signal: new AbortController().signal }),
    ).rejects.toThrow(/not available/);
  });
});
