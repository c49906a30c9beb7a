/**
 * The shell (SignalgateClient) around the core: real promises, real (fake-timer) setTimeout,
 * transports behind the Connector interface, the page lifecycle. The rules themselves are
 * tested on the core (test/core/); here: that the shell performs them faithfully.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { SignalgateError } from "../src/errors.js";
import { ErrorCode, SdpType } from "../src/gen/signalgate/v1/signalgate_pb.js";
import { documentLifecycle, type LifecycleEvent } from "../src/lifecycle.js";
import { harness, peerJoined } from "./helpers.js";

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

function errorFrame(code: ErrorCode, inReplyTo: bigint, seq = 1n, message = "nope") {
  return { seq, inReplyTo, msg: { case: "error" as const, value: { code, message, inReplyTo } } };
}

describe("connecting", () => {
  it("opens WebTransport with the URL and certificate hashes, says Hello once it is open, resolves connect() on Welcome", async () => {
    const value = new Uint8Array(32).fill(7);
    const h = harness({ client: "test/1", serverCertificateHashes: [{ algorithm: "sha-256", value }] });
    const connecting = h.client.connect();
    expect(h.client.state).toBe("connecting");
    await h.tick();
    const attempt = h.net.last();
    expect(attempt.kind).toBe("webtransport");
    expect(attempt.url).toBe("https://127.0.0.1:4433/wt");
    expect(attempt.options.serverCertificateHashes).toEqual([{ algorithm: "sha-256", value }]);
    const conn = attempt.open();
    await h.tick();
    expect(conn.hello()).toMatchObject({ client: "test/1", resumeToken: "" });
    conn.welcome({ peerId: "peer-a", connectionId: "c-7" });
    await connecting;
    expect(h.client.state).toBe("connected");
    expect(h.client.transport).toBe("webtransport");
    expect(h.client.peerId).toBe("peer-a");
    expect(h.client.connectionId).toBe("c-7");
    expect(h.of("connected")).toEqual([{ transport: "webtransport", peerId: "peer-a", connectionId: "c-7" }]);
  });

  it("WebTransport that opens too late is aborted, then closed when it does open", async () => {
    const h = harness({ webTransportTimeoutMs: 3000 });
    void h.client.connect();
    await h.tick();
    const wt = h.net.last();
    await h.tick(3000);
    expect(wt.options.signal.aborted).toBe(true);
    expect(h.net.kinds()).toEqual(["webtransport", "websocket"]);
    const late = wt.open();
    await h.tick();
    expect(late.closedByClient).toBe("obsolete attempt");
    expect(late.sent).toEqual([]);
  });

  it("a connector that throws counts as a failed transport", async () => {
    const h = harness(
      {},
      {
        connectors: {
          webtransport: () => {
            throw new Error("boom");
          },
        },
      },
    );
    void h.client.connect();
    await h.tick();
    expect(h.of("transportFailed")).toEqual([{ transport: "webtransport", error: "boom" }]);
    expect(h.net.kinds()).toEqual(["websocket"]);
  });
});

describe("promises", () => {
  it("sendData resolves with its frame id when the gateway's Ack covers it, not when written", async () => {
    const h = harness();
    const conn = await h.connected();
    let settled = false;
    const sending = h.client.sendData("demo", "peer-b", Uint8Array.of(1, 2));
    void sending.finally(() => (settled = true));
    await h.tick();
    const frame = conn.sentOf("signal")[0]!;
    expect(frame.seq).toBe(1n);
    expect(settled).toBe(false);
    expect(h.client.unacknowledged).toBe(1);
    conn.ack(1);
    await expect(sending).resolves.toBe(Number(frame.id));
    expect(h.client.unacknowledged).toBe(0);
  });

  it("an Error about a signal rejects it with a SignalgateError carrying the code and the frame id", async () => {
    const h = harness();
    const conn = await h.connected();
    const sending = h.client.sendDescription("demo", "peer-b", { type: "offer", sdp: "v=0\r\n" });
    const frame = conn.sentOf("signal")[0]!;
    expect(frame.msg.value).toMatchObject({ room: "demo", to: "peer-b", payload: { case: "description", value: { type: SdpType.OFFER } } });
    conn.deliver(errorFrame(ErrorCode.PEER_NOT_IN_ROOM, frame.id, 1n, "peer-b left"));
    conn.ack(1);
    const err = await sending.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SignalgateError);
    expect(err).toMatchObject({ code: "PEER_NOT_IN_ROOM", inReplyTo: Number(frame.id), detail: "peer-b left" });
  });

  it("encodes ICE candidates (null fields left out)", async () => {
    const h = harness();
    const conn = await h.connected();
    void h.client.sendCandidate("demo", "b", { candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host", sdpMid: "0", sdpMLineIndex: 0, usernameFragment: null });
    const c = conn.sentOf("signal")[0]!.msg.value.payload;
    expect(c).toMatchObject({ case: "candidate", value: { candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host", sdpMid: "0", sdpMLineIndex: 0 } });
    expect(c.case === "candidate" && c.value.usernameFragment).toBe(undefined);
  });

  it("join resolves on Joined; a request with no reply rejects with TIMEOUT on the real timer", async () => {
    const h = harness({ requestTimeoutMs: 5000 });
    const conn = await h.connected({ livenessTimeoutMs: 60_000, pingIntervalMs: 20_000 });
    const joining = h.client.join("r");
    conn.deliver({ seq: 1n, inReplyTo: conn.sentOf("join")[0]!.id, msg: { case: "joined", value: { room: "r", peers: [] } } });
    await expect(joining).resolves.toEqual({ room: "r", peers: [] });
    const slow = h.client.leave("r").catch((e: unknown) => e);
    await h.tick(5000);
    await expect(slow).resolves.toMatchObject({ code: "TIMEOUT" });
  });

  it("requests before connect() reject with NOT_CONNECTED, after close() with CLOSED", async () => {
    const h = harness();
    await expect(h.client.join("demo")).rejects.toMatchObject({ code: "NOT_CONNECTED" });
    await h.connected();
    h.client.close();
    await expect(h.client.sendData("demo", "b", Uint8Array.of(1))).rejects.toMatchObject({ code: "CLOSED" });
    await expect(h.client.connect()).rejects.toMatchObject({ code: "CLOSED" });
  });

  it("a request made inside an event listener goes out after the frames queued before it", async () => {
    const h = harness();
    void h.client.connect();
    void h.client.sendData("demo", "b", new TextEncoder().encode("queued"));
    h.client.on("connected", () => void h.client.sendData("demo", "b", new TextEncoder().encode("from listener")));
    await h.tick();
    const conn = h.net.last().open();
    await h.tick();
    conn.welcome();
    const texts = conn.sentOf("signal").map((f) => (f.msg.value.payload.case === "data" ? new TextDecoder().decode(f.msg.value.payload.value) : ""));
    expect(texts).toEqual(["queued", "from listener"]);
    expect(conn.sentOf("signal").map((f) => f.seq)).toEqual([1n, 2n]);
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

describe("timers", () => {
  it("liveness runs on the real timer: Pings, then a silent gateway's connection is closed and the session resumed", async () => {
    const h = harness();
    const conn = await h.connected({ livenessTimeoutMs: 1000, pingIntervalMs: 400, resumeToken: "tok-9" });
    await h.tick(400);
    expect(conn.sentOf("ping")).toHaveLength(1);
    await h.tick(600);
    expect(h.of("disconnected")).toEqual([{ reason: "liveness_timeout", willReconnect: true }]);
    expect(conn.closedByClient).toBe("liveness_timeout");
    await h.nextAttempt();
    const next = h.net.last().open();
    await h.tick();
    expect(next.hello()).toMatchObject({ resumeToken: "tok-9", attempt: 1n });
  });

  it("the timer is re-armed when a deadline moves (a frame arriving postpones the verdict)", async () => {
    const h = harness();
    const conn = await h.connected({ livenessTimeoutMs: 1000, pingIntervalMs: 400 });
    for (let i = 1; i <= 10; i++) {
      await h.tick(300);
      conn.deliver(peerJoined(i));
    }
    expect(h.of("disconnected")).toEqual([]);
  });
});

describe("the page lifecycle, synchronously", () => {
  it("pagehide (unloaded): Bye is written and the connection closed inside the event handler", async () => {
    const h = harness();
    const conn = await h.connected();
    h.page.fire({ type: "pagehide", persisted: false });
    // No tick: the write must happen before the handler returns.
    expect(conn.sent.at(-1)?.msg.case).toBe("bye");
    expect(conn.closedByClient).toBe("page unloaded");
    expect(h.client.state).toBe("closed");
    expect(h.page.subscribers).toBe(0);
  });

  it("freeze: Suspend is written inside the handler; no reconnect until resume, then at once", async () => {
    const h = harness();
    const conn = await h.connected({ livenessTimeoutMs: 1000, pingIntervalMs: 400 });
    h.page.fire({ type: "freeze" });
    expect(conn.sent.at(-1)?.msg.case).toBe("suspend");
    expect(h.client.state).toBe("suspended");
    conn.drop({ clean: true, code: 4005 });
    await h.tick(600_000);
    expect(h.net.attempts).toHaveLength(1);
    h.page.fire({ type: "resume" });
    await h.tick();
    expect(h.net.attempts).toHaveLength(2);
  });

  it("close(): Bye, then the gateway's close ends it; the lifecycle listener is removed", async () => {
    const h = harness();
    const conn = await h.connected();
    expect(h.page.subscribers).toBe(1);
    h.client.close();
    expect(conn.sent.at(-1)?.msg.case).toBe("bye");
    expect(h.client.state).toBe("closing");
    conn.drop({ clean: true, code: 1000 });
    expect(h.client.state).toBe("closed");
    expect(h.page.subscribers).toBe(0);
    await h.tick(60_000);
    expect(h.net.attempts).toHaveLength(1);
  });

  it("documentLifecycle reports freeze/resume from document and pagehide/pageshow with `persisted` from window", () => {
    const doc = new EventTarget();
    const win = new EventTarget();
    const seen: LifecycleEvent[] = [];
    const stop = documentLifecycle(doc, win).subscribe((e) => seen.push(e));
    const pageEvent = (type: string, persisted: boolean) => Object.assign(new Event(type), { persisted });
    doc.dispatchEvent(new Event("freeze"));
    win.dispatchEvent(pageEvent("pagehide", true));
    win.dispatchEvent(pageEvent("pageshow", true));
    doc.dispatchEvent(new Event("resume"));
    win.dispatchEvent(pageEvent("pagehide", false));
    doc.dispatchEvent(new Event("visibilitychange"));
    expect(seen).toEqual([
      { type: "freeze" },
      { type: "pagehide", persisted: true },
      { type: "pageshow", persisted: true },
      { type: "resume" },
      { type: "pagehide", persisted: false },
    ]);
    stop();
    doc.dispatchEvent(new Event("freeze"));
    expect(seen).toHaveLength(5);
  });
});

describe("getToken", () => {
  it("is called for each connection attempt ({reason: 'connect'}); Hello carries what it resolves to", async () => {
    const calls: string[] = [];
    let n = 0;
    const h = harness({
      getToken: async (ctx) => {
        calls.push(ctx.reason);
        return `jwt-${++n}`;
      },
    });
    const conn = await h.connected({ identity: "alice", livenessTimeoutMs: 60_000, pingIntervalMs: 20_000 });
    expect(conn.hello().token).toBe("jwt-1");
    expect(h.client.identity).toBe("alice");
    conn.drop();
    await h.nextAttempt();
    const next = h.net.last().open();
    await h.tick();
    expect(next.hello()).toMatchObject({ token: "jwt-2", resumeToken: "tok-1" });
    expect(calls).toEqual(["connect", "connect"]);
  });

  it("a getToken that throws, rejects or resolves to a non-string is an error event and a retry, never an exception", async () => {
    const outcomes: (() => Promise<string>)[] = [
      () => {
        throw new Error("sync throw");
      },
      () => Promise.reject(new Error("offline")),
      () => Promise.resolve(42 as unknown as string),
      () => Promise.resolve("good"),
    ];
    const h = harness({ getToken: () => outcomes.shift()!() });
    const connecting = h.client.connect();
    for (let i = 0; i < 3; i++) {
      await h.tick();
      h.net.last().open();
      await h.tick();
      await h.nextAttempt();
    }
    expect(h.of("error")).toEqual([
      { code: "GET_TOKEN_FAILED", message: "getToken failed: sync throw", inReplyTo: 0 },
      { code: "GET_TOKEN_FAILED", message: "getToken failed: offline", inReplyTo: 0 },
      { code: "GET_TOKEN_FAILED", message: "getToken returned number, not a string", inReplyTo: 0 },
    ]);
    const conn = h.net.last().open();
    await h.tick();
    expect(conn.hello().token).toBe("good");
    conn.welcome();
    await connecting;
  });

  it("refreshes on the real timer: getToken({reason: 'refresh'}), Refresh, Refreshed → tokenRefreshed; tokenExpiresInMs follows", async () => {
    const reasons: string[] = [];
    const h = harness({
      getToken: async (ctx) => {
        reasons.push(ctx.reason);
        return `jwt-${reasons.length}`;
      },
    });
    const conn = await h.connected({ tokenExpiresInMs: 60_000n, livenessTimeoutMs: 600_000, pingIntervalMs: 300_000 });
    expect(h.client.tokenExpiresInMs).toBe(60_000);
    await h.tick(47_999);
    expect(conn.sentOf("refresh")).toEqual([]);
    expect(h.client.tokenExpiresInMs).toBe(12_001);
    await h.tick(1);
    expect(reasons).toEqual(["connect", "refresh"]);
    const refresh = conn.sentOf("refresh")[0]!;
    expect(refresh.msg.value.token).toBe("jwt-2");
    conn.deliver({ seq: 1n, inReplyTo: refresh.id, msg: { case: "refreshed", value: { tokenExpiresInMs: 120_000n } } });
    expect(h.of("tokenRefreshed")).toEqual([{ expiresInMs: 120_000 }]);
    expect(h.client.tokenExpiresInMs).toBe(120_000);
  });

  it("a token that arrives after close() is dropped", async () => {
    let release: (token: string) => void = () => undefined;
    const h = harness({ getToken: () => new Promise<string>((resolve) => (release = resolve)) });
    void h.client.connect().catch(() => undefined);
    await h.tick();
    const conn = h.net.last().open();
    await h.tick();
    h.client.close();
    release("late");
    await h.tick();
    expect(conn.sent).toEqual([]);
    expect(h.client.state).toBe("closed");
  });
});

describe("several gateways (cluster mode)", () => {
  const hex = (byte: string) => byte.repeat(32);
  const entry = (node: string, byte: string) => ({
    node,
    websocket: `wss://${node}:4433/ws`,
    webtransport: `https://${node}:4433/wt`,
    cert_sha256: hex(byte),
  });
  const pin = (byte: string) => [{ algorithm: "sha-256" as const, value: new Uint8Array(32).fill(parseInt(byte, 16)) }];

  it("fetches endpointsUrl with fetchJson, connects to a gateway of its list, pinning that gateway's own certificate", async () => {
    const fetched: string[] = [];
    const h = harness(
      { webTransportUrl: undefined, webSocketUrl: undefined, endpointsUrl: "/endpoints" },
      {
        random: () => 0.9,
        fetchJson: async (url) => {
          fetched.push(url);
          return { webtransport: "https://a:4433/wt", websocket: "wss://a:4433/ws", cert_sha256: hex("aa"), gateways: [entry("a", "aa"), entry("b", "bb")] };
        },
      },
    );
    const connecting = h.client.connect();
    expect(h.client.state).toBe("connecting");
    await h.tick();
    expect(fetched).toEqual(["/endpoints"]);
    expect(h.client.gateways.map((g) => g.node)).toEqual(["a", "b"]);
    expect(h.of("gatewaysUpdated")).toHaveLength(1);
    const attempt = h.net.last();
    expect(attempt.url).toBe("https://b:4433/wt");
    expect(attempt.options.serverCertificateHashes).toEqual(pin("bb"));
    const conn = attempt.open();
    await h.tick();
    conn.welcome();
    await connecting;
    expect(h.client.gateway?.node).toBe("b");
  });

  it("a failed fetch while gateways are known is no error: the gateways of the options stay in use", async () => {
    const h = harness(
      { endpointsUrl: "/endpoints" },
      {
        fetchJson: () => Promise.reject(new Error("HTTP 404")),
      },
    );
    const conn = await h.connected();
    // (The gateway that served the page may be the one draining: its /endpoints is gone.)
    expect(h.of("error")).toEqual([]);
    expect(h.net.last().url).toBe("https://127.0.0.1:4433/wt");
    expect(conn.sentOf("hello")).toHaveLength(1);
  });

  it("fails over to the next gateway after a failed connect; its WebTransport carries its own hash", async () => {
    const h = harness(
      {
        webTransportUrl: undefined,
        webSocketUrl: undefined,
        gateways: [
          { node: "a", webTransportUrl: "https://a/wt", webSocketUrl: "wss://a/ws", serverCertificateHashes: pin("aa") },
          { node: "b", webTransportUrl: "https://b/wt", webSocketUrl: "wss://b/ws", serverCertificateHashes: pin("bb") },
        ],
      },
      { random: () => 0 },
    );
    void h.client.connect();
    await h.tick();
    h.net.last().fail();
    await h.tick();
    h.net.last().fail();
    await h.tick();
    expect(h.net.attempts.map((a) => [a.url, a.options.serverCertificateHashes])).toEqual([
      ["https://a/wt", pin("aa")],
      ["wss://a/ws", undefined],
      ["https://b/wt", pin("bb")],
    ]);
  });
});
