/** Core: the client's numbered stream (ClientFrame.seq), the gateway's Acks and Errors. */
import { describe, expect, it } from "vitest";
import { SignalgateError } from "../../src/errors.js";
import { PresenceState } from "../../src/gen/signalgate/v1/signalgate_pb.js";
import { CoreHarness, ErrorCode } from "./harness.js";

describe("numbering", () => {
  it("numbers Join, Leave and Signal 1, 2, 3 …; Hello, Ping and Ack stay unnumbered", () => {
    const h = new CoreHarness();
    const gw = h.connected({ livenessTimeoutMs: 10_000, pingIntervalMs: 4_000 });
    h.join("demo");
    h.send("a");
    h.leave("demo");
    gw.peerJoined(1);
    h.advance(4_000); // a Ping, and the delayed Ack
    expect(gw.trace()).toEqual(["hello", "join:1", "signal:2", "leave:3", "ack", "ping"]);
    const ids = gw.sent.map((f) => f.id);
    expect(new Set(ids.filter((id) => id !== 0n)).size).toBe(ids.filter((id) => id !== 0n).length);
  });

  it("frames asked for before the first Welcome wait, then go out as 1, 2 … in order", () => {
    const h = new CoreHarness();
    h.connect();
    h.join("demo");
    h.send("one");
    h.send("two");
    const gw = h.link().open();
    expect(gw.trace()).toEqual(["hello"]);
    gw.welcome();
    expect(gw.trace()).toEqual(["hello", "join:1", "signal:2", "signal:3"]);
    expect(gw.texts()).toEqual(["one", "two"]);
  });
});

describe("acknowledgements", () => {
  it("a signal resolves with its frame id only when an Ack covers it", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    const a = h.send("a");
    const b = h.send("b");
    const c = h.send("c");
    expect([a, b, c].map((r) => h.result(r).state)).toEqual(["pending", "pending", "pending"]);
    gw.ack(2);
    const ids = gw.sentOf("signal").map((f) => Number(f.id));
    expect(h.result(a)).toEqual({ state: "resolved", value: ids[0] });
    expect(h.result(b)).toEqual({ state: "resolved", value: ids[1] });
    expect(h.result(c).state).toBe("pending");
    expect(h.core.unacknowledged).toBe(1);
    gw.ack(3);
    expect(h.result(c)).toEqual({ state: "resolved", value: ids[2] });
    expect(h.core.unacknowledged).toBe(0);
  });

  it("an Error before the Ack rejects that signal with the gateway's code; the Ack resolves the others", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    const a = h.send("a");
    const b = h.send("b", "gone-peer");
    const [, sb] = gw.sentOf("signal");
    gw.error(ErrorCode.PEER_NOT_IN_ROOM, sb!.id, 1, "gone-peer left");
    gw.ack(2);
    expect(h.result(a).state).toBe("resolved");
    const r = h.result(b);
    expect(r.state).toBe("rejected");
    if (r.state !== "rejected") return;
    expect(r.error).toBeInstanceOf(SignalgateError);
    expect(r.error).toMatchObject({ code: "PEER_NOT_IN_ROOM", inReplyTo: Number(sb!.id), detail: "gone-peer left" });
    // Taken by the promise: no `error` event for it.
    expect(h.of("error")).toEqual([]);
  });

  it("STORAGE_UNAVAILABLE comes twice from a durable gateway (at once, then in the stream): the second is no news", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    const a = h.send("a");
    const [sa] = gw.sentOf("signal");
    gw.error(ErrorCode.STORAGE_UNAVAILABLE, sa!.id, 0, "JetStream did not store it");
    gw.error(ErrorCode.STORAGE_UNAVAILABLE, sa!.id, 1, "JetStream did not store it");
    gw.ack(1);
    const r = h.result(a);
    expect(r.state).toBe("rejected");
    if (r.state !== "rejected") return;
    expect(r.error).toMatchObject({ code: "STORAGE_UNAVAILABLE", inReplyTo: Number(sa!.id) });
    expect(h.of("error")).toEqual([]);
  });

  it("an Error about no frame of ours is an error event", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    gw.error(ErrorCode.RATE_LIMITED, 0, 1, "slow down");
    gw.error(ErrorCode.RATE_LIMITED, 9999, 2, "what?");
    expect(h.of("error")).toEqual([
      { code: "RATE_LIMITED", message: "slow down", inReplyTo: 0 },
      { code: "RATE_LIMITED", message: "what?", inReplyTo: 9999 },
    ]);
  });

  it("an old or repeated Ack changes nothing", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    const a = h.send("a");
    gw.ack(1);
    const b = h.send("b");
    gw.ack(1);
    gw.ack(0);
    expect(h.result(a).state).toBe("resolved");
    expect(h.result(b).state).toBe("pending");
  });

  it("maxQueuedFrames bounds unacknowledged + queued frames: QUEUE_FULL, until an Ack frees room", () => {
    const h = new CoreHarness({ maxQueuedFrames: 2 });
    const gw = h.connected();
    h.send("a");
    h.send("b");
    const c = h.send("c");
    expect(h.rejection(c)).toBe("QUEUE_FULL");
    expect(gw.texts()).toEqual(["a", "b"]);
    gw.ack(1);
    const d = h.send("d");
    expect(h.result(d).state).toBe("pending");
    // The refused frame used no seq: no hole in the numbering.
    expect(gw.trace().filter((t) => t.startsWith("signal"))).toEqual(["signal:1", "signal:2", "signal:3"]);
  });

  it("a frame over Welcome.max_frame_bytes rejects with FRAME_TOO_LARGE and uses no seq", () => {
    const h = new CoreHarness();
    const gw = h.connected({ maxFrameBytes: 100 });
    const big = h.send("x".repeat(200));
    h.send("small");
    expect(h.rejection(big)).toBe("FRAME_TOO_LARGE");
    expect(gw.trace().slice(1)).toEqual(["signal:1"]);
    expect(gw.texts()).toEqual(["small"]);
  });
});

describe("join and leave", () => {
  it("join resolves with the Joined that answers it (not on the Ack), and the room is recorded", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    const a = h.join("a");
    const b = h.join("b");
    gw.ack(2);
    expect(h.result(a).state).toBe("pending");
    gw.joined(1, "b", [{ peerId: "x", state: PresenceState.UNREACHABLE }]);
    expect(h.result(b)).toEqual({ state: "resolved", value: { room: "b", peers: [{ peerId: "x", state: "unreachable" }] } });
    expect(h.result(a).state).toBe("pending");
    gw.joined(2, "a");
    expect(h.result(a)).toEqual({ state: "resolved", value: { room: "a", peers: [] } });
    expect([...h.core.rooms].sort()).toEqual(["a", "b"]);
    expect(h.of("joined")).toEqual([
      { room: "b", peers: [{ peerId: "x", state: "unreachable" }], rejoined: false },
      { room: "a", peers: [], rejoined: false },
    ]);
  });

  it("a second join of a room on its way shares the first one's frame and reply", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    const a = h.join("r");
    const b = h.join("r");
    expect(gw.sentOf("join")).toHaveLength(1);
    gw.joined(1, "r");
    expect(h.result(a).state).toBe("resolved");
    expect(h.result(b).state).toBe("resolved");
  });

  it("an Error answering a join rejects it with the gateway's code", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    const j = h.join("full");
    gw.error(ErrorCode.ROOM_FULL, gw.sentOf("join")[0]!.id, 1, "room full (8 peers)");
    expect(h.rejection(j)).toBe("ROOM_FULL");
    expect(h.of("error")).toEqual([]);
  });

  it("leave resolves on Left and forgets the room", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    h.join("r");
    gw.joined(1, "r");
    const l = h.leave("r");
    gw.deliver({ seq: 2n, inReplyTo: gw.sentOf("leave")[0]!.id, msg: { case: "left", value: { room: "r" } } });
    expect(h.result(l).state).toBe("resolved");
    expect(h.core.rooms.size).toBe(0);
  });

  it("no reply within requestTimeoutMs: TIMEOUT (the written frame still counts until acknowledged)", () => {
    const h = new CoreHarness({ requestTimeoutMs: 5000 });
    const gw = h.connected({ livenessTimeoutMs: 60_000, pingIntervalMs: 20_000 });
    const j = h.join("slow");
    h.advance(4999);
    expect(h.result(j).state).toBe("pending");
    h.advance(1);
    expect(h.rejection(j)).toBe("TIMEOUT");
    expect(h.core.unacknowledged).toBe(1);
    gw.joined(1, "slow"); // late: no promise, but the room is joined
    expect([...h.core.rooms]).toEqual(["slow"]);
  });

  it("a join that timed out before it was ever written is dropped without using a seq", () => {
    const h = new CoreHarness({ requestTimeoutMs: 5000 });
    const gw = h.connected({ livenessTimeoutMs: 60_000, pingIntervalMs: 20_000 });
    gw.drop();
    const j = h.join("late");
    h.advance(5000);
    expect(h.rejection(j)).toBe("TIMEOUT");
    h.send("after");
    const next = h.untilNewLink().open();
    next.resumed();
    expect(next.trace().slice(1)).toEqual(["signal:1"]);
  });
});

describe("the gateway's stream: seq, duplicates, Acks", () => {
  it("processes each seq once; seq 0 frames always pass", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    gw.peerJoined(1, "b");
    gw.peerJoined(2, "c");
    gw.peerJoined(2, "c-dup");
    gw.peerJoined(1, "b-dup");
    gw.peerJoined(3, "d");
    expect(h.of("peerJoined").map((e) => e.peer.peerId)).toEqual(["b", "c", "d"]);
    expect(h.core.lastSeq).toBe(3);
    gw.error(ErrorCode.RATE_LIMITED, 0);
    gw.error(ErrorCode.RATE_LIMITED, 0);
    expect(h.of("error")).toHaveLength(2);
  });

  it("acks at once after ackEveryFrames, else ackDelayMs after the first unacknowledged frame", () => {
    const h = new CoreHarness();
    const gw = h.connected({ livenessTimeoutMs: 60_000, pingIntervalMs: 20_000 });
    for (let i = 1; i <= 40; i++) gw.peerJoined(i);
    expect(gw.sentOf("ack").map((a) => a.msg.value.seq)).toEqual([16n, 32n]);
    h.advance(499);
    expect(gw.sentOf("ack")).toHaveLength(2);
    h.advance(1);
    expect(gw.sentOf("ack").map((a) => a.msg.value.seq)).toEqual([16n, 32n, 40n]);
    h.advance(5000);
    expect(gw.sentOf("ack")).toHaveLength(3);
  });

  it("duplicates do not count towards an Ack", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    gw.peerJoined(1);
    for (let i = 0; i < 20; i++) gw.peerJoined(1);
    expect(gw.sentOf("ack")).toHaveLength(0);
  });
});
