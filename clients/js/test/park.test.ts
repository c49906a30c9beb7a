/**
 * Parking: while the page is hidden the session moves to WebSocket (a frozen page's
 * WebTransport sessions are closed by Chromium; its WebSocket keeps answering the gateway),
 * and back to WebTransport when the page is visible again. Each move is a resume that takes
 * the live session over: Hello{resume_token, last_seq, attempt + 1} on the new connection.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ErrorCode } from "../src/gen/signalgate/v1/signalgate_pb.js";
import { documentLifecycle, type LifecycleEvent } from "../src/lifecycle.js";
import { FakeLifecycle, harness, peerJoined, type FakeConn, type Harness } from "./helpers.js";

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

const SUPERSEDED = { clean: true, code: 4001, reason: "superseded" };
/** Liveness numbers that keep silent fake connections alive through long waits. */
const CALM = { livenessTimeoutMs: 600_000, pingIntervalMs: 240_000 };

/** Answers the last Ping sent on `conn`. */
function pongLast(conn: FakeConn): void {
  const p = conn.sentOf("ping").at(-1);
  if (!p) throw new Error("no Ping sent");
  conn.deliver({ seq: 0n, inReplyTo: p.id, msg: { case: "pong", value: { payload: p.msg.value.payload } } });
}

/** Answers the first Ping sent on `conn` (the end-of-replay marker after a resumed Welcome). */
function pongFirst(conn: FakeConn): void {
  const p = conn.sentOf("ping")[0];
  if (!p) throw new Error("no Ping sent");
  conn.deliver({ seq: 0n, inReplyTo: p.id, msg: { case: "pong", value: { payload: p.msg.value.payload } } });
}

function data(h: Harness, text: string): Promise<number> {
  return h.client.sendData("demo", "peer-b", new TextEncoder().encode(text));
}

function sentTexts(conn: FakeConn): string[] {
  return conn
    .sentOf("signal")
    .map((f) => (f.msg.value.payload.case === "data" ? new TextDecoder().decode(f.msg.value.payload.value) : "?"));
}

/** Connected over WebTransport (session tok-1), visible. */
async function onWebTransport(options = {}, liveness: Partial<typeof CALM> = CALM) {
  const page = new FakeLifecycle(false);
  const h = harness(options, { lifecycle: page });
  const wt = await h.connected({ resumeToken: "tok-1", ...liveness });
  expect(wt.kind).toBe("webtransport");
  return { h, page, wt };
}

/** Hidden → the move to WebSocket runs to its Welcome. */
async function park(h: Harness, page: FakeLifecycle, wt: FakeConn): Promise<FakeConn> {
  page.setHidden(true);
  await h.tick();
  const ws = h.net.last().open();
  await h.tick();
  pongLast(wt); // drain
  ws.welcome({ resumed: true, resumeToken: "tok-1", ...CALM });
  pongFirst(ws); // end of the (empty) replay
  expect(h.client.transport).toBe("websocket");
  return ws;
}

describe("parking while hidden", () => {
  it("hidden: drains the WebTransport connection, resumes on WebSocket, nothing lost or repeated, the superseded close ignored", async () => {
    const { h, page, wt } = await onWebTransport();
    for (let i = 1; i <= 3; i++) wt.deliver(peerJoined(i, `p${i}`));
    page.setHidden(true);
    await h.tick();
    expect(h.net.kinds()).toEqual(["webtransport", "websocket"]);
    expect(h.net.last().url).toBe("ws://127.0.0.1:4480/ws");
    // While WebSocket opens, the session works on WebTransport as before.
    await data(h, "before-open");
    expect(sentTexts(wt)).toEqual(["before-open"]);
    const ws = h.net.last().open();
    await h.tick();
    // Drain: a Ping on the old connection, no Hello yet; new signals are held back.
    expect(ws.sent).toEqual([]);
    const drainPing = wt.sentOf("ping").at(-1)!;
    let queuedSent = false;
    void data(h, "while-moving").then(() => (queuedSent = true));
    await h.tick();
    expect(queuedSent).toBe(false);
    expect(sentTexts(wt)).toEqual(["before-open"]);
    // Frames keep arriving on the old connection and are processed.
    wt.deliver(peerJoined(4, "p4"));
    wt.deliver({ seq: 0n, inReplyTo: drainPing.id, msg: { case: "pong", value: { payload: drainPing.msg.value.payload } } });
    // The Pong proves the gateway read everything: now the Hello, as a resume of this session.
    expect(ws.hello()).toMatchObject({ resumeToken: "tok-1", lastSeq: 4n, attempt: 1n });
    // Still on the old connection until Welcome: a frame sent there after the Hello counts too.
    wt.deliver(peerJoined(5, "p5"));
    // The gateway closes the old connection (4001 SUPERSEDED), here before the Welcome arrives.
    wt.drop(SUPERSEDED);
    expect(h.of("disconnected")).toEqual([]);
    expect(h.client.state).toBe("connected");
    ws.welcome({ resumed: true, resumeToken: "tok-1", ...CALM });
    expect(h.client.transport).toBe("websocket");
    expect(h.client.parked).toBe(true);
    const changed = h.of("transportChanged");
    expect(changed).toHaveLength(1);
    expect(changed[0]).toMatchObject({ from: "webtransport", to: "websocket", reason: "hidden" });
    // The held signal goes out on the new connection.
    await h.tick();
    expect(queuedSent).toBe(true);
    expect(sentTexts(ws)).toEqual(["while-moving"]);
    // The replay repeats seq 5 (processed on the old connection after the Hello): dropped.
    ws.deliver(peerJoined(5, "p5-again"));
    ws.deliver(peerJoined(6, "p6"));
    pongFirst(ws);
    expect(h.of("peerJoined").map((e) => e.peer.peerId)).toEqual(["p1", "p2", "p3", "p4", "p5", "p6"]);
    expect(h.client.lastSeq).toBe(6);
    // A move is not a reconnect.
    expect(h.of("resumed")).toEqual([]);
    expect(h.of("disconnected")).toEqual([]);
    expect(h.of("connected")).toHaveLength(1);
    // The Hello acknowledged 4; what was processed after it is acknowledged on the new connection.
    expect(ws.sentOf("ack").map((a) => a.msg.value.seq)).toContain(5n);
    // Frames on the old connection are ignored from now on.
    wt.deliver(peerJoined(7, "ghost"));
    expect(h.of("peerJoined").map((e) => e.peer.peerId)).not.toContain("ghost");
    await h.tick(60_000);
    expect(h.of("disconnected")).toEqual([]);
    expect(h.net.attempts).toHaveLength(2);
  });

  it("the superseded close arriving after the Welcome is ignored as well", async () => {
    const { h, page, wt } = await onWebTransport();
    const ws = await park(h, page, wt);
    wt.drop(SUPERSEDED);
    await h.tick(30_000);
    expect(h.of("disconnected")).toEqual([]);
    expect(h.client.transport).toBe("websocket");
    expect(ws.closedByClient).toBeUndefined();
  });

  it("visible again: moves back to WebTransport the same way, with a higher attempt", async () => {
    const { h, page, wt } = await onWebTransport();
    const ws = await park(h, page, wt);
    ws.deliver(peerJoined(1, "p1"));
    page.setHidden(false);
    await h.tick();
    expect(h.net.last().kind).toBe("webtransport");
    const wt2 = h.net.last().open();
    await h.tick();
    expect(wt2.sent).toEqual([]);
    pongLast(ws);
    expect(wt2.hello()).toMatchObject({ resumeToken: "tok-1", lastSeq: 1n, attempt: 2n });
    ws.drop(SUPERSEDED);
    wt2.welcome({ resumed: true, resumeToken: "tok-1" });
    pongFirst(wt2);
    expect(h.client.transport).toBe("webtransport");
    expect(h.client.parked).toBe(false);
    expect(h.of("transportChanged").map((e) => [e.from, e.to, e.reason])).toEqual([
      ["webtransport", "websocket", "hidden"],
      ["websocket", "webtransport", "visible"],
    ]);
    expect(h.of("disconnected")).toEqual([]);
    expect(h.of("resumed")).toEqual([]);
    await data(h, "back");
    expect(sentTexts(wt2)).toEqual(["back"]);
  });

  it("WebTransport failing when visible again: the session stays on WebSocket; the next visible tries again", async () => {
    const { h, page, wt } = await onWebTransport();
    const ws = await park(h, page, wt);
    page.setHidden(false);
    await h.tick();
    h.net.last().fail("Opening handshake failed");
    await h.tick();
    expect(h.of("transportFailed")).toEqual([{ transport: "webtransport", error: "Opening handshake failed" }]);
    expect(h.client.transport).toBe("websocket");
    expect(h.client.state).toBe("connected");
    expect(h.of("disconnected")).toEqual([]);
    await data(h, "still-here");
    expect(sentTexts(ws)).toEqual(["still-here"]);
    // No retry loop within this visibility...
    await h.tick(60_000);
    expect(h.net.kinds()).toEqual(["webtransport", "websocket", "webtransport"]);
    // ...hidden again: already on WebSocket, nothing to do; visible: one more try.
    page.setHidden(true);
    await h.tick();
    expect(h.net.attempts).toHaveLength(3);
    page.setHidden(false);
    await h.tick();
    expect(h.net.kinds()).toEqual(["webtransport", "websocket", "webtransport", "webtransport"]);
  });

  it("WebTransport that does not open in time when visible: the session keeps working on WebSocket meanwhile", async () => {
    const { h, page, wt } = await onWebTransport({ webTransportTimeoutMs: 3000 });
    const ws = await park(h, page, wt);
    page.setHidden(false);
    await h.tick();
    const slow = h.net.last();
    await data(h, "during-attempt");
    expect(sentTexts(ws)).toEqual(["during-attempt"]);
    await h.tick(3000);
    expect(slow.options.signal.aborted).toBe(true);
    expect(h.of("transportFailed")).toHaveLength(1);
    expect(h.client.transport).toBe("websocket");
    expect(h.of("disconnected")).toEqual([]);
  });

  it("no Welcome to the move's Hello: the session stays on the old connection; the new one is given up, not closed", async () => {
    const { h, page, wt } = await onWebTransport({ helloTimeoutMs: 2000 });
    page.setHidden(true);
    await h.tick();
    const ws = h.net.last().open();
    await h.tick();
    pongLast(wt);
    expect(ws.hello().attempt).toBe(1n);
    const queued = data(h, "held");
    await h.tick(2000);
    expect(h.of("transportFailed")).toEqual([{ transport: "websocket", error: "no Welcome within 2000 ms" }]);
    // Closing it would tell the gateway that the client leaves, should the Hello have moved the session there.
    expect(ws.closedByClient).toBeUndefined();
    await queued;
    expect(sentTexts(wt)).toEqual(["held"]);
    expect(h.client.transport).toBe("webtransport");
    expect(h.of("disconnected")).toEqual([]);
    // Had the gateway handed the session over, it closes the old connection: an ordinary resume follows.
    wt.drop(SUPERSEDED);
    expect(h.of("disconnected")).toEqual([{ reason: "connection_lost", willReconnect: true }]);
    await h.nextAttempt();
    const again = h.net.last().open();
    await h.tick();
    expect(again.kind).toBe("websocket"); // hidden: WebSocket first
    expect(again.hello()).toMatchObject({ resumeToken: "tok-1", attempt: 2n });
  });

  it("a drain Ping that gets no Pong: the Hello goes after one ping interval anyway", async () => {
    const { h, page, wt } = await onWebTransport({}, { pingIntervalMs: 4000 });
    page.setHidden(true);
    await h.tick();
    const ws = h.net.last().open();
    await h.tick();
    expect(wt.sentOf("ping")).toHaveLength(1);
    await h.tick(3999);
    expect(ws.sent).toEqual([]);
    await h.tick(1);
    expect(ws.hello()).toMatchObject({ resumeToken: "tok-1", attempt: 1n });
  });

  it("the old connection lost before the new one opened: the move is dropped, an ordinary resume follows (WebSocket first while hidden)", async () => {
    const { h, page, wt } = await onWebTransport();
    wt.deliver(peerJoined(1));
    page.setHidden(true);
    await h.tick();
    const opening = h.net.last();
    wt.drop();
    expect(opening.options.signal.aborted).toBe(true);
    expect(h.of("disconnected")).toEqual([{ reason: "connection_lost", willReconnect: true }]);
    await h.nextAttempt();
    const ws = h.net.last().open();
    await h.tick();
    expect(ws.kind).toBe("websocket");
    expect(ws.hello()).toMatchObject({ resumeToken: "tok-1", lastSeq: 1n, attempt: 1n });
    ws.welcome({ resumed: true, resumeToken: "tok-1", ...CALM });
    pongFirst(ws);
    expect(h.of("resumed")).toHaveLength(1);
    expect(h.client.parked).toBe(true);
  });

  it("both connections lost after the Hello: disconnected once, then an ordinary resume", async () => {
    const { h, page, wt } = await onWebTransport();
    page.setHidden(true);
    await h.tick();
    const ws = h.net.last().open();
    await h.tick();
    pongLast(wt);
    wt.drop();
    expect(h.of("disconnected")).toEqual([]);
    ws.drop();
    expect(h.of("transportFailed").map((e) => e.transport)).toEqual(["websocket"]);
    expect(h.of("disconnected")).toEqual([{ reason: "connection_lost", willReconnect: true }]);
    expect(h.client.state).toBe("reconnecting");
    await h.nextAttempt();
    const next = h.net.last().open();
    await h.tick();
    expect(next.hello()).toMatchObject({ resumeToken: "tok-1", attempt: 2n });
  });

  it("the old connection lost while draining: the Hello goes at once", async () => {
    const { h, page, wt } = await onWebTransport();
    page.setHidden(true);
    await h.tick();
    const ws = h.net.last().open();
    await h.tick();
    expect(ws.sent).toEqual([]);
    wt.drop();
    expect(ws.hello()).toMatchObject({ resumeToken: "tok-1", attempt: 1n });
    ws.welcome({ resumed: true, resumeToken: "tok-1", ...CALM });
    expect(h.of("disconnected")).toEqual([]);
    expect(h.of("transportChanged")).toHaveLength(1);
  });

  it("a request written before the move is answered once, by the replay; one made during it goes on the new connection", async () => {
    const { h, page, wt } = await onWebTransport();
    const before = h.client.join("a");
    const joinA = wt.sentOf("join")[0]!;
    page.setHidden(true);
    await h.tick();
    const ws = h.net.last().open();
    await h.tick();
    const during = h.client.join("b");
    pongLast(wt);
    ws.welcome({ resumed: true, resumeToken: "tok-1", ...CALM });
    // The reply to "a" was sent on the old connection after the Hello: it comes in the replay.
    ws.deliver({ seq: 1n, inReplyTo: joinA.id, msg: { case: "joined", value: { room: "a", peers: [] } } });
    pongFirst(ws);
    await expect(before).resolves.toEqual({ room: "a", peers: [] });
    expect(ws.sentOf("join").map((j) => j.msg.value.room)).toEqual(["b"]);
    ws.deliver({ seq: 2n, inReplyTo: ws.sentOf("join")[0]!.id, msg: { case: "joined", value: { room: "b", peers: [] } } });
    await expect(during).resolves.toEqual({ room: "b", peers: [] });
    expect([...h.client.rooms].sort()).toEqual(["a", "b"]);
  });

  it("visible again before the move finished: it completes, then moves back", async () => {
    const { h, page, wt } = await onWebTransport();
    page.setHidden(true);
    await h.tick();
    const ws = h.net.last().open();
    await h.tick();
    page.setHidden(false);
    await h.tick();
    expect(h.net.attempts).toHaveLength(2); // one move at a time
    pongLast(wt);
    ws.welcome({ resumed: true, resumeToken: "tok-1", ...CALM });
    pongFirst(ws);
    await h.tick();
    expect(h.net.last().kind).toBe("webtransport");
    expect(h.net.attempts).toHaveLength(3);
  });

  it("RESUME_GAP answering the move's Hello: the session is gone; a fresh one on the new transport", async () => {
    const { h, page, wt } = await onWebTransport();
    page.setHidden(true);
    await h.tick();
    const ws = h.net.last().open();
    await h.tick();
    pongLast(wt);
    ws.deliver({ seq: 0n, inReplyTo: ws.hello().id, msg: { case: "error", value: { code: ErrorCode.RESUME_GAP, message: "gap" } } });
    expect(h.of("sessionLost")).toEqual([{ previousPeerId: "peer-a", code: "RESUME_GAP", message: "gap" }]);
    await h.tick();
    const fresh = h.net.last().open();
    await h.tick();
    expect(fresh.kind).toBe("websocket");
    expect(fresh.hello()).toMatchObject({ resumeToken: "", attempt: 0n });
    fresh.welcome({ peerId: "peer-new", resumeToken: "tok-2" });
    expect(h.of("connected").map((e) => e.peerId)).toEqual(["peer-a", "peer-new"]);
    expect(wt.closedByClient).toBeDefined();
  });

  it("close() during a move closes both connections and cancels it", async () => {
    const { h, page, wt } = await onWebTransport();
    page.setHidden(true);
    await h.tick();
    const ws = h.net.last().open();
    await h.tick();
    pongLast(wt);
    h.client.close();
    expect(wt.closedByClient).toBeDefined();
    expect(ws.closedByClient).toBeDefined();
    expect(h.of("disconnected")).toEqual([{ reason: "closed", willReconnect: false }]);
    expect(page.subscribers).toBe(0);
    page.setHidden(false);
    await h.tick(10_000);
    expect(h.net.attempts).toHaveLength(2);
  });

  it("connecting while hidden: WebSocket first, then WebTransport once visible", async () => {
    const page = new FakeLifecycle(true);
    const h = harness({}, { lifecycle: page });
    const ws = await h.connected({ resumeToken: "tok-1" });
    expect(ws.kind).toBe("websocket");
    expect(h.client.parked).toBe(true);
    page.setHidden(false);
    await h.tick();
    expect(h.net.last().kind).toBe("webtransport");
    const wt = h.net.last().open();
    await h.tick();
    pongLast(ws);
    expect(wt.hello()).toMatchObject({ resumeToken: "tok-1", attempt: 1n });
    wt.welcome({ resumed: true, resumeToken: "tok-1" });
    expect(h.of("transportChanged").map((e) => e.reason)).toEqual(["visible"]);
  });

  it("a page on WebSocket because WebTransport failed stays there when hidden and visible", async () => {
    const page = new FakeLifecycle(false);
    const h = harness({}, { lifecycle: page });
    void h.client.connect();
    await h.tick();
    h.net.last().fail();
    await h.tick();
    const ws = h.net.last().open();
    await h.tick();
    ws.welcome({ resumeToken: "tok-1", ...CALM });
    page.setHidden(true);
    await h.tick();
    page.setHidden(false);
    await h.tick(10_000);
    expect(h.net.kinds()).toEqual(["webtransport", "websocket"]);
  });

  it("forced transports and parkWhenHidden: false never move", async () => {
    for (const options of [{ transport: "webtransport" as const }, { transport: "websocket" as const }, { parkWhenHidden: false }]) {
      const page = new FakeLifecycle(false);
      const h = harness(options, { lifecycle: page });
      await h.connected({ resumeToken: "tok-1", ...CALM });
      page.setHidden(true);
      await h.tick(10_000);
      page.setHidden(false);
      await h.tick(10_000);
      expect(h.net.attempts).toHaveLength(1);
      expect(h.of("transportChanged")).toEqual([]);
      h.client.close();
    }
  });

  it("no move without a resume token, nor without WebTransport in this browser", async () => {
    const page = new FakeLifecycle(false);
    const h = harness({}, { lifecycle: page });
    await h.connected({ resumeToken: "", ...CALM });
    page.setHidden(true);
    await h.tick(10_000);
    expect(h.net.attempts).toHaveLength(1);

    const page2 = new FakeLifecycle(false);
    const h2 = harness({}, { lifecycle: page2, wtAvailable: false });
    await h2.connected({ resumeToken: "tok-1", ...CALM });
    page2.setHidden(true);
    await h2.tick(10_000);
    page2.setHidden(false);
    await h2.tick(10_000);
    expect(h2.net.kinds()).toEqual(["websocket"]);
  });
});

describe("page lifecycle: unload and back/forward cache", () => {
  it("pagehide (tab closing, navigating away): the visibilitychange that follows opens no WebSocket", async () => {
    const { h, page } = await onWebTransport();
    page.fire("pagehide");
    page.setHidden(true);
    await h.tick(1000);
    expect(h.net.attempts).toHaveLength(1);
  });

  it("pageshow (restored from the back/forward cache): parks again when hidden", async () => {
    const { h, page } = await onWebTransport();
    page.fire("pagehide");
    page.setHidden(true);
    page.fire("freeze");
    page.fire("resume");
    page.fire("pageshow");
    await h.tick();
    expect(h.net.kinds()).toEqual(["webtransport", "websocket"]);
  });

  it("documentLifecycle: visibility from document; events from document and window; unsubscribe", () => {
    const doc = Object.assign(new EventTarget(), { visibilityState: "visible" as DocumentVisibilityState });
    const win = new EventTarget();
    const lc = documentLifecycle(doc, win);
    const seen: LifecycleEvent[] = [];
    const stop = lc.subscribe((e) => seen.push(e));
    expect(lc.hidden()).toBe(false);
    doc.visibilityState = "hidden";
    expect(lc.hidden()).toBe(true);
    for (const type of ["visibilitychange", "freeze", "resume"]) doc.dispatchEvent(new Event(type));
    for (const type of ["pagehide", "pageshow"]) win.dispatchEvent(new Event(type));
    expect(seen).toEqual(["visibilitychange", "freeze", "resume", "pagehide", "pageshow"]);
    stop();
    doc.dispatchEvent(new Event("visibilitychange"));
    win.dispatchEvent(new Event("pagehide"));
    expect(seen).toHaveLength(5);
    // No document (workers, Node): always visible.
    expect(documentLifecycle(undefined).hidden()).toBe(false);
  });
});

describe("page lifecycle: resume after a freeze", () => {
  it("connected: a Ping at once", async () => {
    const { page, wt } = await onWebTransport();
    expect(wt.sentOf("ping")).toHaveLength(0);
    page.fire("resume");
    expect(wt.sentOf("ping")).toHaveLength(1);
  });

  it("waiting to reconnect: the back-off is cut short", async () => {
    const { h, page, wt } = await onWebTransport({ backoff: { initialMs: 5000, maxMs: 5000 } });
    wt.drop();
    expect(h.of("reconnecting")).toHaveLength(1);
    page.fire("resume");
    await h.tick();
    expect(h.net.attempts).toHaveLength(2);
  });

  it("waiting out a GoAway's reconnect_after_ms: not cut short", async () => {
    const { h, page, wt } = await onWebTransport();
    wt.deliver({ seq: 0n, msg: { case: "goAway", value: { reconnectAfterMs: 5000 } } });
    wt.drop({ clean: true });
    page.fire("resume");
    await h.tick();
    expect(h.net.attempts).toHaveLength(1);
  });
});
