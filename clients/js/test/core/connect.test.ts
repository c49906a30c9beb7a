/** Core: opening a connection, Hello / Welcome, falling back from one transport to the other. */
import { describe, expect, it } from "vitest";
import { resolveConfig } from "../../src/core/config.js";
import { CoreHarness, ErrorCode } from "./harness.js";

describe("connect: Hello / Welcome", () => {
  it("opens WebTransport first, sends a fresh Hello when it opens, and is connected on Welcome", () => {
    const h = new CoreHarness({ client: "test/1", token: "secret" });
    expect(h.core.state).toBe("idle");
    const req = h.connect();
    expect(h.core.phaseKind).toBe("connecting");
    expect(h.core.state).toBe("connecting");
    const gw = h.link();
    expect(gw.kind).toBe("webtransport");
    expect(gw.sent).toEqual([]);
    gw.open();
    expect(h.core.phaseKind).toBe("handshaking");
    expect(gw.hello()).toMatchObject({ client: "test/1", token: "secret", resumeToken: "", lastSeq: 0n, attempt: 0n });
    expect(gw.hello().id).not.toBe(0n);
    expect(h.result(req).state).toBe("pending");
    gw.welcome({ peerId: "peer-a", connectionId: "c-9" });
    expect(h.core.state).toBe("connected");
    expect(h.core.transport).toBe("webtransport");
    expect(h.core.peerId).toBe("peer-a");
    expect(h.core.connectionId).toBe("c-9");
    expect(h.of("connected")).toEqual([{ transport: "webtransport", peerId: "peer-a", connectionId: "c-9" }]);
    expect(h.result(req)).toEqual({ state: "resolved", value: undefined });
  });

  it("a second connect() waits for the same Welcome; connect() when connected resolves at once", () => {
    const h = new CoreHarness();
    const a = h.connect();
    const b = h.connect();
    expect(h.links).toHaveLength(1);
    h.link().open().welcome();
    expect(h.result(a).state).toBe("resolved");
    expect(h.result(b).state).toBe("resolved");
    expect(h.result(h.connect()).state).toBe("resolved");
  });

  it("ignores everything but Welcome and Error before Welcome", () => {
    const h = new CoreHarness();
    h.connect();
    const gw = h.link().open();
    gw.peerJoined(1);
    expect(h.of("peerJoined")).toEqual([]);
    expect(h.core.phaseKind).toBe("handshaking");
  });

  it("requests before connect() reject with NOT_CONNECTED", () => {
    const h = new CoreHarness();
    expect(h.rejection(h.join("demo"))).toBe("NOT_CONNECTED");
    expect(h.rejection(h.send("x"))).toBe("NOT_CONNECTED");
  });

  it("options need a URL for the forced transport, and at least one URL", () => {
    expect(() => resolveConfig({ webSocketUrl: "ws://x/ws", transport: "webtransport" }, true)).toThrow(TypeError);
    expect(() => resolveConfig({ webTransportUrl: "https://x/wt", transport: "websocket" }, true)).toThrow(TypeError);
    expect(() => resolveConfig({}, true)).toThrow(TypeError);
  });
});

describe("transport fallback", () => {
  it("falls back to WebSocket at once when WebTransport fails to open", () => {
    const h = new CoreHarness();
    h.connect();
    h.link().fail("Opening handshake failed");
    expect(h.links.map((l) => l.kind)).toEqual(["webtransport", "websocket"]);
    expect(h.of("transportFailed")).toEqual([{ transport: "webtransport", error: "Opening handshake failed" }]);
    h.link().open().welcome();
    expect(h.core.transport).toBe("websocket");
  });

  it("falls back when WebTransport does not open within webTransportTimeoutMs, and closes it", () => {
    const h = new CoreHarness({ webTransportTimeoutMs: 3000 });
    h.connect();
    const wt = h.link();
    h.advance(2999);
    expect(h.links).toHaveLength(1);
    h.advance(1);
    expect(h.links.map((l) => l.kind)).toEqual(["webtransport", "websocket"]);
    expect(wt.closedBy).toBeDefined();
    expect(h.of("transportFailed")[0]?.error).toMatch(/did not open within 3000 ms/);
  });

  it("a link that opens after it was given up is closed, never used", () => {
    const h = new CoreHarness({ webTransportTimeoutMs: 3000 });
    h.connect();
    const wt = h.link();
    h.advance(3000);
    wt.closedBy = undefined;
    wt.open();
    expect(wt.closedBy).toBe("obsolete attempt");
    expect(wt.sent).toEqual([]);
  });

  it("an Error answering a fresh Hello fails that transport (error event), and the next one is tried", () => {
    const h = new CoreHarness();
    h.connect();
    const wt = h.link().open();
    wt.error(ErrorCode.UNSUPPORTED_FRAME, wt.hello().id);
    expect(wt.closedBy).toBeDefined();
    expect(h.of("error")).toMatchObject([{ code: "UNSUPPORTED_FRAME" }]);
    expect(h.link().kind).toBe("websocket");
  });

  it("no Welcome within helloTimeoutMs: the next transport", () => {
    const h = new CoreHarness({ helloTimeoutMs: 2000 });
    h.connect();
    const wt = h.link().open();
    h.advance(1999);
    expect(h.links).toHaveLength(1);
    h.advance(1);
    expect(wt.closedBy).toBeDefined();
    expect(h.link().kind).toBe("websocket");
  });

  it("an undecodable frame before Welcome fails the transport", () => {
    const h = new CoreHarness();
    h.connect();
    h.link().open().deliverRaw(Uint8Array.of(0xff, 0xff, 0xff));
    expect(h.link().kind).toBe("websocket");
  });

  it("a connection closed before Welcome fails the transport", () => {
    const h = new CoreHarness();
    h.connect();
    h.link().open().drop({ reason: "refused" });
    expect(h.of("transportFailed")[0]?.error).toBe("closed before Welcome: refused");
    expect(h.link().kind).toBe("websocket");
  });

  it("after every transport failed: back-off, then the whole order again", () => {
    const h = new CoreHarness({}, { random: () => 0.999 });
    h.connect();
    h.link().fail();
    h.link().fail();
    expect(h.core.phaseKind).toBe("backingOff");
    expect(h.of("reconnecting")).toEqual([{ attempt: 1, delayMs: 250 }]);
    h.advance(249);
    expect(h.links).toHaveLength(2);
    h.advance(1);
    expect(h.links.map((l) => l.kind)).toEqual(["webtransport", "websocket", "webtransport"]);
  });

  it("uses only WebSocket when this environment has no WebTransport", () => {
    const h = new CoreHarness({}, { webTransport: false });
    h.connect();
    h.link().fail();
    h.untilNewLink();
    expect(new Set(h.links.map((l) => l.kind))).toEqual(new Set(["websocket"]));
  });

  it("transport 'websocket' never tries WebTransport; 'webtransport' never falls back", () => {
    const ws = new CoreHarness({ transport: "websocket" });
    ws.connect();
    ws.link().fail();
    ws.untilNewLink().fail();
    expect(ws.links.map((l) => l.kind)).toEqual(["websocket", "websocket"]);

    const wt = new CoreHarness({ transport: "webtransport" });
    wt.connect();
    wt.link().fail();
    expect(wt.core.phaseKind).toBe("backingOff");
    wt.untilNewLink();
    expect(wt.links.map((l) => l.kind)).toEqual(["webtransport", "webtransport"]);
  });
});

describe("transport order edge cases", () => {
  it("only a WebTransport URL, in an environment without WebTransport: it is tried (and its failure reported)", () => {
    const h = new CoreHarness({ webSocketUrl: undefined }, { webTransport: false });
    h.connect();
    expect(h.links.map((l) => l.kind)).toEqual(["webtransport"]);
  });
});
