/**
 * Core: tokens. Hello's token (the `token` option, or the app's `getToken` for every attempt),
 * the in-band refresh before expiry, the gateway's refusals and its token-related closes
 * (4006 token expired, 4007 disconnected by the backend, 4008 gateway full), identities.
 */
import { describe, expect, it } from "vitest";
import { PresenceState } from "../../src/gen/signalgate/v1/signalgate_pb.js";
import { refreshDelay } from "../../src/core/refresh.js";
import { CoreHarness, ErrorCode, type Gw, type WelcomeInit } from "./harness.js";

const AUTH = { getToken: async () => "unused" }; // the core only needs to know it exists
const HOUR = 3_600_000;

/** connect(), the transport opens, getToken answers `token`, Welcome. */
function connectedWithToken(h: CoreHarness, token = "jwt-1", welcome: WelcomeInit = {}): Gw {
  h.connect();
  const gw = h.link().open();
  h.giveToken(token);
  gw.welcome({ identity: "alice", ...welcome });
  return gw;
}

describe("Hello's token", () => {
  it("without getToken: the `token` option in every Hello, fresh and resume; getToken is never asked for", () => {
    const h = new CoreHarness({ token: "static" });
    const a = h.connected();
    expect(a.hello().token).toBe("static");
    const b = h.resume(a);
    expect(b.hello()).toMatchObject({ token: "static", resumeToken: "tok-1" });
    expect(h.tokenRequests).toEqual([]);
  });

  it("without token and getToken: an empty token (the gateway decides)", () => {
    const h = new CoreHarness();
    expect(h.connected().hello().token).toBe("");
  });

  it("getToken is called for every connection attempt, in parallel with opening it; Hello waits for the token", () => {
    const h = new CoreHarness(AUTH);
    h.connect();
    expect(h.tokenRequests).toEqual([{ ticket: 1, reason: "connect" }]);
    const gw = h.link().open();
    expect(h.core.phaseKind).toBe("authorizing");
    expect(h.core.state).toBe("connecting");
    expect(gw.sent).toEqual([]);
    h.giveToken("jwt-1");
    expect(gw.hello()).toMatchObject({ token: "jwt-1", resumeToken: "" });
    gw.welcome();
    expect(h.core.state).toBe("connected");
  });

  it("a token that comes before the transport opens is sent as soon as it does", () => {
    const h = new CoreHarness(AUTH);
    h.connect();
    h.giveToken("early");
    expect(h.core.phaseKind).toBe("connecting");
    const gw = h.link().open();
    expect(gw.hello().token).toBe("early");
  });

  it("a resume an hour later asks for a fresh token: no Hello carries an old one", () => {
    const h = new CoreHarness(AUTH);
    const a = connectedWithToken(h, "jwt-1", { livenessTimeoutMs: 2 * HOUR, pingIntervalMs: HOUR });
    h.advance(HOUR);
    a.drop();
    const b = h.untilNewLink().open();
    expect(h.tokenRequests).toHaveLength(2);
    expect(h.tokenRequests[1]).toMatchObject({ reason: "connect" });
    expect(b.sent).toEqual([]);
    h.giveToken("jwt-2");
    expect(b.hello()).toMatchObject({ token: "jwt-2", resumeToken: "tok-1", attempt: 1n });
  });

  it("with token and getToken: `token` goes into the first connection's Hello, getToken provides every later one", () => {
    const h = new CoreHarness({ ...AUTH, token: "from-page" });
    const a = h.connected();
    expect(a.hello().token).toBe("from-page");
    expect(h.tokenRequests).toEqual([]);
    a.drop();
    const b = h.untilNewLink().open();
    expect(h.tokenRequests).toHaveLength(1);
    h.giveToken("fresh");
    expect(b.hello().token).toBe("fresh");
  });

  it("a token not yet sent serves the next transport of the round; a Hello that went out needs a new one", () => {
    const h = new CoreHarness(AUTH);
    h.connect();
    h.giveToken("t1");
    h.link().fail(); // WebTransport did not open: its token was never used
    const ws = h.link().open();
    expect(ws.kind).toBe("websocket");
    expect(ws.hello().token).toBe("t1");
    expect(h.tokenRequests).toHaveLength(1);

    const h2 = new CoreHarness(AUTH);
    h2.connect();
    const wt = h2.link().open();
    h2.giveToken("t1");
    wt.error(ErrorCode.SHUTTING_DOWN, wt.hello().id); // refused after its Hello
    expect(h2.tokenRequests).toHaveLength(2);
    const ws2 = h2.link().open();
    h2.giveToken("t2");
    expect(ws2.hello().token).toBe("t2");
  });

  it("a getToken that rejects is an error event and a retry after back-off, with a new call", () => {
    const h = new CoreHarness(AUTH);
    const c = h.connect();
    const gw = h.link().open();
    h.failToken("backend down");
    expect(h.of("error")).toEqual([{ code: "GET_TOKEN_FAILED", message: "backend down", inReplyTo: 0 }]);
    expect(gw.closedBy).toBe("no token");
    expect(h.core.phaseKind).toBe("backingOff");
    expect(h.of("reconnecting")).toEqual([{ attempt: 1, delayMs: 125 }]);
    expect(h.result(c).state).toBe("pending");
    const next = h.untilNewLink().open();
    expect(next.kind).toBe("webtransport");
    expect(h.tokenRequests).toHaveLength(2);
    h.giveToken("jwt");
    next.welcome();
    expect(h.result(c).state).toBe("resolved");
  });

  it("a getToken that never answers counts as failed after helloTimeoutMs", () => {
    const h = new CoreHarness({ ...AUTH, helloTimeoutMs: 5000 });
    h.connect();
    h.link().open();
    h.advance(4999);
    expect(h.of("error")).toEqual([]);
    h.advance(1);
    expect(h.of("error")).toEqual([{ code: "GET_TOKEN_FAILED", message: "getToken did not answer within 5000 ms", inReplyTo: 0 }]);
    expect(h.core.phaseKind).toBe("backingOff");
  });

  it("an answer for an attempt given up is ignored", () => {
    const h = new CoreHarness(AUTH);
    h.connect();
    h.link().open();
    const first = h.tokenRequests[0]!.ticket;
    h.failToken("slow backend");
    const next = h.untilNewLink().open();
    h.giveToken("late", first);
    expect(next.sent).toEqual([]);
    h.giveToken("fresh");
    expect(next.hello().token).toBe("fresh");
  });
});

describe("refreshing the token before it expires", () => {
  it("the rule: 80 % of the remaining time, at the latest 10 s before expiry, never before half of it nor within 1 s", () => {
    expect(refreshDelay(HOUR)).toBe(0.8 * HOUR);
    expect(refreshDelay(60_000)).toBe(48_000);
    expect(refreshDelay(30_000)).toBe(20_000);
    expect(refreshDelay(12_000)).toBe(6_000);
    expect(refreshDelay(1_500)).toBe(1_000);
    expect(refreshDelay(500)).toBe(500);
  });

  it("getToken at the scheduled moment, Refresh{token} unnumbered, Refreshed reschedules and emits tokenRefreshed", () => {
    const h = new CoreHarness(AUTH);
    const gw = connectedWithToken(h, "jwt-1", { tokenExpiresInMs: 60_000n, livenessTimeoutMs: 600_000, pingIntervalMs: 300_000 });
    const welcomedAt = h.now;
    expect(h.core.tokenExpiresAt).toBe(welcomedAt + 60_000);
    h.advance(47_999);
    expect(h.tokenRequests).toHaveLength(1);
    h.advance(1);
    expect(h.tokenRequests.at(-1)).toMatchObject({ reason: "refresh" });
    expect(gw.sentOf("refresh")).toEqual([]);
    h.giveToken("jwt-2");
    const refresh = gw.sentOf("refresh")[0]!;
    expect(refresh.msg.value.token).toBe("jwt-2");
    expect(refresh.seq).toBe(0n);
    expect(refresh.id).not.toBe(0n);
    gw.refreshed(30_000, 1);
    expect(h.of("tokenRefreshed")).toEqual([{ expiresInMs: 30_000 }]);
    expect(h.core.tokenExpiresAt).toBe(h.now + 30_000);
    // Next: 20 s later (at the latest 10 s before expiry).
    h.advance(19_999);
    expect(h.tokenRequests).toHaveLength(2);
    h.advance(1);
    expect(h.tokenRequests).toHaveLength(3);
  });

  it("does not disturb the numbered stream: signals before and after a Refresh are numbered 1, 2", () => {
    const h = new CoreHarness(AUTH);
    const gw = connectedWithToken(h, "jwt-1", { tokenExpiresInMs: 20_000n, livenessTimeoutMs: 600_000, pingIntervalMs: 300_000 });
    h.send("a");
    h.advance(10_000);
    h.giveToken("jwt-2");
    h.send("b");
    expect(gw.trace()).toEqual(["hello", "signal:1", "refresh", "signal:2"]);
  });

  it("without getToken nothing is refreshed (the expiry is still known)", () => {
    const h = new CoreHarness({ token: "static" });
    h.connected({ tokenExpiresInMs: 20_000n, livenessTimeoutMs: 600_000, pingIntervalMs: 300_000 });
    expect(h.core.tokenExpiresAt).toBe(h.now + 20_000);
    h.advance(30_000);
    expect(h.tokenRequests).toEqual([]);
  });

  it("no expiry (anonymous): nothing is scheduled, tokenExpiresAt stays undefined, identity is ''", () => {
    const h = new CoreHarness(AUTH);
    connectedWithToken(h, "", { identity: "", livenessTimeoutMs: 2 * HOUR, pingIntervalMs: HOUR });
    expect(h.core.identity).toBe("");
    expect(h.core.tokenExpiresAt).toBeUndefined();
    h.advance(HOUR);
    expect(h.tokenRequests).toHaveLength(1);
  });

  it("an Error in reply to the Refresh is an error event and a retry after a short back-off", () => {
    const h = new CoreHarness(AUTH);
    const gw = connectedWithToken(h, "jwt-1", { tokenExpiresInMs: 60_000n, livenessTimeoutMs: 600_000, pingIntervalMs: 300_000 });
    h.advance(48_000);
    h.giveToken("bad");
    const id = gw.sentOf("refresh")[0]!.id;
    gw.error(ErrorCode.TOKEN_BAD_SIGNATURE, id, 1, "signature does not verify");
    expect(h.of("error")).toEqual([{ code: "TOKEN_BAD_SIGNATURE", message: "signature does not verify", inReplyTo: Number(id) }]);
    expect(h.core.state).toBe("connected");
    h.advance(499);
    expect(h.tokenRequests).toHaveLength(2);
    h.advance(1); // 1 s back-off with full jitter (random 0.5)
    expect(h.tokenRequests).toHaveLength(3);
    h.giveToken("good");
    gw.refreshed(60_000, 2);
    expect(h.of("tokenRefreshed")).toEqual([{ expiresInMs: 60_000 }]);
  });

  it("IDENTITY_MISMATCH in reply (getToken now answers for another user) is retried the same way", () => {
    const h = new CoreHarness(AUTH);
    const gw = connectedWithToken(h, "jwt-1", { tokenExpiresInMs: 60_000n, livenessTimeoutMs: 600_000, pingIntervalMs: 300_000 });
    h.advance(48_000);
    h.giveToken("bob");
    gw.error(ErrorCode.IDENTITY_MISMATCH, gw.sentOf("refresh")[0]!.id, 1, "the new token is for another identity");
    expect(h.of("error").map((e) => e.code)).toEqual(["IDENTITY_MISMATCH"]);
    expect(h.core.state).toBe("connected");
    h.advance(500);
    expect(h.tokenRequests).toHaveLength(3);
  });

  it("a getToken that rejects during a refresh is an error event and a retry; the connection stays", () => {
    const h = new CoreHarness(AUTH);
    const gw = connectedWithToken(h, "jwt-1", { tokenExpiresInMs: 60_000n, livenessTimeoutMs: 600_000, pingIntervalMs: 300_000 });
    h.advance(48_000);
    h.failToken("offline");
    expect(h.of("error")).toEqual([{ code: "GET_TOKEN_FAILED", message: "offline", inReplyTo: 0 }]);
    expect(gw.closedBy).toBeUndefined();
    h.advance(500);
    expect(h.tokenRequests.map((r) => r.reason)).toEqual(["connect", "refresh", "refresh"]);
  });

  it("retries stop at expiry; the gateway's TOKEN_EXPIRED warning starts one at once", () => {
    const h = new CoreHarness(AUTH);
    const gw = connectedWithToken(h, "jwt-1", { tokenExpiresInMs: 12_000n, livenessTimeoutMs: 600_000, pingIntervalMs: 300_000 });
    h.advance(6_000); // refresh at half of 12 s
    const at: number[] = [];
    for (let i = 0; i < 40; i++) {
      // Every refresh attempt's getToken fails at once.
      if (h.tokenRequests.length === at.length + 2) {
        at.push(h.now);
        h.failToken("offline");
      }
      h.advance(250);
    }
    // Back-offs of 500, 1000, 2000 ms fit before expiry; the next (4000) would not.
    const welcomedAt = h.core.tokenExpiresAt! - 12_000;
    expect(at.map((t) => t - welcomedAt)).toEqual([6_000, 6_500, 7_500, 9_500]);
    const requests = h.tokenRequests.length;
    h.advance(60_000);
    expect(h.tokenRequests).toHaveLength(requests);
    expect(h.core.state).toBe("connected");
    gw.tokenExpiredWarning(1);
    expect(h.of("error").at(-1)).toMatchObject({ code: "TOKEN_EXPIRED", inReplyTo: 0 });
    expect(h.tokenRequests).toHaveLength(requests + 1);
    expect(h.tokenRequests.at(-1)!.reason).toBe("refresh");
    // After the warning, failures are retried until the connection ends.
    h.failToken("still offline");
    h.advance(500);
    expect(h.tokenRequests).toHaveLength(requests + 2);
    h.giveToken("finally");
    gw.refreshed(60_000, 2);
    expect(h.of("tokenRefreshed")).toEqual([{ expiresInMs: 60_000 }]);
  });

  it("the warning refreshes at once, even before the scheduled moment (clocks disagree), but never twice at a time", () => {
    const h = new CoreHarness(AUTH);
    const gw = connectedWithToken(h, "jwt-1", { tokenExpiresInMs: BigInt(HOUR), livenessTimeoutMs: 600_000, pingIntervalMs: 300_000 });
    gw.tokenExpiredWarning(1);
    expect(h.tokenRequests.map((r) => r.reason)).toEqual(["connect", "refresh"]);
    gw.tokenExpiredWarning(2);
    expect(h.tokenRequests).toHaveLength(2);
    h.giveToken("jwt-2");
    expect(gw.sentOf("refresh")).toHaveLength(1);
  });

  it("without getToken the warning is only an error event", () => {
    const h = new CoreHarness({ token: "static" });
    const gw = h.connected({ tokenExpiresInMs: 20_000n });
    gw.tokenExpiredWarning(1);
    expect(h.of("error").map((e) => e.code)).toEqual(["TOKEN_EXPIRED"]);
    expect(h.tokenRequests).toEqual([]);
  });

  it("after a resume, a replayed Refreshed (for the old connection's Refresh) and a replayed warning are old news", () => {
    const h = new CoreHarness(AUTH);
    const a = connectedWithToken(h, "jwt-1", { tokenExpiresInMs: 20_000n, livenessTimeoutMs: 600_000, pingIntervalMs: 300_000 });
    h.advance(10_000);
    h.giveToken("jwt-2");
    const oldRefresh = a.sentOf("refresh")[0]!.id;
    a.drop();
    const b = h.untilNewLink().open();
    h.giveToken("jwt-3");
    b.welcome({ resumed: true, replayUntilSeq: 2n, tokenExpiresInMs: 20_000n, livenessTimeoutMs: 600_000, pingIntervalMs: 300_000 });
    const requests = h.tokenRequests.length;
    b.refreshed(5_000, 1, oldRefresh);
    b.tokenExpiredWarning(2);
    expect(h.of("tokenRefreshed")).toEqual([]);
    expect(h.tokenRequests).toHaveLength(requests);
    expect(h.core.tokenExpiresAt).toBe(h.now + 20_000);
    expect(h.of("resumed")).toHaveLength(1);
  });
});

describe("the gateway's closes", () => {
  it("4006 (token expired): reconnects at once, with a fresh token, and resumes", () => {
    const h = new CoreHarness(AUTH);
    const a = connectedWithToken(h, "jwt-1", { tokenExpiresInMs: 20_000n });
    a.peerJoined(1);
    a.drop({ clean: true, code: 4006, reason: "token expired" });
    expect(h.of("disconnected")).toEqual([{ reason: "token_expired", willReconnect: true }]);
    expect(h.of("reconnecting")).toEqual([]); // no back-off
    expect(h.links).toHaveLength(2);
    const b = h.link().open();
    expect(h.tokenRequests.at(-1)).toMatchObject({ reason: "connect" });
    h.giveToken("jwt-2");
    expect(b.hello()).toMatchObject({ token: "jwt-2", resumeToken: "tok-1", lastSeq: 1n });
    b.resumed();
    expect(h.of("resumed")).toHaveLength(1);
  });

  it("Error DISCONNECTED, then 4007: the backend ended the session for good; no reconnect", () => {
    const h = new CoreHarness(AUTH);
    const gw = connectedWithToken(h);
    const pending = h.send("x");
    gw.error(ErrorCode.DISCONNECTED, 0, 0, "disconnected by the application: banned");
    expect(h.of("error")).toEqual([{ code: "DISCONNECTED", message: "disconnected by the application: banned", inReplyTo: 0 }]);
    expect(h.of("disconnected")).toEqual([
      { reason: "disconnected", willReconnect: false, message: "disconnected by the application: banned" },
    ]);
    expect(h.core.state).toBe("closed");
    expect(h.rejection(pending)).toBe("DISCONNECTED");
    expect(gw.closedBy).toBeDefined();
    gw.drop({ clean: true, code: 4007 });
    h.advance(600_000);
    expect(h.links).toHaveLength(1);
    expect(h.rejection(h.connect())).toBe("CLOSED");
  });

  it("4007 without the Error before it: the same, with the close reason as message", () => {
    const h = new CoreHarness();
    const gw = h.connected();
    gw.drop({ clean: true, code: 4007, reason: "disconnected" });
    expect(h.of("disconnected")).toEqual([{ reason: "disconnected", willReconnect: false, message: "disconnected" }]);
    h.advance(600_000);
    expect(h.links).toHaveLength(1);
  });

  it("4001 on the live connection (another page of the same identity took the session over): closed, no fight over it", () => {
    const h = new CoreHarness(AUTH);
    const gw = connectedWithToken(h);
    const pending = h.send("x");
    gw.drop({ clean: true, code: 4001, reason: "superseded" });
    expect(h.of("disconnected")).toEqual([{ reason: "superseded", willReconnect: false }]);
    expect(h.rejection(pending)).toBe("SUPERSEDED");
    expect(h.core.state).toBe("closed");
    h.advance(600_000);
    expect(h.links).toHaveLength(1);
  });

  it("TOO_MANY_SESSIONS on Hello: back off (not the other transport to the same gateway), then try again", () => {
    const h = new CoreHarness();
    h.connect();
    const wt = h.link().open();
    wt.error(ErrorCode.TOO_MANY_SESSIONS, wt.hello().id, 0, "the gateway holds 1000 sessions");
    expect(h.of("error").map((e) => e.code)).toEqual(["TOO_MANY_SESSIONS"]);
    expect(wt.closedBy).toBe("gateway full");
    expect(h.links).toHaveLength(1);
    expect(h.core.phaseKind).toBe("backingOff");
    expect(h.untilNewLink().kind).toBe("webtransport");
  });

  it("close 4008 before Welcome (the gateway is full): back off as well", () => {
    const h = new CoreHarness();
    h.connect();
    const wt = h.link().open();
    wt.drop({ clean: true, code: 4008, reason: "gateway full" });
    expect(h.of("transportFailed")).toEqual([{ transport: "webtransport", error: "gateway full (4008): gateway full" }]);
    expect(h.links).toHaveLength(1);
    expect(h.of("reconnecting")).toHaveLength(1);
  });
});

describe("Hellos refused for their token", () => {
  function refuse(gw: Gw, code = ErrorCode.TOKEN_EXPIRED, message = "token expired"): void {
    gw.error(code, gw.hello().id, 0, message);
  }

  it("getToken is called again after a back-off; after maxTokenRefusals in a row: authFailed, closed, no more reconnects", () => {
    const h = new CoreHarness(AUTH);
    const c = h.connect();
    const joining = h.join("demo");
    let gw = h.link().open();
    h.giveToken("t1");
    refuse(gw);
    expect(gw.closedBy).toBe("token refused");
    expect(h.core.phaseKind).toBe("backingOff");
    gw = h.untilNewLink().open();
    expect(h.tokenRequests).toHaveLength(2);
    h.giveToken("t2");
    expect(gw.hello().token).toBe("t2");
    refuse(gw, ErrorCode.TOKEN_BAD_SIGNATURE, "bad signature");
    gw = h.untilNewLink().open();
    h.giveToken("t3");
    refuse(gw, ErrorCode.TOKEN_REVOKED, "revoked");
    expect(h.of("error").map((e) => e.code)).toEqual(["TOKEN_EXPIRED", "TOKEN_BAD_SIGNATURE", "TOKEN_REVOKED"]);
    expect(h.of("authFailed")).toEqual([{ code: "TOKEN_REVOKED", message: "revoked" }]);
    expect(h.of("disconnected")).toEqual([{ reason: "auth_failed", willReconnect: false, message: "revoked" }]);
    expect(h.core.state).toBe("closed");
    expect(h.rejection(c)).toBe("TOKEN_REVOKED");
    expect(h.rejection(joining)).toBe("TOKEN_REVOKED");
    expect(gw.closedBy).toBeDefined();
    h.advance(600_000);
    expect(h.links).toHaveLength(3);
    expect(h.tokenRequests).toHaveLength(3);
  });

  it("only refusals in a row count: a Welcome in between starts over", () => {
    const h = new CoreHarness(AUTH);
    h.connect();
    let gw = h.link().open();
    h.giveToken("t");
    refuse(gw);
    gw = h.untilNewLink().open();
    h.giveToken("t");
    refuse(gw);
    gw = h.untilNewLink().open();
    h.giveToken("t");
    gw.welcome();
    gw.drop();
    for (let i = 0; i < 2; i++) {
      gw = h.untilNewLink().open();
      h.giveToken("t");
      refuse(gw);
    }
    expect(h.of("authFailed")).toEqual([]);
    expect(h.core.state).toBe("reconnecting");
  });

  it("maxTokenRefusals: 1 gives up at the first refusal; a static token is refused alike", () => {
    const h = new CoreHarness({ token: "expired-jwt", maxTokenRefusals: 1 });
    h.connect();
    const gw = h.link().open();
    expect(gw.hello().token).toBe("expired-jwt");
    refuse(gw, ErrorCode.TOKEN_MISSING, "no token");
    expect(h.of("authFailed")).toEqual([{ code: "TOKEN_MISSING", message: "no token" }]);
    expect(h.core.state).toBe("closed");
  });

  it("other refusals of Hello (e.g. SHUTTING_DOWN) do not count", () => {
    const h = new CoreHarness(AUTH);
    h.connect();
    for (let i = 0; i < 4; i++) {
      const gw = h.link().open();
      h.giveToken("t");
      gw.error(ErrorCode.SHUTTING_DOWN, gw.hello().id);
      if (h.core.phaseKind === "backingOff") h.untilNewLink();
    }
    expect(h.of("authFailed")).toEqual([]);
  });
});

describe("identities", () => {
  it("IDENTITY_MISMATCH on a resume Hello (another user on this page): the old session is dropped like SESSION_LOST, a fresh one starts", () => {
    const h = new CoreHarness(AUTH);
    const a = connectedWithToken(h, "alice-jwt", { peerId: "alice-peer", resumeToken: "tok-alice" });
    h.join("lobby");
    a.joined(1, "lobby");
    a.ack(1);
    const unacked = h.send("hi");
    a.drop();
    const b = h.untilNewLink().open();
    h.giveToken("bob-jwt");
    expect(b.hello().resumeToken).toBe("tok-alice");
    b.error(ErrorCode.IDENTITY_MISMATCH, b.hello().id, 0, "the resume token belongs to a session of another identity");
    expect(h.of("sessionLost")).toEqual([
      { previousPeerId: "alice-peer", code: "IDENTITY_MISMATCH", message: "the resume token belongs to a session of another identity" },
    ]);
    expect(h.rejection(unacked)).toBe("SESSION_LOST");
    expect(h.of("error")).toEqual([]);
    expect(b.closedBy).toBe("resume refused");
    const fresh = h.link();
    expect(fresh.kind).toBe(b.kind);
    fresh.open();
    h.giveToken("bob-jwt-2");
    expect(fresh.hello()).toMatchObject({ token: "bob-jwt-2", resumeToken: "", attempt: 0n });
    fresh.welcome({ peerId: "bob-peer", identity: "bob" });
    expect(h.core.identity).toBe("bob");
    expect(h.core.peerId).toBe("bob-peer");
    expect(fresh.trace()).toEqual(["hello", "join:1"]);
  });

  it("a 'resumed' Welcome for another peer (the identity's other session) is not our resume: sessionLost, connected, its rooms kept", () => {
    const h = new CoreHarness(AUTH);
    const a = connectedWithToken(h, "jwt", { peerId: "mine", resumeToken: "tok-mine" });
    h.join("lobby");
    a.joined(1, "lobby");
    h.join("side");
    a.joined(2, "side");
    a.ack(2);
    a.drop();
    const b = h.untilNewLink().open();
    h.giveToken("jwt-2");
    b.welcome({ resumed: true, peerId: "other-tab", resumeToken: "tok-other", rooms: ["lobby"], replayUntilSeq: 7n, lastClientSeq: 0n });
    expect(h.of("sessionLost")).toMatchObject([{ previousPeerId: "mine", code: "RESUME_EXPIRED" }]);
    expect(h.of("connected").at(-1)).toMatchObject({ peerId: "other-tab" });
    expect(h.of("resumed")).toEqual([]);
    expect([...h.core.rooms]).toEqual(["lobby"]);
    // Only the room the session is not in yet is joined again.
    expect(b.sentOf("join").map((j) => [j.msg.value.room, j.seq])).toEqual([["side", 1n]]);
    // Its backlog is delivered from seq 1 on.
    b.peerJoined(6, "x", "lobby");
    expect(h.of("peerJoined").map((e) => e.peer.peerId)).toEqual(["x"]);
  });

  it("identity and the peers' names and metadata (only when the gateway sends them)", () => {
    const h = new CoreHarness(AUTH);
    const gw = connectedWithToken(h, "jwt", { identity: "alice" });
    expect(h.core.identity).toBe("alice");
    const j = h.join("demo");
    gw.joined(1, "demo", [
      { peerId: "b", state: PresenceState.ONLINE, name: "Bob", metadata: '{"role":"admin"}' },
      { peerId: "c", state: PresenceState.UNREACHABLE },
    ]);
    expect(h.result(j)).toEqual({
      state: "resolved",
      value: {
        room: "demo",
        peers: [
          { peerId: "b", state: "online", name: "Bob", metadata: '{"role":"admin"}' },
          { peerId: "c", state: "unreachable" },
        ],
      },
    });
    gw.deliver({ seq: 2n, msg: { case: "peerJoined", value: { room: "demo", peer: { peerId: "d", state: 1, name: "Dora" } } } });
    expect(h.of("peerJoined")).toEqual([{ room: "demo", peer: { peerId: "d", state: "online", name: "Dora" } }]);
  });
});
