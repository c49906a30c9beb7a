/** Core: liveness of the gateway, back-off, GoAway, and remembering a network that blocks UDP. */
import { describe, expect, it } from "vitest";
import { Reason } from "../../src/gen/signalgate/v1/signalgate_pb.js";
import { CoreHarness, ErrorCode } from "./harness.js";

const FAST = { livenessTimeoutMs: 1000, pingIntervalMs: 400 };

describe("liveness of the gateway", () => {
  it("pings every ping_interval_ms, and measures the round trip", () => {
    const h = new CoreHarness();
    const gw = h.connected(FAST);
    h.advance(399);
    expect(gw.sentOf("ping")).toHaveLength(0);
    h.advance(1);
    expect(gw.sentOf("ping")).toHaveLength(1);
    h.advance(25);
    gw.pong();
    expect(h.core.rttMs).toBe(25);
    h.advance(375);
    expect(gw.sentOf("ping")).toHaveLength(2);
  });

  it("nothing at all for liveness_timeout_ms: the connection is closed and the session resumed elsewhere", () => {
    const h = new CoreHarness();
    const gw = h.connected(FAST);
    h.advance(999);
    expect(h.of("disconnected")).toEqual([]);
    h.advance(1);
    expect(h.of("disconnected")).toEqual([{ reason: "liveness_timeout", willReconnect: true }]);
    expect(gw.closedBy).toBeDefined();
    const next = h.untilNewLink().open();
    expect(next.hello().resumeToken).toBe("tok-1");
  });

  it("any frame, not only a Pong, keeps the connection alive", () => {
    const h = new CoreHarness();
    const gw = h.connected(FAST);
    for (let i = 1; i <= 10; i++) {
      h.advance(300);
      gw.peerJoined(i);
    }
    expect(h.of("disconnected")).toEqual([]);
  });

  it("a check that runs far too late (frozen tab) pings instead of declaring the gateway dead", () => {
    const h = new CoreHarness();
    const gw = h.connected(FAST);
    h.now += 60_000; // no timer ran
    h.input((now) => h.core.handleTimeout(now));
    expect(h.of("disconnected")).toEqual([]);
    expect(gw.sentOf("ping")).toHaveLength(1);
    h.advance(999);
    expect(h.of("disconnected")).toEqual([]);
    h.advance(1);
    expect(h.of("disconnected")).toEqual([{ reason: "liveness_timeout", willReconnect: true }]);
  });

  it("an undecodable frame is a protocol error: reconnect", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    gw.deliverRaw(Uint8Array.of(0xff, 0xff, 0xff));
    expect(h.of("disconnected")).toEqual([{ reason: "protocol_error", willReconnect: true }]);
    expect(h.core.state).toBe("reconnecting");
  });
});

describe("back-off", () => {
  it("grows with every round that fails, up to maxMs", () => {
    const h = new CoreHarness({ backoff: { initialMs: 100, maxMs: 1000 } }, { random: () => 0.999999 });
    const gw = h.connected();
    gw.drop();
    for (let i = 0; i < 6; i++) {
      h.untilNewLink().fail(); // WebTransport
      h.link().fail(); // WebSocket
    }
    expect(h.of("reconnecting").map((e) => e.delayMs)).toEqual([100, 200, 400, 800, 1000, 1000, 1000]);
  });

  it("does not reset at Welcome: a connection that dies before one liveness timeout keeps growing it", () => {
    const h = new CoreHarness({ backoff: { initialMs: 100, maxMs: 10_000 } }, { random: () => 0.999999 });
    let gw = h.connected(FAST);
    for (let i = 0; i < 4; i++) {
      h.advance(500);
      gw.peerJoined(i + 1);
      gw.drop();
      gw = h.untilNewLink().open();
      gw.resumed(FAST);
    }
    expect(h.of("reconnecting").map((e) => e.delayMs)).toEqual([100, 200, 400, 800]);
  });

  it("resets once a connection stayed healthy for one liveness timeout", () => {
    const h = new CoreHarness({ backoff: { initialMs: 100, maxMs: 10_000 } }, { random: () => 0.999999 });
    let gw = h.connected(FAST);
    gw.drop();
    gw = h.untilNewLink().open();
    gw.resumed(FAST);
    gw.drop();
    gw = h.untilNewLink().open();
    gw.resumed(FAST);
    expect(h.of("reconnecting").map((e) => e.delayMs)).toEqual([100, 200]);
    for (let i = 1; i <= 5; i++) {
      h.advance(250);
      gw.peerJoined(i); // a healthy gateway keeps talking
    }
    gw.drop();
    expect(h.of("reconnecting").map((e) => e.delayMs)).toEqual([100, 200, 100]);
  });
});

describe("GoAway", () => {
  function goAway(random: number) {
    const h = new CoreHarness({}, { random: () => random });
    const gw = h.connected();
    gw.deliver({ msg: { case: "goAway", value: { reason: Reason.SERVER_SHUTDOWN, reconnectAfterMs: 2000, spreadMs: 4000 } } });
    expect(h.of("goAway")).toEqual([{ reason: "server_shutdown", reconnectAfterMs: 2000, spreadMs: 4000 }]);
    h.advance(500);
    gw.drop({ clean: true, code: 1001 });
    expect(h.of("disconnected")).toEqual([{ reason: "go_away", willReconnect: true }]);
    return h;
  }

  it("reconnects no earlier than reconnect_after_ms (counted from the GoAway)", () => {
    const h = goAway(0);
    expect(h.of("reconnecting")).toEqual([{ attempt: 0, delayMs: 1500 }]);
    h.advance(1499);
    expect(h.links).toHaveLength(1);
    h.advance(1);
    expect(h.links).toHaveLength(2);
  });

  it("and no later than reconnect_after_ms + spread_ms, at a moment drawn uniformly in between", () => {
    expect(goAway(0.999999).of("reconnecting")[0]?.delayMs).toBe(5500);
    expect(goAway(0.5).of("reconnecting")[0]?.delayMs).toBe(3500);
  });
});

describe("remembering that WebTransport cannot open here", () => {
  /** WebTransport fails to open, WebSocket gets the Welcome. */
  function blocked(options = {}) {
    const h = new CoreHarness({ webTransportTimeoutMs: 3000, ...options });
    h.connect();
    h.advance(3000); // WebTransport: no answer at all (UDP dropped)
    const ws = h.link().open();
    ws.welcome({ livenessTimeoutMs: 60_000, pingIntervalMs: 20_000 });
    expect(ws.kind).toBe("websocket");
    return { h, ws };
  }

  it("goes WebSocket-first on the next reconnects instead of paying webTransportTimeoutMs each time", () => {
    const { h, ws } = blocked();
    ws.drop();
    const next = h.untilNewLink();
    expect(next.kind).toBe("websocket");
    next.fail();
    expect(h.link().kind).toBe("webtransport"); // still the fallback
  });

  it("for webTransportRetryMs only; then WebTransport comes first again", () => {
    const { h, ws } = blocked({ webTransportRetryMs: 60_000 });
    h.advance(60_000);
    ws.drop();
    expect(h.untilNewLink().kind).toBe("webtransport");
  });

  it("a session welcomed over WebTransport forgets it", () => {
    const { h, ws } = blocked();
    ws.drop();
    h.untilNewLink().fail(); // WebSocket this time
    const wt = h.link().open();
    expect(wt.kind).toBe("webtransport");
    wt.resumed({ livenessTimeoutMs: 60_000, pingIntervalMs: 20_000 });
    wt.drop();
    expect(h.untilNewLink().kind).toBe("webtransport");
  });

  it("a WebTransport that opened but was refused by the gateway proves nothing about UDP", () => {
    const h = new CoreHarness();
    h.connect();
    const wt = h.link().open();
    wt.error(ErrorCode.SHUTTING_DOWN, wt.hello().id);
    const ws = h.link().open();
    ws.welcome();
    ws.drop();
    expect(h.untilNewLink().kind).toBe("webtransport");
  });
});
