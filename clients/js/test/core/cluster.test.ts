/**
 * Core: several gateways (cluster mode). Spreading first connects, failing over to the next
 * gateway with the resume token, leaving a gateway that says GoAway, each gateway's own
 * certificate hash, and the list from GET /endpoints. A single gateway behaves as before.
 */
import { describe, expect, it } from "vitest";
import { resolveConfig } from "../../src/core/config.js";
import { Reason } from "../../src/gen/signalgate/v1/signalgate_pb.js";
import type { GatewayEndpoint } from "../../src/types.js";
import { CoreHarness, ErrorCode, type Gw } from "./harness.js";

const HASH_A = "aa".repeat(32);
const HASH_B = "bb".repeat(32);
const HASH_C = "cc".repeat(32);

function bytes(hex: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(hex.match(/../g)!.map((h) => parseInt(h, 16)));
}

function gw(name: string, hash?: string): GatewayEndpoint {
  return {
    node: name,
    webTransportUrl: `https://${name}:4433/wt`,
    webSocketUrl: `wss://${name}:4433/ws`,
    ...(hash ? { serverCertificateHashes: [{ algorithm: "sha-256" as const, value: bytes(hash) }] } : {}),
  };
}

/** An /endpoints entry of the `gateways` array, as the gateway writes it. */
function entry(name: string, hash: string) {
  return { node: name, websocket: `wss://${name}:4433/ws`, webtransport: `https://${name}:4433/wt`, cert_sha256: hash };
}

/** Which gateway a link went to (its host). */
function host(link: Gw): string {
  return new URL(link.url).hostname;
}

/** Options with a list of gateways only (no single webTransportUrl / webSocketUrl). */
function cluster(gateways: GatewayEndpoint[], more = {}) {
  return { webTransportUrl: undefined, webSocketUrl: undefined, gateways, ...more };
}

const GOAWAY_DRAIN = { msg: { case: "goAway" as const, value: { reason: Reason.SERVER_SHUTDOWN, reconnectAfterMs: 1000, spreadMs: 2000 } } };

describe("several gateways: where connections go", () => {
  it("the first connect goes to a gateway drawn at random (spreading a cluster's clients)", () => {
    const hosts = [0, 0.4, 0.99].map((r) => {
      const h = new CoreHarness(cluster([gw("a"), gw("b"), gw("c")]), { random: () => r });
      h.connect();
      return host(h.link());
    });
    expect(hosts).toEqual(["a", "b", "c"]);
  });

  it("a connect that fails on one gateway goes on at once to the next, carrying the resume token", () => {
    const h = new CoreHarness(cluster([gw("a"), gw("b")]), { random: () => 0 });
    const a = h.connected({ resumeToken: "tok-a", peerId: "peer-1" });
    expect(host(a)).toBe("a");
    a.peerJoined(1);
    a.drop();
    // A lost connection tries the same gateway first: the session is there.
    const again = h.untilNewLink();
    expect([host(again), again.kind]).toEqual(["a", "webtransport"]);
    again.fail();
    h.link().fail(); // WebSocket to a as well: the gateway is gone
    const b = h.link();
    expect([host(b), b.kind]).toEqual(["b", "webtransport"]);
    expect(h.of("reconnecting")).toHaveLength(1); // no back-off between gateways
    b.open();
    expect(b.hello()).toMatchObject({ resumeToken: "tok-a", lastSeq: 1n, attempt: 1n });
    b.resumed({ peerId: "peer-1" });
    expect(h.core.state).toBe("connected");
    expect(h.core.peerId).toBe("peer-1");
    expect(h.core.gateway?.node).toBe("b");
    expect(h.of("resumed")).toHaveLength(1);
    expect(h.of("sessionLost")).toEqual([]);
  });

  it("CLUSTER_UNAVAILABLE answering Hello: the next gateway at once (not the other transport of the same one)", () => {
    const h = new CoreHarness(cluster([gw("a"), gw("b")]), { random: () => 0 });
    const a = h.connected();
    a.drop();
    const again = h.untilNewLink().open();
    again.error(ErrorCode.CLUSTER_UNAVAILABLE, again.hello().id, 0, "this gateway is cut off from the cluster; connect to another one");
    expect(again.closedBy).toBe("gateway lost");
    const b = h.link();
    expect([host(b), b.kind]).toEqual(["b", "webtransport"]);
    b.open();
    expect(b.hello().resumeToken).toBe("tok-1");
  });

  it("close 4009 before Welcome (cut off from the cluster): the next gateway as well", () => {
    const h = new CoreHarness(cluster([gw("a"), gw("b")]), { random: () => 0 });
    h.connect();
    h.link().open().drop({ clean: true, code: 4009, reason: "gateway lost" });
    expect(h.links.map((l) => `${host(l)}/${l.kind}`)).toEqual(["a/webtransport", "b/webtransport"]);
  });

  it("TOO_MANY_SESSIONS on one gateway: the next gateway at once; back off only once all are full", () => {
    const h = new CoreHarness(cluster([gw("a"), gw("b")]), { random: () => 0 });
    h.connect();
    const a = h.link().open();
    a.error(ErrorCode.TOO_MANY_SESSIONS, a.hello().id);
    const b = h.link().open();
    expect(host(b)).toBe("b");
    b.error(ErrorCode.TOO_MANY_SESSIONS, b.hello().id);
    expect(h.core.phaseKind).toBe("backingOff");
    expect(h.links).toHaveLength(2);
  });

  it("every gateway failed: back off, then a new sweep that starts with another gateway than the last one", () => {
    const h = new CoreHarness(cluster([gw("a"), gw("b"), gw("c")], { transport: "websocket" }), { random: () => 0.5 });
    h.connect();
    expect(host(h.link())).toBe("b");
    h.link().fail();
    h.link().fail();
    h.link().fail();
    // Each failover draws among the gateways not tried yet in this sweep: c of [a, c], then a.
    expect(h.links.map(host)).toEqual(["b", "c", "a"]);
    expect(h.core.phaseKind).toBe("backingOff");
    expect(h.of("reconnecting")).toHaveLength(1);
    h.untilNewLink().fail(); // c of [b, c] (not a, the last one tried), then b of [a, b]
    expect(h.links.map(host)).toEqual(["b", "c", "a", "c", "b"]);
    expect(h.of("reconnecting")).toHaveLength(1);
  });

  it("the clients of a failed or drained gateway spread over the others (a random draw, not its neighbour)", () => {
    /** random(): 0 for the first draw (gateway a), then `r`. */
    const client = (r: number) => {
      let calls = 0;
      return new CoreHarness(cluster([gw("a"), gw("b"), gw("c")]), { random: () => (calls++ === 0 ? 0 : r) });
    };
    const drained = [0, 0.7].map((r) => {
      const h = client(r);
      const a = h.connected();
      a.deliver(GOAWAY_DRAIN);
      a.drop({ clean: true, code: 1001 });
      return host(h.untilNewLink());
    });
    expect(drained).toEqual(["b", "c"]);
    const failedOver = [0, 0.7].map((r) => {
      const h = client(r);
      h.connect();
      h.link().fail();
      h.link().fail();
      return host(h.link());
    });
    expect(failedOver).toEqual(["b", "c"]);
  });

  it("GoAway (drain): at the GoAway's moment, to another gateway than the one that said it, resuming there", () => {
    const h = new CoreHarness(cluster([gw("a"), gw("b"), gw("c")]), { random: () => 0 });
    const a = h.connected({ resumeToken: "tok-a" });
    expect(host(a)).toBe("a");
    a.peerJoined(1);
    a.deliver(GOAWAY_DRAIN);
    expect(h.of("goAway")).toEqual([{ reason: "server_shutdown", reconnectAfterMs: 1000, spreadMs: 2000 }]);
    a.drop({ clean: true, code: 1001 });
    expect(h.of("disconnected")).toEqual([{ reason: "go_away", willReconnect: true }]);
    expect(h.of("reconnecting")).toEqual([{ attempt: 0, delayMs: 1000 }]);
    h.advance(999);
    expect(h.links).toHaveLength(1);
    h.advance(1);
    const next = h.link().open();
    expect(host(next)).toBe("b");
    expect(next.hello()).toMatchObject({ resumeToken: "tok-a", lastSeq: 1n, attempt: 1n });
    next.resumed();
    expect(h.core.gateway?.node).toBe("b");
  });

  it("GoAway from the second gateway moves on again (never back to the one that said it while another is there)", () => {
    const h = new CoreHarness(cluster([gw("a"), gw("b")]), { random: () => 0 });
    const a = h.connected();
    a.deliver(GOAWAY_DRAIN);
    a.drop({ clean: true, code: 1001 });
    const b = h.untilNewLink().open();
    b.resumed();
    b.deliver(GOAWAY_DRAIN);
    b.drop({ clean: true, code: 1001 });
    expect(host(h.untilNewLink())).toBe("a");
  });

  it("GoAway GATEWAY_LOST and close 4009: another gateway; close 4009 alone does the same", () => {
    const h = new CoreHarness(cluster([gw("a"), gw("b")]), { random: () => 0 });
    const a = h.connected();
    a.deliver({ msg: { case: "goAway", value: { reason: Reason.GATEWAY_LOST, reconnectAfterMs: 0, spreadMs: 500 } } });
    expect(h.of("goAway")).toEqual([{ reason: "gateway_lost", reconnectAfterMs: 0, spreadMs: 500 }]);
    a.drop({ clean: true, code: 4009 });
    const b = h.untilNewLink().open();
    expect(host(b)).toBe("b");
    b.resumed();
    b.drop({ clean: true, code: 4009, reason: "gateway lost" }); // no GoAway before it
    expect(h.of("disconnected").at(-1)).toEqual({ reason: "connection_lost", willReconnect: true });
    expect(host(h.untilNewLink())).toBe("a");
  });

  it("WebTransport to each gateway pins that gateway's own certificate hash (WebSocket pins none)", () => {
    const h = new CoreHarness(cluster([gw("a", HASH_A), gw("b", HASH_B)]), { random: () => 0 });
    h.connect();
    h.link().fail();
    h.link().fail();
    h.link().fail();
    const [wtA, wsA, wtB, wsB] = h.links;
    expect([wtA!.kind, wtA!.url, wtA!.hashes]).toEqual(["webtransport", "https://a:4433/wt", [{ algorithm: "sha-256", value: bytes(HASH_A) }]]);
    expect([wsA!.kind, wsA!.url, wsA!.hashes]).toEqual(["websocket", "wss://a:4433/ws", undefined]);
    expect([wtB!.kind, wtB!.url, wtB!.hashes]).toEqual(["webtransport", "https://b:4433/wt", [{ algorithm: "sha-256", value: bytes(HASH_B) }]]);
    expect(wsB!.url).toBe("wss://b:4433/ws");
  });

  it("the UDP-blocked memory is about the network: it applies to every gateway", () => {
    const h = new CoreHarness(cluster([gw("a"), gw("b")], { webTransportTimeoutMs: 3000 }), { random: () => 0 });
    h.connect();
    h.advance(3000); // WebTransport to a: no answer at all
    const ws = h.link().open();
    ws.welcome();
    ws.deliver(GOAWAY_DRAIN);
    ws.drop({ clean: true, code: 1001 });
    const next = h.untilNewLink();
    expect([host(next), next.kind]).toEqual(["b", "websocket"]);
  });
});

describe("the list from GET /endpoints", () => {
  it("replaces a stale list: the next gateway comes from the new one (gatewaysUpdated)", () => {
    const h = new CoreHarness(cluster([gw("a", HASH_A), gw("old", HASH_B)], { endpointsUrl: "/endpoints" }), { random: () => 0 });
    h.connect();
    expect(h.endpointRequests).toEqual([{ ticket: 1, url: "/endpoints" }]);
    expect(host(h.link())).toBe("a");
    h.answerEndpoints({
      webtransport: "https://a:4433/wt",
      websocket: "wss://a:4433/ws",
      cert_sha256: HASH_A,
      gateways: [entry("a", HASH_A), entry("c", HASH_C)],
    });
    expect(h.core.gateways.map((g) => g.node)).toEqual(["a", "c"]);
    expect(h.of("gatewaysUpdated").map((e) => e.gateways.map((g) => g.node))).toEqual([["a", "c"]]);
    h.link().fail();
    h.link().fail(); // a is down: not "old" (gone from the list) but c, with c's own hash
    const c = h.link();
    expect([c.url, c.hashes]).toEqual(["https://c:4433/wt", [{ algorithm: "sha-256", value: bytes(HASH_C) }]]);
    // Leaving a gateway asks for the list again.
    expect(h.endpointRequests).toHaveLength(2);
  });

  it("the gateway in use stays the gateway in use when the new list still has it", () => {
    const h = new CoreHarness(cluster([gw("a"), gw("b")], { endpointsUrl: "/endpoints" }), { random: () => 0.9 });
    const b = h.connected();
    expect(host(b)).toBe("b");
    h.answerEndpoints({ gateways: [entry("x", HASH_A), entry("b", HASH_B), entry("a", HASH_C)] });
    b.drop();
    expect(host(h.untilNewLink())).toBe("b");
  });

  it("GoAway asks for the list at once; the draining gateway, left out of it, is not chosen again", () => {
    const h = new CoreHarness(cluster([gw("a"), gw("b")], { endpointsUrl: "/endpoints" }), { random: () => 0 });
    const a = h.connected();
    h.answerEndpoints({ gateways: [entry("a", HASH_A), entry("b", HASH_B)] });
    a.deliver(GOAWAY_DRAIN);
    expect(h.endpointRequests).toHaveLength(2);
    h.answerEndpoints({ gateways: [entry("b", HASH_B), entry("c", HASH_C)] });
    a.drop({ clean: true, code: 1001 });
    const next = h.untilNewLink();
    expect(host(next)).toBe("b");
    next.fail();
    h.link().fail();
    expect(host(h.link())).toBe("c");
  });

  it("with only endpointsUrl, the first connection waits for the list, then picks one of its gateways", () => {
    const h = new CoreHarness(cluster([], { endpointsUrl: "/endpoints" }), { random: () => 0.99 });
    h.connect();
    expect(h.core.phaseKind).toBe("discovering");
    expect(h.core.state).toBe("connecting");
    expect(h.links).toEqual([]);
    h.answerEndpoints({
      webtransport: "https://127.0.0.1:4433/wt",
      websocket: "ws://localhost:4480/ws",
      cert_sha256: HASH_A,
      gateways: [entry("a", HASH_A), entry("b", HASH_B)],
    });
    const b = h.link();
    expect([b.url, b.hashes]).toEqual(["https://b:4433/wt", [{ algorithm: "sha-256", value: bytes(HASH_B) }]]);
    b.open().welcome();
    expect(h.core.state).toBe("connected");
  });

  it("several endpointsUrl are asked in turn; when none answers: ENDPOINTS_FAILED, back off, ask again", () => {
    const h = new CoreHarness(cluster([], { endpointsUrl: ["https://one/endpoints", "https://two/endpoints"], helloTimeoutMs: 2000 }), {
      random: () => 0.999,
    });
    h.connect();
    h.failEndpoints("HTTP 502");
    expect(h.endpointRequests.map((r) => r.url)).toEqual(["https://one/endpoints", "https://two/endpoints"]);
    h.advance(2000); // the second one never answers
    expect(h.of("error")).toEqual([
      { code: "ENDPOINTS_FAILED", message: "https://one/endpoints: HTTP 502; https://two/endpoints: no answer within 2000 ms", inReplyTo: 0 },
    ]);
    expect(h.core.phaseKind).toBe("backingOff");
    h.advance(250);
    expect(h.core.phaseKind).toBe("discovering");
    expect(h.endpointRequests).toHaveLength(3);
    // A late answer to an abandoned fetch is ignored; the one asked for counts.
    h.answerEndpoints({ websocket: "ws://late/ws" }, 2);
    expect(h.links).toEqual([]);
    h.answerEndpoints({ websocket: "ws://two/ws", webtransport: null, cert_sha256: null, gateways: [] });
    expect(h.links.map((l) => l.url)).toEqual(["ws://two/ws"]);
  });

  it("the URL that answered is asked first next time", () => {
    const h = new CoreHarness(cluster([gw("a")], { endpointsUrl: ["/one", "/two"] }));
    const a = h.connected();
    h.failEndpoints();
    h.answerEndpoints({ websocket: "wss://a:4433/ws", webtransport: "https://a:4433/wt", gateways: [] });
    a.deliver(GOAWAY_DRAIN);
    expect(h.endpointRequests.map((r) => r.url)).toEqual(["/one", "/two", "/two"]);
  });
});

describe("a single gateway behaves exactly as before", () => {
  /** A script of failures, a session, a loss, a GoAway; what the core did, link by link. */
  function script(h: CoreHarness, answer?: unknown) {
    h.connect();
    if (answer) h.answerEndpoints(answer);
    h.link().fail();
    h.link().fail();
    expect(h.core.phaseKind).toBe("backingOff");
    const gw1 = h.untilNewLink().open();
    gw1.welcome();
    gw1.drop();
    const gw2 = h.untilNewLink().open();
    gw2.resumed();
    gw2.deliver(GOAWAY_DRAIN);
    gw2.drop({ clean: true, code: 1001 });
    const gw3 = h.untilNewLink().open();
    gw3.error(ErrorCode.TOO_MANY_SESSIONS, gw3.hello().id);
    h.untilNewLink().open().resumed();
    return {
      links: h.links.map((l) => [l.kind, l.url, l.hashes?.map((x) => [...(x.value as Uint8Array)].length)]),
      events: h.events.filter((e) => e.name !== "gatewaysUpdated"),
      hellos: h.links.filter((l) => l.sent.length > 0).map((l) => l.hello().attempt),
    };
  }
  const single = {
    webTransportUrl: "https://gw:4433/wt",
    webSocketUrl: "wss://gw:4433/ws",
    serverCertificateHashes: [{ algorithm: "sha-256" as const, value: bytes(HASH_A) }],
  };

  it("given as webTransportUrl / webSocketUrl: every round to it, back-off after its transports, no /endpoints", () => {
    const h = new CoreHarness(single, { random: () => 0.5 });
    const run = script(h);
    expect(new Set(run.links.map((l) => l[1]))).toEqual(new Set(["https://gw:4433/wt", "wss://gw:4433/ws"]));
    expect(h.endpointRequests).toEqual([]);
    expect(h.core.gateways).toHaveLength(1);
  });

  it("learned from /endpoints with an empty `gateways` array: the same links, events and Hellos", () => {
    const before = script(new CoreHarness(single, { random: () => 0.5 }));
    const h = new CoreHarness({ ...single, endpointsUrl: "/endpoints" }, { random: () => 0.5 });
    const after = script(h, { webtransport: "https://gw:4433/wt", websocket: "wss://gw:4433/ws", websocket_tls: "wss://gw:4433/ws", cert_sha256: HASH_A, gateways: [] });
    expect(after).toEqual(before);
    expect(h.of("gatewaysUpdated")).toEqual([]); // the answer describes the gateway already known
  });

  it("a GoAway (restart) or close 4009 with one gateway: back to it", () => {
    const h = new CoreHarness({}, { random: () => 0 });
    const a = h.connected();
    a.deliver(GOAWAY_DRAIN);
    a.drop({ clean: true, code: 4009 });
    expect(h.untilNewLink().url).toBe(a.url);
  });
});

describe("options", () => {
  it("gateways and endpointsUrl count as where to connect; each gateway needs a URL", () => {
    expect(resolveConfig({ endpointsUrl: "/endpoints" }, true).endpointsUrls).toEqual(["/endpoints"]);
    expect(resolveConfig({ gateways: [gw("a")] }, true).gateways).toHaveLength(1);
    expect(() => resolveConfig({ gateways: [{ node: "a" }] }, true)).toThrow(TypeError);
    expect(() => resolveConfig({ gateways: [], endpointsUrl: [] }, true)).toThrow(TypeError);
    expect(() => resolveConfig({ gateways: [{ webSocketUrl: "wss://a/ws" }], transport: "webtransport" }, true)).toThrow(TypeError);
  });

  it("webTransportUrl / webSocketUrl are one more gateway, first, with serverCertificateHashes; duplicates are dropped", () => {
    const hashes = [{ algorithm: "sha-256" as const, value: bytes(HASH_A) }];
    const config = resolveConfig(
      { webTransportUrl: "https://a:4433/wt", webSocketUrl: "wss://a:4433/ws", serverCertificateHashes: hashes, gateways: [gw("a"), gw("b", HASH_B)] },
      true,
    );
    expect(config.gateways.map((g) => [g.webTransportUrl, g.serverCertificateHashes?.[0]?.value])).toEqual([
      ["https://a:4433/wt", bytes(HASH_A)],
      ["https://b:4433/wt", bytes(HASH_B)],
    ]);
  });
});
