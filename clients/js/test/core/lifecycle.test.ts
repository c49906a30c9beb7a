/** Core: leaving (Bye), suspending (Suspend) and resuming with the page lifecycle. */
import { describe, expect, it } from "vitest";
import { CoreHarness } from "./harness.js";

const FREEZE = { type: "freeze" } as const;
const RESUME = { type: "resume" } as const;
const CACHED = { type: "pagehide", persisted: true } as const;
const UNLOADED = { type: "pagehide", persisted: false } as const;
const RESTORED = { type: "pageshow", persisted: true } as const;

describe("close(): Bye", () => {
  it("sends Bye, waits for the gateway to close, and never reconnects", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    const j = h.join("x");
    h.close();
    expect(gw.trace().at(-1)).toBe("bye");
    expect(gw.sentOf("bye")[0]!.seq).toBe(0n);
    expect(gw.closedBy).toBeUndefined();
    expect(h.core.state).toBe("closing");
    expect(h.rejection(j)).toBe("CLOSED");
    expect(h.of("disconnected")).toEqual([{ reason: "closed", willReconnect: false }]);
    gw.drop({ clean: true, code: 1000 });
    expect(h.core.state).toBe("closed");
    h.advance(60_000);
    expect(h.links).toHaveLength(1);
    expect(h.rejection(h.join("y"))).toBe("CLOSED");
    expect(h.rejection(h.connect())).toBe("CLOSED");
  });

  it("closes the connection itself when the gateway has not after closeGraceMs (1 s)", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    h.close();
    h.advance(999);
    expect(gw.closedBy).toBeUndefined();
    h.advance(1);
    expect(gw.closedBy).toBe("bye");
    expect(h.core.state).toBe("closed");
  });

  it("while reconnecting there is no session to say Bye on: the attempt is closed at once", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    gw.drop();
    const next = h.untilNewLink().open();
    h.close();
    expect(next.sentOf("bye")).toEqual([]);
    expect(next.closedBy).toBeDefined();
    expect(h.core.state).toBe("closed");
    expect(h.of("disconnected").at(-1)).toEqual({ reason: "closed", willReconnect: false });
  });

  it("close() during the back-off cancels the reconnect and rejects connect()", () => {
    const h = new CoreHarness();
    const c = h.connect();
    h.link().fail();
    h.link().fail();
    h.close();
    h.advance(60_000);
    expect(h.links).toHaveLength(2);
    expect(h.rejection(c)).toBe("CLOSED");
  });
});

describe("pagehide (unloaded for good)", () => {
  it("writes Bye and closes the connection in the same step", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    const s = h.send("x");
    h.page(UNLOADED);
    expect(gw.trace().slice(-1)).toEqual(["bye"]);
    expect(gw.closedBy).toBe("page unloaded");
    expect(h.core.state).toBe("closed");
    expect(h.rejection(s)).toBe("CLOSED");
  });

  it("pageshow without persisted (a normal load) does nothing", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    h.page({ type: "pageshow", persisted: false });
    expect(gw.trace()).toEqual(["hello"]);
    expect(h.core.state).toBe("connected");
  });
});

describe("freeze / pagehide (cached): Suspend", () => {
  for (const [name, event] of [
    ["freeze", FREEZE],
    ["pagehide persisted", CACHED],
  ] as const) {
    it(`${name}: Suspend goes out at once; then no reconnect, no liveness verdict, whatever the connection does`, () => {
      const h = new CoreHarness();
      const gw = h.connected({ livenessTimeoutMs: 1000, pingIntervalMs: 400 });
      h.page(event);
      expect(gw.trace()).toEqual(["hello", "suspend"]);
      expect(gw.sentOf("suspend")[0]!.seq).toBe(0n);
      expect(h.core.state).toBe("suspended");
      expect(h.of("disconnected")).toEqual([{ reason: "suspended", willReconnect: true }]);
      gw.drop({ clean: true, code: 4005 });
      h.advance(600_000);
      expect(h.links).toHaveLength(1);
      expect(gw.trace()).toEqual(["hello", "suspend"]);
      expect(h.of("disconnected")).toHaveLength(1);
      expect(h.core.pollTimeout()).toBeUndefined();
    });
  }

  it("pagehide (cached) then freeze: one Suspend", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    h.page(CACHED);
    h.page(FREEZE);
    expect(gw.sentOf("suspend")).toHaveLength(1);
  });

  it("frames still arriving on the suspended connection are left for the replay", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    gw.peerJoined(1);
    h.page(FREEZE);
    gw.peerJoined(2);
    expect(h.core.lastSeq).toBe(1);
    h.page(RESUME);
    expect(h.link().open().hello().lastSeq).toBe(1n);
  });

  it("freeze while a connection is being made: it is closed, and nothing happens until resume", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    gw.drop();
    const opening = h.untilNewLink();
    h.page(FREEZE);
    expect(opening.closedBy).toBeDefined();
    expect(h.core.state).toBe("suspended");
    h.advance(600_000);
    expect(h.links).toHaveLength(2);
    h.page(RESUME);
    expect(h.links).toHaveLength(3);
  });
});

describe("resume / pageshow (restored)", () => {
  for (const [name, event] of [
    ["resume", RESUME],
    ["pageshow persisted", RESTORED],
  ] as const) {
    it(`${name} after Suspend: reconnects at once and resumes the same session, queued frames after the resent ones`, () => {
      const h = new CoreHarness();
      const gw = h.connected({ peerId: "me", resumeToken: "tok-me" });
      h.send("before");
      h.page(CACHED);
      h.send("while frozen");
      h.advance(120_000);
      h.page(event);
      const next = h.link();
      expect(next).not.toBe(gw);
      expect(gw.closedBy).toBeDefined(); // had the gateway not closed it yet
      next.open();
      expect(next.hello()).toMatchObject({ resumeToken: "tok-me", attempt: 1n });
      next.resumed({ peerId: "me", lastClientSeq: 0n });
      expect(next.texts()).toEqual(["before", "while frozen"]);
      expect(h.core.peerId).toBe("me");
      expect(h.of("resumed")).toHaveLength(1);
      expect(h.of("connected")).toHaveLength(1);
    });
  }

  it("resume while still connected (no Suspend happened): a Ping at once proves the connection", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    h.page(RESUME);
    expect(gw.trace()).toEqual(["hello", "ping"]);
    expect(h.links).toHaveLength(1);
  });

  it("resume during a back-off starts the attempt at once", () => {
    const h = new CoreHarness({ backoff: { initialMs: 5000, maxMs: 5000 } }, { random: () => 0.999 });
    const gw = h.connected();
    gw.drop();
    expect(h.core.phaseKind).toBe("backingOff");
    h.page(RESUME);
    expect(h.links).toHaveLength(2);
  });

  it("resume does not cut short the wait a GoAway asked for", () => {
    const h = new CoreHarness({}, { random: () => 0 });
    const gw = h.connected();
    gw.deliver({ msg: { case: "goAway", value: { reason: 9, reconnectAfterMs: 5000, spreadMs: 0 } } });
    gw.drop({ clean: true, code: 1001 });
    h.page(RESUME);
    expect(h.links).toHaveLength(1);
    h.advance(5000);
    expect(h.links).toHaveLength(2);
  });
});
