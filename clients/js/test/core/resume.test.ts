/** Core: resuming a session on a new connection, the replay, and sessions that cannot be resumed. */
import { describe, expect, it } from "vitest";
import { PresenceState } from "../../src/gen/signalgate/v1/signalgate_pb.js";
import { CoreHarness, ErrorCode } from "./harness.js";

describe("resume Hello", () => {
  it("carries the resume token, last_seq and an attempt that starts at 1 and only goes up", () => {
    const h = new CoreHarness();
    const gw = h.connected({ resumeToken: "tok-1" });
    for (let i = 1; i <= 5; i++) gw.peerJoined(i);
    gw.drop();
    expect(h.core.state).toBe("reconnecting");
    expect(h.of("disconnected")).toEqual([{ reason: "connection_lost", willReconnect: true }]);
    const second = h.untilNewLink().open();
    expect(second.kind).toBe("webtransport");
    expect(second.hello()).toMatchObject({ resumeToken: "tok-1", lastSeq: 5n, attempt: 1n });
    second.drop(); // dies before Welcome: the next attempt counts on
    const third = h.link().open();
    expect(third.hello()).toMatchObject({ resumeToken: "tok-1", lastSeq: 5n, attempt: 2n });
    third.resumed();
    const fourth = h.resume(third);
    expect(fourth.hello().attempt).toBe(3n);
  });

  it("carries the highest client seq the gateway acknowledged (a durable gateway recovering the session continues from it)", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    h.send("1");
    h.send("2");
    h.send("3");
    gw.ack(2);
    gw.drop();
    const next = h.untilNewLink().open();
    expect(next.hello().ackedClientSeq).toBe(2n);
    next.resumed({ lastClientSeq: 1n }); // a log behind the Acks: only frame 3 goes again
    expect(next.texts()).toEqual(["3"]);
  });

  it("the old connection is closed when it is given up (closing no longer means leaving)", () => {
    const h = new CoreHarness();
    const gw = h.connected({ livenessTimeoutMs: 1000, pingIntervalMs: 400 });
    h.advance(1000);
    expect(h.of("disconnected")).toEqual([{ reason: "liveness_timeout", willReconnect: true }]);
    expect(gw.closedBy).toBe("liveness_timeout");
    // Whatever still arrives on it is ignored.
    gw.peerJoined(1);
    expect(h.of("peerJoined")).toEqual([]);
  });
});

describe("resending what the gateway did not process", () => {
  it("after a resumed Welcome, every numbered frame after last_client_seq goes again, in order, once, before anything new", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    h.send("1");
    h.send("2");
    h.send("3");
    gw.drop();
    h.send("4"); // asked for while reconnecting
    const next = h.untilNewLink().open();
    expect(next.trace()).toEqual(["hello"]);
    next.resumed({ lastClientSeq: 1n });
    expect(next.trace()).toEqual(["hello", "signal:2", "signal:3", "signal:4"]);
    expect(next.texts()).toEqual(["2", "3", "4"]);
    // Same frame ids as on the dead connection, so the gateway's Errors still match.
    expect(next.sentOf("signal").slice(0, 2).map((f) => f.id)).toEqual(gw.sentOf("signal").slice(1).map((f) => f.id));
    h.send("5");
    expect(next.trace().at(-1)).toBe("signal:5");
    expect(next.texts()).toEqual(["2", "3", "4", "5"]);
  });

  it("frames written to a connection that died during the replay go again after the next resume", () => {
    const h = new CoreHarness();
    const a = h.connected();
    h.send("1");
    h.send("2");
    const b = h.resume(a, { lastClientSeq: 0n });
    h.send("3");
    expect(b.texts()).toEqual(["1", "2", "3"]);
    const c = h.resume(b, { lastClientSeq: 2n });
    expect(c.trace().slice(1)).toEqual(["signal:3"]);
  });

  it("a join written before the loss and not processed is sent again; its Joined resolves it", () => {
    const h = new CoreHarness();
    const a = h.connected();
    const j = h.join("room-x");
    const next = h.resume(a, { lastClientSeq: 0n });
    expect(next.sentOf("join").map((f) => [f.id, f.seq])).toEqual([[a.sentOf("join")[0]!.id, 1n]]);
    next.joined(1, "room-x");
    expect(h.result(j)).toEqual({ state: "resolved", value: { room: "room-x", peers: [] } });
  });
});

describe("the replay after a resumed Welcome", () => {
  it("ends with Welcome.replay_until_seq: resumed fires then, with the number replayed and resent", () => {
    const h = new CoreHarness();
    const a = h.connected();
    for (let i = 1; i <= 3; i++) a.peerJoined(i);
    h.send("x");
    a.drop();
    const b = h.untilNewLink().open();
    b.welcome({ resumed: true, replayUntilSeq: 5n, lastClientSeq: 0n, rooms: ["demo"] });
    expect(h.core.state).toBe("connected");
    b.peerJoined(3, "overlap"); // already processed: dropped, not counted
    b.peerJoined(4);
    expect(h.of("resumed")).toEqual([]);
    b.peerJoined(5);
    expect(h.of("resumed")).toEqual([{ transport: "webtransport", peerId: "peer-a", connectionId: `c-${b.id}`, replayed: 2, resent: 1 }]);
    expect(h.of("connected")).toHaveLength(1);
    expect([...h.core.rooms]).toEqual(["demo"]);
  });

  it("nothing to replay (replay_until_seq = last_seq): resumed at once", () => {
    const h = new CoreHarness();
    const a = h.connected();
    a.peerJoined(1);
    h.resume(a);
    expect(h.of("resumed")).toMatchObject([{ replayed: 0, resent: 0 }]);
  });

  it("last_client_seq acknowledges only once the replay is read: an Error in the replay still rejects its frame", () => {
    const h = new CoreHarness();
    const a = h.connected();
    const s1 = h.send("1");
    const s2 = h.send("2", "gone");
    const s3 = h.send("3");
    const id2 = a.sentOf("signal")[1]!.id;
    a.drop();
    const b = h.untilNewLink().open();
    b.welcome({ resumed: true, lastClientSeq: 3n, replayUntilSeq: 2n });
    expect(b.sentOf("signal")).toEqual([]); // all three were processed: nothing to resend
    expect([s1, s2, s3].map((r) => h.result(r).state)).toEqual(["pending", "pending", "pending"]);
    b.peerJoined(1);
    b.error(ErrorCode.PEER_NOT_IN_ROOM, id2, 2, "gone left");
    expect(h.result(s1).state).toBe("resolved");
    expect(h.rejection(s2)).toBe("PEER_NOT_IN_ROOM");
    expect(h.result(s3).state).toBe("resolved");
  });

  it("an Ack arriving during the replay waits for its end as well", () => {
    const h = new CoreHarness();
    const a = h.connected();
    const s1 = h.send("1");
    const id1 = a.sentOf("signal")[0]!.id;
    a.drop();
    const b = h.untilNewLink().open();
    b.welcome({ resumed: true, lastClientSeq: 0n, replayUntilSeq: 2n });
    b.ack(1); // out of order from a misbehaving gateway
    expect(h.result(s1).state).toBe("pending");
    b.peerJoined(1);
    b.error(ErrorCode.NOT_JOINED, id1, 2);
    expect(h.rejection(s1)).toBe("NOT_JOINED");
  });

  it("a connection lost during the replay: the next resume picks up from what was processed", () => {
    const h = new CoreHarness();
    const a = h.connected();
    a.peerJoined(1);
    a.drop();
    const b = h.untilNewLink().open();
    b.welcome({ resumed: true, replayUntilSeq: 4n });
    b.peerJoined(2);
    b.drop();
    const c = h.untilNewLink().open();
    expect(c.hello().lastSeq).toBe(2n);
    c.welcome({ resumed: true, replayUntilSeq: 4n });
    c.peerJoined(3);
    c.peerJoined(4);
    expect(h.of("resumed")).toMatchObject([{ replayed: 2 }]);
    expect(h.of("peerJoined").map((e) => e.peer.peerId)).toEqual(["p1", "p2", "p3", "p4"]);
  });
});

describe("a session that cannot be resumed", () => {
  function lostSession(code: ErrorCode) {
    const h = new CoreHarness();
    const a = h.connected({ peerId: "old-peer", resumeToken: "tok-old" });
    h.join("lobby");
    a.joined(1, "lobby");
    a.ack(1);
    const acked = h.send("acked");
    a.ack(2);
    const written = h.send("written");
    const joining = h.join("pending-room");
    a.drop();
    const queued = h.send("queued");
    const b = h.untilNewLink().open();
    expect(b.hello().resumeToken).toBe("tok-old");
    b.error(code, b.hello().id, 0, "unknown token");
    return { h, b, acked, written, joining, queued };
  }

  it("RESUME_EXPIRED: what was not acknowledged rejects with SESSION_LOST, then a fresh session re-joins the rooms", () => {
    const { h, b, acked, written, joining, queued } = lostSession(ErrorCode.RESUME_EXPIRED);
    expect(h.result(acked).state).toBe("resolved");
    expect([written, joining, queued].map((r) => h.rejection(r))).toEqual(["SESSION_LOST", "SESSION_LOST", "SESSION_LOST"]);
    expect(h.of("sessionLost")).toEqual([{ previousPeerId: "old-peer", code: "RESUME_EXPIRED", message: "unknown token" }]);
    expect(h.of("error")).toEqual([]);
    expect(b.closedBy).toBeDefined();
    // At once, on the same transport, a Hello without token.
    const fresh = h.link();
    expect(fresh).not.toBe(b);
    expect(fresh.kind).toBe(b.kind);
    fresh.open();
    expect(fresh.hello()).toMatchObject({ resumeToken: "", lastSeq: 0n, attempt: 0n });
    fresh.welcome({ peerId: "new-peer", resumeToken: "tok-new" });
    expect(h.names().filter((n) => n === "sessionLost" || n === "connected")).toEqual(["connected", "sessionLost", "connected"]);
    expect(h.core.peerId).toBe("new-peer");
    // Only the re-join goes out, numbered from 1: nothing of the old session.
    expect(fresh.trace()).toEqual(["hello", "join:1"]);
    expect(fresh.sentOf("join")[0]!.msg.value.room).toBe("lobby");
    fresh.joined(1, "lobby", [{ peerId: "peer-z", state: PresenceState.ONLINE }]);
    expect(h.of("joined").at(-1)).toEqual({ room: "lobby", peers: [{ peerId: "peer-z", state: "online" }], rejoined: true });
    expect([...h.core.rooms]).toEqual(["lobby"]);
    expect(h.core.lastSeq).toBe(1);
  });

  it("RESUME_GAP: the same, with code RESUME_GAP", () => {
    const { h, written } = lostSession(ErrorCode.RESUME_GAP);
    expect(h.of("sessionLost")[0]?.code).toBe("RESUME_GAP");
    expect(h.rejection(written)).toBe("SESSION_LOST");
  });

  it("a Welcome that starts a new session instead of resuming counts as lost too", () => {
    const h = new CoreHarness();
    const a = h.connected();
    h.join("r");
    a.joined(1, "r");
    const s = h.send("x");
    a.drop();
    const b = h.untilNewLink().open();
    b.welcome({ resumed: false, peerId: "peer-new" });
    expect(h.rejection(s)).toBe("SESSION_LOST");
    expect(h.of("sessionLost")).toMatchObject([{ code: "RESUME_EXPIRED" }]);
    expect(b.trace()).toEqual(["hello", "join:1"]);
  });

  it("frames asked for after sessionLost go out on the fresh session, after the re-joins", () => {
    const h = new CoreHarness();
    const a = h.connected();
    h.join("r");
    a.joined(1, "r");
    a.drop();
    const b = h.untilNewLink().open();
    b.error(ErrorCode.RESUME_EXPIRED, b.hello().id);
    const s = h.send("fresh");
    const fresh = h.link().open();
    fresh.welcome({ resumeToken: "tok-2" });
    expect(fresh.trace()).toEqual(["hello", "join:1", "signal:2"]);
    expect(h.result(s).state).toBe("pending");
  });

  it("a room with a Leave on its way is not re-joined", () => {
    const h = new CoreHarness();
    const a = h.connected();
    h.join("keep");
    a.joined(1, "keep");
    h.join("drop");
    a.joined(2, "drop");
    h.leave("drop");
    a.drop();
    const b = h.untilNewLink().open();
    b.error(ErrorCode.RESUME_EXPIRED, b.hello().id);
    const fresh = h.link().open();
    fresh.welcome();
    expect(fresh.sentOf("join").map((j) => j.msg.value.room)).toEqual(["keep"]);
  });

  it("a room whose automatic re-join was cut off is re-joined on the session after", () => {
    const h = new CoreHarness();
    let gw = h.connected();
    h.join("lobby");
    gw.joined(1, "lobby");
    for (const token of ["tok-2", "tok-3"]) {
      gw.drop();
      const b = h.untilNewLink().open();
      b.error(ErrorCode.RESUME_EXPIRED, b.hello().id);
      gw = h.link().open();
      gw.welcome({ resumeToken: token });
      expect(gw.sentOf("join").map((x) => x.msg.value.room)).toEqual(["lobby"]);
    }
    expect(h.of("error")).toEqual([]);
  });

  it("RESUME_EXPIRED answering a Hello without token is an ordinary failure, not a loop", () => {
    const h = new CoreHarness();
    h.connect();
    const gw = h.link().open();
    gw.error(ErrorCode.RESUME_EXPIRED, gw.hello().id);
    expect(h.of("sessionLost")).toEqual([]);
    expect(h.links.map((l) => l.kind)).toEqual(["webtransport", "websocket"]);
  });

  it("STALE_ATTEMPT: someone else holds the session; the client stops (SUPERSEDED) instead of fighting", () => {
    const h = new CoreHarness();
    const a = h.connected();
    const s = h.send("x");
    a.drop();
    const b = h.untilNewLink().open();
    b.error(ErrorCode.STALE_ATTEMPT, b.hello().id);
    h.advance(60_000);
    expect(b.closedBy).toBeDefined();
    expect(h.links).toHaveLength(2);
    expect(h.core.state).toBe("closed");
    expect(h.rejection(s)).toBe("SUPERSEDED");
    expect(h.of("disconnected").at(-1)).toEqual({ reason: "superseded", willReconnect: false });
  });
});
