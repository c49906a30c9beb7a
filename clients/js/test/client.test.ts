import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { SignalgateError } from "../src/errors.js";
import { ErrorCode, PresenceState, Reason, SdpType, Transport } from "../src/gen/signalgate/v1/signalgate_pb.js";
import { SignalgateClient } from "../src/client.js";
import { harness, peerJoined, type FakeConn, type Harness } from "./helpers.js";

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

function errorFrame(code: ErrorCode, inReplyTo: bigint, seq = 0n, message = "nope") {
  return { seq, inReplyTo, msg: { case: "error" as const, value: { code, message, inReplyTo } } };
}

/** Connection lost → wait out the back-off → the next attempt's connection is open. */
async function reconnect(h: Harness, old: FakeConn): Promise<FakeConn> {
  old.drop();
  await h.nextAttempt();
  const conn = h.net.last().open();
  await h.tick();
  return conn;
}

describe("connect: Hello / Welcome", () => {
  it("tries WebTransport first, sends Hello, and is connected on Welcome", async () => {
    const h = harness({ client: "test/1", token: "secret" });
    const connecting = h.client.connect();
    expect(h.client.state).toBe("connecting");
    await h.tick();
    expect(h.net.kinds()).toEqual(["webtransport"]);
    expect(h.net.last().url).toBe("https://127.0.0.1:4433/wt");
    const conn = h.net.last().open();
    await h.tick();
    const hello = conn.hello();
    expect(hello.client).toBe("test/1");
    expect(hello.token).toBe("secret");
    expect(hello.resumeToken).toBe("");
    expect(hello.lastSeq).toBe(0n);
    expect(hello.attempt).toBe(0n);
    expect(hello.id).not.toBe(0n);
    conn.welcome({ peerId: "peer-a", sessionId: "s-1" });
    await connecting;
    expect(h.client.state).toBe("connected");
    expect(h.client.transport).toBe("webtransport");
    expect(h.client.peerId).toBe("peer-a");
    expect(h.of("connected")).toEqual([{ transport: "webtransport", peerId: "peer-a", sessionId: "s-1" }]);
  });

  it("passes serverCertificateHashes to the WebTransport connector", async () => {
    const value = new Uint8Array(32).fill(7);
    const h = harness({ serverCertificateHashes: [{ algorithm: "sha-256", value }] });
    void h.client.connect();
    await h.tick();
    expect(h.net.last().options.serverCertificateHashes).toEqual([{ algorithm: "sha-256", value }]);
  });

  it("frames that arrive right behind Welcome (same chunk) are not lost", async () => {
    const h = harness();
    void h.client.connect();
    await h.tick();
    const conn = h.net.last().open();
    await h.tick();
    conn.welcome();
    conn.deliver(peerJoined(1, "peer-b"));
    expect(h.of("peerJoined")).toEqual([{ room: "demo", peer: { peerId: "peer-b", state: "online" } }]);
  });

  it("ignores everything but Welcome/Error before Welcome", async () => {
    const h = harness();
    void h.client.connect();
    await h.tick();
    const conn = h.net.last().open();
    await h.tick();
    conn.deliver(peerJoined(1));
    expect(h.of("peerJoined")).toEqual([]);
    expect(h.client.state).toBe("connecting");
  });

  it("requests before connect() reject with NOT_CONNECTED", async () => {
    const h = harness();
    await expect(h.client.join("demo")).rejects.toMatchObject({ code: "NOT_CONNECTED" });
  });

  it("needs at least one URL matching the forced transport", () => {
    expect(() => new SignalgateClient({ webSocketUrl: "ws://x/ws", transport: "webtransport" })).toThrow(TypeError);
    expect(() => new SignalgateClient({})).toThrow(TypeError);
  });
});

describe("transport fallback", () => {
  it("falls back to WebSocket at once when WebTransport fails", async () => {
    const h = harness();
    void h.client.connect();
    await h.tick();
    h.net.last().fail("Opening handshake failed");
    await h.tick();
    expect(h.net.kinds()).toEqual(["webtransport", "websocket"]);
    expect(h.net.last().url).toBe("ws://127.0.0.1:4480/ws");
    expect(h.of("transportFailed")).toEqual([{ transport: "webtransport", error: "Opening handshake failed" }]);
    const conn = h.net.last().open();
    await h.tick();
    conn.welcome();
    await h.tick();
    expect(h.client.transport).toBe("websocket");
    expect(h.of("connected")[0]?.transport).toBe("websocket");
  });

  it("falls back when WebTransport does not open within webTransportTimeoutMs, and closes it if it opens later", async () => {
    const h = harness({ webTransportTimeoutMs: 3000 });
    void h.client.connect();
    await h.tick();
    const wt = h.net.last();
    await h.tick(2999);
    expect(h.net.kinds()).toEqual(["webtransport"]);
    expect(wt.options.signal.aborted).toBe(false);
    await h.tick(1);
    expect(h.net.kinds()).toEqual(["webtransport", "websocket"]);
    expect(wt.options.signal.aborted).toBe(true);
    // The slow WebTransport finally opens: it must not be used.
    const late = wt.open();
    await h.tick();
    expect(late.closedByClient).toBeDefined();
    expect(late.sent).toEqual([]);
  });

  it("falls back when WebTransport opens but the Hello gets an error", async () => {
    const h = harness();
    void h.client.connect();
    await h.tick();
    const wt = h.net.last().open();
    await h.tick();
    wt.deliver(errorFrame(ErrorCode.UNSUPPORTED_FRAME, wt.hello().id));
    await h.tick();
    expect(wt.closedByClient).toBeDefined();
    expect(h.net.kinds()).toEqual(["webtransport", "websocket"]);
  });

  it("uses only WebSocket when WebTransport is missing in this browser", async () => {
    const h = harness({}, { wtAvailable: false });
    void h.client.connect();
    await h.tick();
    expect(h.net.kinds()).toEqual(["websocket"]);
  });

  it("uses only WebSocket when no webTransportUrl is given", async () => {
    const h = harness({ webTransportUrl: undefined });
    void h.client.connect();
    await h.tick();
    expect(h.net.kinds()).toEqual(["websocket"]);
  });

  it("transport: 'websocket' never tries WebTransport", async () => {
    const h = harness({ transport: "websocket" });
    void h.client.connect();
    await h.tick();
    h.net.last().fail();
    await h.tick(60_000);
    expect(h.net.attempts.length).toBeGreaterThan(2);
    expect(new Set(h.net.kinds())).toEqual(new Set(["websocket"]));
  });

  it("transport: 'webtransport' never falls back; it retries WebTransport with back-off", async () => {
    const h = harness({ transport: "webtransport" });
    void h.client.connect();
    await h.tick();
    h.net.last().fail();
    await h.tick();
    expect(h.net.kinds()).toEqual(["webtransport"]);
    expect(h.of("reconnecting")).toHaveLength(1);
    await h.nextAttempt();
    expect(h.net.kinds()).toEqual(["webtransport", "webtransport"]);
  });

  it("retries the whole order (WebTransport first again) after every transport failed", async () => {
    const h = harness();
    void h.client.connect();
    await h.tick();
    h.net.last().fail();
    await h.tick();
    h.net.last().fail();
    await h.tick();
    expect(h.net.kinds()).toEqual(["webtransport", "websocket"]);
    await h.nextAttempt();
    expect(h.net.kinds()).toEqual(["webtransport", "websocket", "webtransport"]);
  });
});

describe("ordered stream: seq, duplicates, acks", () => {
  it("processes each seq once: duplicates and old seqs are dropped; seq 0 frames are always processed", async () => {
    const h = harness();
    const conn = await h.connected();
    conn.deliver(peerJoined(1, "b"));
    conn.deliver(peerJoined(2, "c"));
    conn.deliver(peerJoined(2, "c-dup"));
    conn.deliver(peerJoined(1, "b-dup"));
    conn.deliver(peerJoined(3, "d"));
    expect(h.of("peerJoined").map((e) => e.peer.peerId)).toEqual(["b", "c", "d"]);
    expect(h.client.lastSeq).toBe(3);
    // seq 0 (connection frames): an unsolicited Error, twice: both are delivered.
    conn.deliver(errorFrame(ErrorCode.RATE_LIMITED, 0n));
    conn.deliver(errorFrame(ErrorCode.RATE_LIMITED, 0n));
    expect(h.of("error")).toHaveLength(2);
    expect(h.client.lastSeq).toBe(3);
  });

  it("acks at once after 16 frames, with the highest seq", async () => {
    const h = harness();
    const conn = await h.connected();
    for (let i = 1; i <= 15; i++) conn.deliver(peerJoined(i));
    expect(conn.sentOf("ack")).toHaveLength(0);
    conn.deliver(peerJoined(16));
    const acks = conn.sentOf("ack");
    expect(acks.map((a) => a.msg.value.seq)).toEqual([16n]);
    expect(acks[0]!.id).toBe(0n);
  });

  it("acks within 500 ms when fewer frames arrived, and only once per batch", async () => {
    const h = harness();
    const conn = await h.connected();
    conn.deliver(peerJoined(1));
    await h.tick(200);
    conn.deliver(peerJoined(2));
    conn.deliver(peerJoined(3));
    await h.tick(299);
    expect(conn.sentOf("ack")).toHaveLength(0);
    await h.tick(1);
    expect(conn.sentOf("ack").map((a) => a.msg.value.seq)).toEqual([3n]);
    await h.tick(5000);
    // Nothing new: no further Ack (Pings may go out, Acks not).
    expect(conn.sentOf("ack")).toHaveLength(1);
  });

  it("40 frames in a burst produce 2 immediate Acks and one delayed Ack for the rest", async () => {
    const h = harness();
    const conn = await h.connected();
    for (let i = 1; i <= 40; i++) conn.deliver(peerJoined(i));
    expect(conn.sentOf("ack").map((a) => a.msg.value.seq)).toEqual([16n, 32n]);
    await h.tick(500);
    expect(conn.sentOf("ack").map((a) => a.msg.value.seq)).toEqual([16n, 32n, 40n]);
  });

  it("duplicates do not count towards the Ack", async () => {
    const h = harness();
    const conn = await h.connected();
    conn.deliver(peerJoined(1));
    for (let i = 0; i < 20; i++) conn.deliver(peerJoined(1));
    expect(conn.sentOf("ack")).toHaveLength(0);
  });
});

describe("resume", () => {
  it("reconnects after a loss with Hello{resume_token, last_seq, attempt} and an increasing attempt", async () => {
    const h = harness();
    const conn = await h.connected({ resumeToken: "tok-1" });
    for (let i = 1; i <= 5; i++) conn.deliver(peerJoined(i));
    conn.drop();
    expect(h.client.state).toBe("reconnecting");
    expect(h.of("disconnected")).toEqual([{ reason: "connection_lost", willReconnect: true }]);
    await h.nextAttempt();
    expect(h.net.last().kind).toBe("webtransport"); // same preference order
    const second = h.net.last().open();
    await h.tick();
    expect(second.hello()).toMatchObject({ resumeToken: "tok-1", lastSeq: 5n, attempt: 1n });
    // This attempt dies before Welcome: the next one carries a higher attempt.
    second.drop();
    await h.tick();
    expect(h.net.last().kind).toBe("websocket");
    const third = h.net.last().open();
    await h.tick();
    expect(third.hello()).toMatchObject({ resumeToken: "tok-1", lastSeq: 5n, attempt: 2n });
  });

  it("emits resumed with the number of replayed frames once the replay is complete", async () => {
    const h = harness();
    const conn = await h.connected();
    for (let i = 1; i <= 3; i++) conn.deliver(peerJoined(i, `p${i}`));
    const next = await reconnect(h, conn);
    next.welcome({ resumed: true, rooms: ["demo"] });
    expect(h.client.state).toBe("connected");
    // Replay: an overlap with what we had (dropped) and two new frames.
    next.deliver(peerJoined(3, "p3-again"));
    next.deliver(peerJoined(4, "p4"));
    next.deliver(peerJoined(5, "p5"));
    expect(h.of("resumed")).toEqual([]);
    // The Pong to the Ping sent right after Welcome marks the end of the replay.
    const marker = next.sentOf("ping")[0]!;
    next.deliver({ seq: 0n, inReplyTo: marker.id, msg: { case: "pong", value: { payload: marker.msg.value.payload } } });
    expect(h.of("resumed")).toEqual([{ transport: "webtransport", peerId: "peer-a", sessionId: "s-1", replayed: 2 }]);
    expect(h.of("connected")).toHaveLength(1); // no second 'connected'
    expect(h.of("peerJoined").map((e) => e.peer.peerId)).toEqual(["p1", "p2", "p3", "p4", "p5"]);
    expect([...h.client.rooms]).toEqual(["demo"]);
  });

  it("matches the replay marker by Pong payload when the gateway leaves in_reply_to empty", async () => {
    const h = harness();
    const conn = await h.connected();
    const next = await reconnect(h, conn);
    next.welcome({ resumed: true });
    const marker = next.sentOf("ping")[0]!;
    next.deliver({ seq: 0n, msg: { case: "pong", value: { payload: marker.msg.value.payload } } });
    expect(h.of("resumed")).toHaveLength(1);
  });

  it("RESUME_EXPIRED: fresh session (sessionLost, then connected, not resumed) and re-joins the rooms", async () => {
    const h = harness();
    const conn = await h.connected({ peerId: "old-peer", resumeToken: "tok-old" });
    const joining = h.client.join("lobby");
    const joinId = conn.sentOf("join")[0]!.id;
    conn.deliver({ seq: 1n, inReplyTo: joinId, msg: { case: "joined", value: { room: "lobby", peers: [] } } });
    await joining;
    const next = await reconnect(h, conn);
    expect(next.hello().resumeToken).toBe("tok-old");
    next.deliver(errorFrame(ErrorCode.RESUME_EXPIRED, next.hello().id, 0n, "unknown token"));
    expect(h.of("sessionLost")).toEqual([{ previousPeerId: "old-peer", code: "RESUME_EXPIRED", message: "unknown token" }]);
    expect(next.closedByClient).toBeDefined();
    await h.tick();
    // At once (no back-off), on the same transport, a Hello without token.
    const fresh = h.net.last().open();
    await h.tick();
    expect(fresh.kind).toBe("webtransport");
    expect(fresh.hello()).toMatchObject({ resumeToken: "", lastSeq: 0n, attempt: 0n });
    fresh.welcome({ peerId: "new-peer", resumeToken: "tok-new", sessionId: "s-2" });
    expect(h.of("connected").map((e) => e.peerId)).toEqual(["old-peer", "new-peer"]);
    expect(h.of("resumed")).toEqual([]);
    expect(h.client.peerId).toBe("new-peer");
    // The SDK re-joins 'lobby' by itself.
    const rejoin = fresh.sentOf("join");
    expect(rejoin.map((j) => j.msg.value.room)).toEqual(["lobby"]);
    fresh.deliver({
      seq: 1n,
      inReplyTo: rejoin[0]!.id,
      msg: { case: "joined", value: { room: "lobby", peers: [{ peerId: "peer-z", state: PresenceState.ONLINE }] } },
    });
    expect(h.of("joined").at(-1)).toEqual({ room: "lobby", peers: [{ peerId: "peer-z", state: "online" }], rejoined: true });
    expect([...h.client.rooms]).toEqual(["lobby"]);
    // seq restarted with the new session: seq 1 of the new session was processed above.
    expect(h.client.lastSeq).toBe(1);
  });

  it("RESUME_GAP behaves the same (new session, sessionLost with code RESUME_GAP)", async () => {
    const h = harness();
    const conn = await h.connected();
    const next = await reconnect(h, conn);
    next.deliver(errorFrame(ErrorCode.RESUME_GAP, next.hello().id));
    await h.tick();
    expect(h.of("sessionLost")[0]?.code).toBe("RESUME_GAP");
    const fresh = h.net.last().open();
    await h.tick();
    expect(fresh.hello().resumeToken).toBe("");
  });

  it("a room whose automatic re-join was cut off is re-joined on the session after", async () => {
    const h = harness();
    const conn = await h.connected();
    const j = h.client.join("lobby");
    conn.deliver({ seq: 1n, inReplyTo: conn.sentOf("join")[0]!.id, msg: { case: "joined", value: { room: "lobby", peers: [] } } });
    await j;
    let next = await reconnect(h, conn);
    next.deliver(errorFrame(ErrorCode.RESUME_EXPIRED, next.hello().id));
    await h.tick();
    let fresh = h.net.last().open();
    await h.tick();
    fresh.welcome({ resumeToken: "tok-2" });
    expect(fresh.sentOf("join").map((x) => x.msg.value.room)).toEqual(["lobby"]);
    // Lost again before the re-join was answered, and the resume is refused again.
    next = await reconnect(h, fresh);
    next.deliver(errorFrame(ErrorCode.RESUME_EXPIRED, next.hello().id));
    await h.tick();
    fresh = h.net.last().open();
    await h.tick();
    fresh.welcome({ resumeToken: "tok-3" });
    expect(fresh.sentOf("join").map((x) => x.msg.value.room)).toEqual(["lobby"]);
    expect(h.of("error")).toEqual([]);
  });

  it("RESUME_EXPIRED answering a Hello without token is an ordinary failure, not a tight loop", async () => {
    const h = harness();
    void h.client.connect();
    await h.tick();
    const conn = h.net.last().open();
    await h.tick();
    conn.deliver(errorFrame(ErrorCode.RESUME_EXPIRED, conn.hello().id));
    await h.tick();
    expect(h.of("sessionLost")).toEqual([]);
    expect(h.net.kinds()).toEqual(["webtransport", "websocket"]);
  });

  it("requests on the lost session are rejected with SESSION_LOST; later ones go on the new session", async () => {
    const h = harness();
    const conn = await h.connected();
    const pendingJoin = h.client.join("a");
    const next = await reconnect(h, conn);
    next.deliver(errorFrame(ErrorCode.RESUME_EXPIRED, next.hello().id));
    await expect(pendingJoin).rejects.toMatchObject({ code: "SESSION_LOST" });
  });

  it("STALE_ATTEMPT: this attempt is obsolete; the client stops instead of fighting the newer holder", async () => {
    const h = harness();
    const conn = await h.connected();
    const next = await reconnect(h, conn);
    const attempts = h.net.attempts.length;
    next.deliver(errorFrame(ErrorCode.STALE_ATTEMPT, next.hello().id));
    await h.tick(60_000);
    expect(next.closedByClient).toBeDefined();
    expect(h.net.attempts.length).toBe(attempts);
    expect(h.client.state).toBe("closed");
    expect(h.of("disconnected").at(-1)).toEqual({ reason: "superseded", willReconnect: false });
  });

  it("a request sent just before the loss and not answered in the replay is sent again after it", async () => {
    const h = harness();
    const conn = await h.connected();
    const joining = h.client.join("room-x");
    const id = conn.sentOf("join")[0]!.id;
    const next = await reconnect(h, conn);
    next.welcome({ resumed: true });
    expect(next.sentOf("join")).toHaveLength(0); // not yet: the reply may still be in the replay
    const marker = next.sentOf("ping")[0]!;
    next.deliver({ seq: 0n, inReplyTo: marker.id, msg: { case: "pong", value: { payload: marker.msg.value.payload } } });
    expect(next.sentOf("join").map((j) => [j.id, j.msg.value.room])).toEqual([[id, "room-x"]]);
    next.deliver({ seq: 1n, inReplyTo: id, msg: { case: "joined", value: { room: "room-x", peers: [] } } });
    await expect(joining).resolves.toEqual({ room: "room-x", peers: [] });
  });

  it("a reply that comes in the replay resolves the request without sending it again", async () => {
    const h = harness();
    const conn = await h.connected();
    const joining = h.client.join("room-y");
    const id = conn.sentOf("join")[0]!.id;
    const next = await reconnect(h, conn);
    next.welcome({ resumed: true });
    next.deliver({ seq: 1n, inReplyTo: id, msg: { case: "joined", value: { room: "room-y", peers: [] } } });
    const marker = next.sentOf("ping")[0]!;
    next.deliver({ seq: 0n, inReplyTo: marker.id, msg: { case: "pong", value: { payload: marker.msg.value.payload } } });
    await expect(joining).resolves.toMatchObject({ room: "room-y" });
    expect(next.sentOf("join")).toHaveLength(0);
  });

  it("queues requests made while reconnecting and sends them after Welcome", async () => {
    const h = harness();
    const conn = await h.connected();
    conn.drop();
    const joining = h.client.join("later");
    const signalled = h.client.sendData("later", "peer-b", Uint8Array.of(1, 2, 3));
    let signalDone = false;
    void signalled.then(() => (signalDone = true));
    await h.nextAttempt();
    expect(signalDone).toBe(false);
    const next = h.net.last().open();
    await h.tick();
    next.welcome({ resumed: true });
    await h.tick();
    expect(next.sentOf("join").map((j) => j.msg.value.room)).toEqual(["later"]);
    expect(next.sentOf("signal")[0]?.msg.value).toMatchObject({ room: "later", to: "peer-b" });
    expect(signalDone).toBe(true);
    next.deliver({ seq: 1n, inReplyTo: next.sentOf("join")[0]!.id, msg: { case: "joined", value: { room: "later", peers: [] } } });
    await expect(joining).resolves.toMatchObject({ room: "later" });
  });

  it("back-off: consecutive failures wait longer (bounded by maxMs); success resets it", async () => {
    const h = harness({ backoff: { initialMs: 100, maxMs: 1000 } }, { random: () => 0.999999 });
    const conn = await h.connected();
    conn.drop();
    const delays = () => h.of("reconnecting").map((e) => e.delayMs);
    for (let i = 0; i < 6; i++) {
      await h.tick(2000);
      h.net.last().fail(); // WebTransport
      await h.tick();
      h.net.last().fail(); // WebSocket
      await h.tick();
    }
    expect(delays()).toEqual([100, 200, 400, 800, 1000, 1000, 1000]);
    await h.tick(2000);
    const ok = h.net.last().open();
    await h.tick();
    ok.welcome({ resumed: true });
    ok.drop();
    expect(delays().at(-1)).toBe(100);
  });

  it("GoAway: disconnected reason go_away, and the reconnect waits at least reconnect_after_ms", async () => {
    const h = harness({}, { random: () => 0 });
    const conn = await h.connected();
    conn.deliver({ seq: 0n, msg: { case: "goAway", value: { reason: Reason.SERVER_SHUTDOWN, reconnectAfterMs: 2000 } } });
    expect(h.of("goAway")).toEqual([{ reason: "server_shutdown", reconnectAfterMs: 2000 }]);
    const attempts = h.net.attempts.length;
    conn.drop({ clean: true });
    expect(h.of("disconnected").at(-1)).toEqual({ reason: "go_away", willReconnect: true });
    await h.tick(1999);
    expect(h.net.attempts.length).toBe(attempts);
    await h.tick(1);
    expect(h.net.attempts.length).toBe(attempts + 1);
  });

  it("an undecodable frame is a protocol error: reconnect", async () => {
    const h = harness();
    const conn = await h.connected();
    conn.deliverRaw(Uint8Array.of(0xff, 0xff, 0xff));
    expect(h.of("disconnected")).toEqual([{ reason: "protocol_error", willReconnect: true }]);
  });
});

describe("liveness of the gateway", () => {
  const fast = { livenessTimeoutMs: 1000, pingIntervalMs: 400 };

  it("sends app-level Pings every ping_interval_ms from Welcome", async () => {
    const h = harness();
    const conn = await h.connected(fast);
    await h.tick(399);
    expect(conn.sentOf("ping")).toHaveLength(0);
    await h.tick(1);
    expect(conn.sentOf("ping")).toHaveLength(1);
    const p = conn.sentOf("ping")[0]!;
    conn.deliver({ seq: 0n, inReplyTo: p.id, msg: { case: "pong", value: { payload: p.msg.value.payload } } });
    await h.tick(400);
    expect(conn.sentOf("ping")).toHaveLength(2);
    expect(h.client.rttMs).toBe(0);
  });

  it("reconnects when nothing at all arrives for liveness_timeout_ms", async () => {
    const h = harness();
    const conn = await h.connected(fast);
    await h.tick(999);
    expect(h.of("disconnected")).toEqual([]);
    await h.tick(1);
    expect(h.of("disconnected")).toEqual([{ reason: "liveness_timeout", willReconnect: true }]);
    await h.nextAttempt();
    expect(h.net.attempts.length).toBe(2);
    expect(conn.sentOf("hello")).toHaveLength(1); // nothing more goes out on the old connection
  });

  it("does not close a connection it gives up (the gateway would end the session) until the next Welcome", async () => {
    // Only the gateway -> client direction failed: a close from us would still arrive and
    // read as "leaving". The old connection stays open, ignored, until the resume is done.
    const h = harness();
    const conn = await h.connected({ ...fast, resumeToken: "tok-1" });
    await h.tick(1000);
    expect(h.of("disconnected")).toEqual([{ reason: "liveness_timeout", willReconnect: true }]);
    expect(conn.closedByClient).toBeUndefined();
    // Frames still arriving on it are ignored.
    conn.deliver(peerJoined(1));
    expect(h.of("peerJoined")).toEqual([]);
    await h.nextAttempt();
    const next = h.net.last().open();
    await h.tick();
    expect(next.hello()).toMatchObject({ resumeToken: "tok-1" });
    expect(conn.closedByClient).toBeUndefined();
    next.welcome({ ...fast, resumed: true });
    expect(conn.closedByClient).toBeDefined();
    expect(next.closedByClient).toBeUndefined();
  });

  it("a resume Hello that gets no Welcome: that connection is not closed either", async () => {
    const h = harness({ helloTimeoutMs: 2000 }, { wtAvailable: false });
    const conn = await h.connected({ ...fast, resumeToken: "tok-1" });
    conn.drop();
    await h.nextAttempt();
    const silent = h.net.last().open();
    await h.tick();
    expect(silent.hello()).toMatchObject({ resumeToken: "tok-1" });
    await h.tick(2000); // no Welcome
    expect(h.of("transportFailed")).toHaveLength(1);
    expect(silent.closedByClient).toBeUndefined();
    // close() ends everything, the abandoned connections too.
    h.client.close();
    expect(silent.closedByClient).toBeDefined();
  });

  it("any frame (not only Pong) keeps the connection alive", async () => {
    const h = harness();
    const conn = await h.connected(fast);
    for (let i = 1; i <= 10; i++) {
      await h.tick(300);
      conn.deliver(peerJoined(i));
    }
    expect(h.of("disconnected")).toEqual([]);
  });

  it("a frozen tab (timer fires far too late) does not declare the gateway dead on that tick", async () => {
    const h = harness();
    const conn = await h.connected(fast);
    // The clock jumps 60 s ahead while no timer could run (tab frozen / laptop asleep).
    h.setNowOffset(60_000);
    await h.tick(400); // the late timer
    expect(h.of("disconnected")).toEqual([]);
    // It pinged at once to prove the gateway alive...
    expect(conn.sentOf("ping").length).toBeGreaterThanOrEqual(1);
    // ...and the gateway answers: still connected long after.
    const p = conn.sentOf("ping")[0]!;
    conn.deliver({ seq: 0n, inReplyTo: p.id, msg: { case: "pong", value: { payload: p.msg.value.payload } } });
    await h.tick(900);
    expect(h.of("disconnected")).toEqual([]);
  });

  it("after a drift tick a gateway that stays silent is still detected within the timeout", async () => {
    const h = harness();
    await h.connected(fast);
    h.setNowOffset(60_000);
    await h.tick(400);
    expect(h.of("disconnected")).toEqual([]);
    await h.tick(1000);
    expect(h.of("disconnected")).toEqual([{ reason: "liveness_timeout", willReconnect: true }]);
  });
});

describe("requests and replies", () => {
  it("join resolves with the Joined that answers its id, not another one", async () => {
    const h = harness();
    const conn = await h.connected();
    const a = h.client.join("a");
    const b = h.client.join("b");
    const [ja, jb] = conn.sentOf("join");
    expect(ja!.id).not.toBe(jb!.id);
    let aDone = false;
    void a.then(() => (aDone = true));
    conn.deliver({
      seq: 1n,
      inReplyTo: jb!.id,
      msg: { case: "joined", value: { room: "b", peers: [{ peerId: "x", state: PresenceState.UNREACHABLE }] } },
    });
    await expect(b).resolves.toEqual({ room: "b", peers: [{ peerId: "x", state: "unreachable" }] });
    expect(aDone).toBe(false);
    conn.deliver({ seq: 2n, inReplyTo: ja!.id, msg: { case: "joined", value: { room: "a", peers: [] } } });
    await expect(a).resolves.toEqual({ room: "a", peers: [] });
    expect([...h.client.rooms].sort()).toEqual(["a", "b"]);
  });

  it("an Error answering a request rejects it with a typed SignalgateError (and emits no error event)", async () => {
    const h = harness();
    const conn = await h.connected();
    const joining = h.client.join("full");
    const id = conn.sentOf("join")[0]!.id;
    conn.deliver(errorFrame(ErrorCode.ROOM_FULL, id, 1n, "room full (8 peers)"));
    const err = await joining.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SignalgateError);
    expect(err).toMatchObject({ code: "ROOM_FULL", inReplyTo: Number(id), detail: "room full (8 peers)" });
    expect(h.of("error")).toEqual([]);
  });

  it("leave resolves on Left and forgets the room", async () => {
    const h = harness();
    const conn = await h.connected();
    const j = h.client.join("r");
    conn.deliver({ seq: 1n, inReplyTo: conn.sentOf("join")[0]!.id, msg: { case: "joined", value: { room: "r", peers: [] } } });
    await j;
    const l = h.client.leave("r");
    conn.deliver({ seq: 2n, inReplyTo: conn.sentOf("leave")[0]!.id, msg: { case: "left", value: { room: "r" } } });
    await expect(l).resolves.toBeUndefined();
    expect(h.client.rooms.size).toBe(0);
  });

  it("a request with no reply rejects with TIMEOUT after requestTimeoutMs", async () => {
    const h = harness({ requestTimeoutMs: 5000 });
    await h.connected();
    const j = h.client.join("slow");
    const caught = j.catch((e: unknown) => e);
    await h.tick(5000);
    await expect(caught).resolves.toMatchObject({ code: "TIMEOUT" });
  });

  it("signals resolve with their frame id; an Error about one arrives as an error event with that id", async () => {
    const h = harness();
    const conn = await h.connected();
    const id = await h.client.sendDescription("demo", "peer-b", { type: "offer", sdp: "v=0\r\n" });
    const sent = conn.sentOf("signal")[0]!;
    expect(BigInt(id)).toBe(sent.id);
    expect(sent.msg.value).toMatchObject({
      room: "demo",
      to: "peer-b",
      payload: { case: "description", value: { type: SdpType.OFFER, sdp: "v=0\r\n" } },
    });
    conn.deliver(errorFrame(ErrorCode.PEER_NOT_IN_ROOM, sent.id, 1n, "peer-b left"));
    expect(h.of("error")).toEqual([{ code: "PEER_NOT_IN_ROOM", message: "peer-b left", inReplyTo: id }]);
  });

  it("encodes ICE candidates (null fields omitted) and data", async () => {
    const h = harness();
    const conn = await h.connected();
    await h.client.sendCandidate("demo", "b", { candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host", sdpMid: "0", sdpMLineIndex: 0, usernameFragment: null });
    await h.client.sendData("demo", "b", Uint8Array.of(9, 8));
    const [c, d] = conn.sentOf("signal");
    expect(c!.msg.value.payload).toMatchObject({
      case: "candidate",
      value: { candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host", sdpMid: "0", sdpMLineIndex: 0 },
    });
    expect(c!.msg.value.payload.case === "candidate" && c!.msg.value.payload.value.usernameFragment).toBe(undefined);
    expect(d!.msg.value.payload).toEqual({ case: "data", value: Uint8Array.of(9, 8) });
  });

  it("refuses a frame larger than Welcome.max_frame_bytes", async () => {
    const h = harness();
    const conn = await h.connected({ maxFrameBytes: 100 });
    await expect(h.client.sendData("demo", "b", new Uint8Array(200))).rejects.toMatchObject({ code: "FRAME_TOO_LARGE" });
    expect(conn.sentOf("signal")).toHaveLength(0);
  });

  it("delivers presence and signals as typed events", async () => {
    const h = harness();
    const conn = await h.connected();
    conn.deliver({
      seq: 1n,
      msg: {
        case: "peerState",
        value: {
          room: "demo",
          peerId: "b",
          state: PresenceState.UNREACHABLE,
          reason: Reason.LIVENESS_TIMEOUT,
          silentForMs: 10_004n,
          detectedBy: Transport.WEBSOCKET,
        },
      },
    });
    conn.deliver({ seq: 2n, msg: { case: "peerLeft", value: { room: "demo", peerId: "b", reason: Reason.RESUME_WINDOW_EXPIRED } } });
    conn.deliver({
      seq: 3n,
      msg: {
        case: "signal",
        value: { room: "demo", from: "c", to: "peer-a", payload: { case: "description", value: { type: SdpType.ANSWER, sdp: "v=0" } } },
      },
    });
    conn.deliver({
      seq: 4n,
      msg: { case: "signal", value: { room: "demo", from: "c", payload: { case: "candidate", value: { candidate: "", sdpMid: "0" } } } },
    });
    expect(h.of("peerState")).toEqual([
      { room: "demo", peerId: "b", state: "unreachable", reason: "liveness_timeout", silentForMs: 10_004, detectedBy: "websocket" },
    ]);
    expect(h.of("peerLeft")).toEqual([{ room: "demo", peerId: "b", reason: "resume_window_expired" }]);
    expect(h.of("signal")).toEqual([
      { room: "demo", from: "c", description: { type: "answer", sdp: "v=0" } },
      { room: "demo", from: "c", candidate: { candidate: "", sdpMid: "0" } },
    ]);
  });

  it("a listener that throws does not break the client", async () => {
    const h = harness();
    const conn = await h.connected();
    const reported = vi.spyOn(console, "error").mockImplementation(() => undefined);
    h.client.on("peerJoined", () => {
      throw new Error("app bug");
    });
    conn.deliver(peerJoined(1));
    conn.deliver(peerJoined(2));
    expect(h.of("peerJoined")).toHaveLength(2);
    expect(h.client.lastSeq).toBe(2);
    expect(reported).toHaveBeenCalledTimes(2);
    reported.mockRestore();
  });
});

describe("close()", () => {
  it("closes cleanly, never reconnects, and rejects what is pending", async () => {
    const h = harness();
    const conn = await h.connected();
    const joining = h.client.join("x");
    h.client.close();
    expect(conn.closedByClient).toBeDefined();
    expect(h.client.state).toBe("closed");
    expect(h.of("disconnected")).toEqual([{ reason: "closed", willReconnect: false }]);
    await expect(joining).rejects.toMatchObject({ code: "CLOSED" });
    await h.tick(60_000);
    expect(h.net.attempts).toHaveLength(1);
    await expect(h.client.join("y")).rejects.toMatchObject({ code: "CLOSED" });
    await expect(h.client.connect()).rejects.toMatchObject({ code: "CLOSED" });
  });

  it("close() during the back-off wait cancels the reconnect and rejects connect()", async () => {
    const h = harness();
    const p = h.client.connect();
    const caught = p.catch((e: unknown) => e);
    await h.tick();
    h.net.last().fail();
    await h.tick();
    h.net.last().fail();
    await h.tick();
    h.client.close();
    await h.tick(60_000);
    expect(h.net.attempts).toHaveLength(2);
    await expect(caught).resolves.toMatchObject({ code: "CLOSED" });
  });
});
