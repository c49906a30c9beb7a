// Cluster mode: two gateways (a, b) joined through one nats-server. Page 1 is on gateway a,
// page 2 on gateway b, both in one room: they see each other, exchange signals across the
// two gateways, and the demo sets up a WebRTC call through them. Then gateway a gets SIGTERM
// and drains: it hands page 1's session to b, says GoAway and exits 0. Page 1's SDK moves to
// gateway b by itself and resumes there with the same peer id; page 2 never sees page 1
// leave; the data signals sent both ways around the drain all arrive, in order, once each;
// the WebRTC call (browser to browser) is not disturbed. Once over WebTransport (the SDK's
// default, `auto`), once with WebSocket forced, and once over WebTransport with gateway a
// started with `--reconnect-spread 0s`, so that the page reconnects to b at the very moment
// of the GoAway, racing the hand-over between the gateways.
//
// How the pages get their gateways: each page is the demo page served by "its" gateway
// (plain HTTP, http://localhost:<http port>/), which reads that gateway's GET /endpoints and
// gives the SDK the cluster's list (`gateways`) plus `endpointsUrl: '/endpoints'` (same origin,
// so no CORS is involved). The test rewrites those answers in the browser (playwright route):
//   - page 2 (on gateway b's page): every answer lists only gateway b, so it stays there;
//   - page 1 (on gateway a's page): the first answer (the demo's own, which the SDK's first
//     connection uses) lists only gateway a, so it starts there and not on a gateway drawn at
//     random; every later answer (the SDK's own GET /endpoints at connect() and when it leaves a
//     gateway) is the gateway's, untouched: both gateways. (When the SDK asks again after the
//     GoAway, gateway a has closed its listeners: the request fails and the SDK keeps its
//     list, without an error event: it knows a gateway to go to.)
//   - with WebSocket forced, gateway b's `websocket` (wss:// on its --listen port, whose
//     development certificate the browser does not trust; only WebTransport pins hashes) is
//     replaced by its plain-HTTP listener, ws://localhost:<b's http port>/ws.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { launchBrowser, openDemo } from "./lib/browser.mjs";
import { startGateway } from "./lib/gateway.mjs";
import { startNats } from "./lib/nats.mjs";
import { exchangeChat } from "./lib/scenario.mjs";
import { measure, outDir, sleep, withTimeout } from "./lib/util.mjs";

let nats;
let browser;
before(async () => {
  nats = await startNats({ name: "cluster" });
  browser = await launchBrowser("cluster");
});
after(async () => {
  await browser?.close();
  await nats?.stop();
});

const SIGNALS = 60;
const EVERY_MS = 100;
/** Signals sent before the SIGTERM (the rest go out during and after the drain). */
const SIGTERM_AFTER_MS = 1500;

/** Gateway `node` of a cluster, on its own ports, certificate and log. */
function startNode(label, node, extraArgs = []) {
  return startGateway({
    name: `${label}-${node}`,
    liveness: "2s",
    ping: "600ms",
    resumeWindow: "10s",
    extraArgs: ["--cluster", nats.url, "--node-id", node, ...extraArgs],
  });
}

async function endpointsOf(gw) {
  const res = await fetch(`http://127.0.0.1:${gw.httpPort}/endpoints`, { cache: "no-store" });
  if (!res.ok) throw new Error(`${gw.name}: GET /endpoints: HTTP ${res.status}`);
  return res.json();
}

/** Until every gateway's /endpoints lists exactly `nodes` (at most 20 s). */
async function waitForCluster(gateways, nodes) {
  const want = [...nodes].sort().join(",");
  let last = "";
  await withTimeout(
    (async () => {
      for (;;) {
        const seen = await Promise.all(gateways.map(async (gw) => (await endpointsOf(gw)).gateways.map((g) => g.node).sort().join(",")));
        last = JSON.stringify(seen);
        if (seen.every((s) => s === want)) return;
        await sleep(100);
      }
    })(),
    20_000,
    `the gateways to list nodes ${want} in /endpoints`,
  ).catch((err) => {
    throw new Error(`${err.message} (last seen: ${last})`);
  });
}

/**
 * Rewrites every GET /endpoints answer the pages of `context` receive with `rewrite(json)`.
 * When the gateway does not answer (it is gone), the request fails as it would without the
 * route. Returns counters {answered, failed}.
 */
async function routeEndpoints(context, rewrite) {
  const counts = { answered: 0, failed: 0 };
  await context.route("**/endpoints", async (route) => {
    let response;
    try {
      response = await route.fetch({ timeout: 5000 });
    } catch {
      counts.failed++;
      await route.abort("connectionrefused").catch(() => undefined);
      return;
    }
    try {
      const json = rewrite(await response.json(), counts.answered);
      counts.answered++;
      await route.fulfill({ response, json });
    } catch {
      counts.failed++;
      await route.abort("failed").catch(() => undefined);
    }
  });
  return counts;
}

const onlyNode = (json, node) => ({ ...json, gateways: json.gateways.filter((g) => g.node === node) });

/**
 * The sender page sends data signals `${prefix}-1..N` to `to`, one every EVERY_MS, from its own
 * timers (sending goes on while the test drives the drain). `window.__sent[prefix]` lists
 * what it sent, and `failed ...` for any send the SDK rejected.
 */
async function startSending(sender, room, to, prefix) {
  await sender.page.evaluate(
    ({ room, to, prefix, n, every }) => {
      window.__sent ??= {};
      const sent = (window.__sent[prefix] = []);
      let i = 0;
      const timer = setInterval(() => {
        i++;
        if (i > n) {
          clearInterval(timer);
          return;
        }
        const text = `${prefix}-${i}`;
        sent.push(text);
        window.signalgateDemo.client
          .sendData(room, to, new TextEncoder().encode(text))
          .catch((e) => sent.push(`failed ${text}: ${e}`));
      }, every);
    },
    { room, to, prefix, n: SIGNALS, every: EVERY_MS },
  );
}

/** Every data signal `${prefix}-i` arrived at `receiver` from `from`, in order, exactly once. */
async function assertAllSignals(receiver, sender, prefix) {
  const expected = Array.from({ length: SIGNALS }, (_, i) => `${prefix}-${i + 1}`);
  await receiver.waitFor(
    `all ${SIGNALS} data signals ${prefix}-*`,
    ({ prefix, n }) => window.__e2e.events.filter((e) => e.type === "signal" && e.data?.startsWith(`${prefix}-`)).length >= n,
    { prefix, n: SIGNALS },
    SIGNALS * EVERY_MS + 15_000,
  );
  await sleep(300); // any duplicate would arrive now
  assert.deepEqual(await sender.page.evaluate((prefix) => window.__sent[prefix], prefix), expected, `${sender.name} could not send everything`);
  const got = (await receiver.events("signal")).filter((e) => e.data?.startsWith(`${prefix}-`));
  assert.deepEqual(
    got.map((e) => e.data),
    expected,
    `${receiver.name}: the data signals ${prefix}-* did not arrive in order, exactly once`,
  );
  assert.ok(
    got.every((e) => e.from === sender.peerId),
    `${receiver.name}: a signal not from ${sender.peerId}`,
  );
}

/** SDK `error` events other than the expected ones (see below), uncaught exceptions, error lines in the demo log. */
async function assertCleanExcept(page, allowedErrorCodes) {
  const { errors, log } = await page.page.evaluate(() => ({
    errors: window.__e2e.events.filter((e) => e.type === "error"),
    log: window.signalgateDemo?.state.log ?? [],
  }));
  const unexpected = errors.filter((e) => !allowedErrorCodes.includes(e.code));
  const pageErrors = page.consoleLines.filter((l) => l.startsWith("[pageerror]"));
  const badLog = log.filter(
    (l) =>
      /\b(error|failed|not sent)\b/i.test(l) &&
      !/^\S+ (webtransport|websocket) failed: /.test(l) &&
      !allowedErrorCodes.some((code) => l.includes(`error ${code}:`)),
  );
  if (unexpected.length || pageErrors.length || badLog.length) {
    throw new Error(`${page.name}: ${JSON.stringify({ sdkErrors: unexpected, pageErrors, demoLog: badLog }, null, 2)}`);
  }
  return errors;
}

/** Every recorded event and the demo's whole log, into $SIGNALGATE_E2E_OUT/<page>-events.json (times relative to the SIGTERM). */
async function saveEvents(page, termAt) {
  try {
    const { events, log } = await withTimeout(
      page.page.evaluate(() => ({ events: window.__e2e.events, log: window.signalgateDemo?.state.log ?? [] })),
      3000,
      "events",
    );
    const rel = termAt === undefined ? events : events.map((e) => ({ ...e, sinceSigterm: e.t - termAt }));
    writeFileSync(join(outDir(), `${page.name}-events.json`), JSON.stringify({ sigtermAt: termAt ?? null, events: rel, log }, null, 1));
  } catch {
    // the page is gone
  }
}

async function clusterDrain(t, { label, transport, extraArgsA = [] }) {
  const room = label;
  const gwA = await startNode(label, "a", extraArgsA);
  let gwB;
  const contexts = [];
  const pages = [];
  let ok = false;
  let termAt;
  try {
    gwB = await startNode(label, "b");
    const clusterAt = Date.now();
    await waitForCluster([gwA, gwB], ["a", "b"]);
    measure(t, `${label}: both gateways started -> each lists both in /endpoints`, `${Date.now() - clusterAt} ms`);

    // Each gateway has its own development certificate: WebTransport to b works only if the
    // SDK pins b's own hash (from the list), not the one of the page's gateway.
    const certOf = { a: gwA.endpoints.cert_sha256, b: gwB.endpoints.cert_sha256 };
    assert.notEqual(certOf.a, certOf.b, "both gateways have the same certificate");
    const wsOf = { a: `ws://localhost:${gwA.httpPort}/ws`, b: `ws://localhost:${gwB.httpPort}/ws` };
    const plainWebSocket = (json) =>
      transport === "websocket" ? { ...json, gateways: json.gateways.map((g) => ({ ...g, websocket: wsOf[g.node] ?? g.websocket })) } : json;
    const query = transport === "websocket" ? { room, transport } : { room };

    // Page 1 on gateway a (its first list has only a), page 2 on gateway b (only b, always).
    const c1 = await browser.newContext();
    contexts.push(c1);
    const c2 = await browser.newContext();
    contexts.push(c2);
    const endpoints1 = await routeEndpoints(c1, (json, i) => (i === 0 ? onlyNode(json, "a") : plainWebSocket(json)));
    const endpoints2 = await routeEndpoints(c2, (json) => onlyNode(plainWebSocket(json), "b"));
    const p1 = await openDemo(c1, gwA, { name: `${label}-page1`, query });
    pages.push(p1);
    const r1 = await p1.ready();
    const p2 = await openDemo(c2, gwB, { name: `${label}-page2`, query });
    pages.push(p2);
    const r2 = await p2.ready();
    p1.peerId = r1.peerId;
    p2.peerId = r2.peerId;
    assert.notEqual(p1.peerId, p2.peerId);
    const expectTransport = transport === "websocket" ? "websocket" : "webtransport";
    assert.equal(r1.transport, expectTransport, `${p1.name}: transport`);
    assert.equal(r2.transport, expectTransport, `${p2.name}: transport`);
    assert.equal((await p1.dataset()).gateway, "a", `${p1.name} is not on gateway a`);
    assert.equal((await p2.dataset()).gateway, "b", `${p2.name} is not on gateway b`);
    for (const p of [p1, p2]) {
      const connected = (await p.events("connected"))[0];
      measure(t, `${p.name}: page open -> Welcome from gateway ${(await p.dataset()).gateway} over ${connected.transport}`, `${connected.t - p.openedAt} ms`);
    }
    // Page 1 knows both gateways by now (the SDK's own GET /endpoints at connect()).
    await p1.waitFor(
      "page 1's SDK knows gateways a and b",
      () => window.signalgateDemo.client.gateways.map((g) => g.node).sort().join(",") === "a,b",
      undefined,
      10_000,
    );

    // They see each other ONLINE across the two gateways.
    await p1.waitFor("page 2 ONLINE", (id) => JSON.parse(document.body.dataset.peers || "{}")[id] === "online", p2.peerId, 10_000);
    await p2.waitFor("page 1 ONLINE", (id) => JSON.parse(document.body.dataset.peers || "{}")[id] === "online", p1.peerId, 10_000);

    // The WebRTC call, set up through both gateways: offer from the smaller peer id, answer
    // back, candidates both ways, all with `from` set by the gateways.
    const [ta, tb] = await Promise.all([p1.callConnected(), p2.callConnected()]);
    measure(t, `${label}: second page open -> RTCPeerConnections connected across gateways a and b`, `${Math.max(ta, tb) - p2.openedAt} ms`);
    const [offerer, answerer] = p1.peerId < p2.peerId ? [p1, p2] : [p2, p1];
    const atAnswerer = await answerer.events("signal");
    const atOfferer = await offerer.events("signal");
    assert.ok(atAnswerer.some((e) => e.description === "offer" && e.from === offerer.peerId), `${answerer.name} got no offer`);
    assert.ok(atOfferer.some((e) => e.description === "answer" && e.from === answerer.peerId), `${offerer.name} got no answer`);
    assert.ok(atAnswerer.some((e) => e.candidate && e.from === offerer.peerId), `${answerer.name} got no ICE candidate`);
    assert.ok(atOfferer.some((e) => e.candidate && e.from === answerer.peerId), `${offerer.name} got no ICE candidate`);
    await exchangeChat(p1, p2, `${label} before the drain`);

    // Data signals both ways through the gateways, around the drain.
    await Promise.all([startSending(p2, room, p1.peerId, "to1"), startSending(p1, room, p2.peerId, "to2")]);
    await sleep(SIGTERM_AFTER_MS);

    termAt = Date.now();
    // SIGTERM now; SIGKILL if it has not exited within 5 s.
    const exitedA = gwA.stop().then((exited) => ({ ...exited, at: Date.now() }));
    const resumed = await p1.waitFor(
      "resumed on gateway b",
      () => {
        const e = window.__e2e.events.find((e) => e.type === "resumed");
        return e && document.body.dataset.gateway === "b" ? e : false;
      },
      undefined,
      20_000,
    );
    const { at: exitedAt, ...exited } = await exitedA;
    assert.deepEqual(exited, { code: 0, signal: null }, `gateway a did not exit 0 after its drain: ${JSON.stringify(exited)}`);

    const goAway = (await p1.events("goAway"))[0];
    assert.ok(goAway, `${p1.name}: no GoAway`);
    assert.equal(goAway.reason, "server_shutdown");
    assert.equal(goAway.reconnectAfterMs, 0);
    const disconnected = await p1.events("disconnected");
    assert.equal(disconnected.length, 1, `${p1.name}: disconnected ${JSON.stringify(disconnected)}`);
    assert.equal(disconnected[0].reason, "go_away");
    measure(t, `${label}: SIGTERM gateway a -> page 1 GoAway (${goAway.reason}, reconnect after ${goAway.reconnectAfterMs} ms + spread ${goAway.spreadMs} ms)`, `${goAway.t - termAt} ms`);
    // The SDK reconnects at a moment drawn in [reconnect_after, + spread] after the GoAway
    // (`reconnecting.delayMs`): most of the time below is that wait, on purpose.
    const reconnecting = (await p1.events("reconnecting")).find((e) => e.t >= goAway.t);
    assert.ok(reconnecting, `${p1.name}: no reconnecting event after the GoAway`);
    assert.ok(reconnecting.delayMs <= goAway.reconnectAfterMs + goAway.spreadMs, `${p1.name}: waited ${reconnecting.delayMs} ms`);
    measure(t, `${label}: SIGTERM gateway a -> page 1 resumed on gateway b`, `${resumed.t - termAt} ms over ${resumed.transport}, ${resumed.replayed} frames replayed, ${resumed.resent} resent`);
    measure(
      t,
      `${label}:   of which the SDK's GoAway spread wait / its connection to gateway b until Welcome`,
      `${Math.round(reconnecting.delayMs)} ms / ${Math.round(resumed.t - (reconnecting.t + reconnecting.delayMs))} ms`,
    );
    measure(t, `${label}: SIGTERM gateway a -> gateway a exited (code ${exited.code})`, `${exitedAt - termAt} ms`);

    // Same session (same peer id, not a new one), now on gateway b, over the same transport.
    assert.equal(resumed.peerId, p1.peerId);
    assert.equal(resumed.transport, expectTransport);
    assert.equal((await p1.dataset()).peerId, p1.peerId);
    const now = await p1.page.evaluate(() => {
      const g = window.signalgateDemo.client.gateway;
      const hex = (v) => Array.from(new Uint8Array(v.buffer ?? v), (b) => b.toString(16).padStart(2, "0")).join("");
      return { node: g?.node, hashes: (g?.serverCertificateHashes ?? []).map((h) => hex(h.value)) };
    });
    assert.equal(now.node, "b");
    if (expectTransport === "webtransport") assert.deepEqual(now.hashes, [certOf.b], `${p1.name}: gateway b's entry does not pin b's certificate`);
    assert.deepEqual(await p1.events("sessionLost"), []);
    assert.equal((await p1.events("connected")).length, 1);
    assert.equal((await p1.events("resumed")).length, 1);
    const failedAttempts = await p1.events("transportFailed");
    assert.deepEqual(failedAttempts, [], `${p1.name}: connection attempts failed on the way to gateway b`);

    // Every signal, both ways, once, in order.
    await assertAllSignals(p1, p2, "to1");
    await assertAllSignals(p2, p1, "to2");
    measure(t, `${label}: data signals around the drain`, `${SIGNALS} page 2 -> page 1 and ${SIGNALS} page 1 -> page 2, all received in order, none twice`);

    // Page 2 stayed on gateway b, connected, and never saw page 1 leave (nor come again).
    assert.deepEqual(await p2.events("disconnected"), [], `${p2.name} was disconnected`);
    assert.deepEqual((await p2.events("peerLeft")).filter((e) => e.peerId === p1.peerId), [], `${p2.name} saw page 1 LEFT`);
    const rejoins = (await p2.events("peerJoined")).filter((e) => e.peer?.peerId === p1.peerId && e.t >= termAt);
    assert.deepEqual(rejoins, [], `${p2.name} saw page 1 join again`);
    const states = (await p2.events("peerState")).filter((e) => e.peerId === p1.peerId && e.t >= termAt);
    measure(
      t,
      `${label}: page 2's view of page 1 during the drain`,
      states.length ? states.map((e) => `${e.state} (${e.reason}) at +${e.t - termAt} ms`).join(", ") : "no change (ONLINE throughout)",
    );
    assert.equal((await p2.peerStates())[p1.peerId], "online");
    assert.equal((await p2.dataset()).gateway, "b");

    // The call (browser to browser) went on undisturbed, and works.
    for (const p of [p1, p2]) {
      const changes = (await p.events()).filter((e) => (e.type === "dataset.pcState" || e.type === "dataset.dataChannel") && e.t >= termAt);
      assert.deepEqual(changes, [], `${p.name}: the WebRTC call changed state during the drain`);
    }
    await exchangeChat(p1, p2, `${label} after the drain`);

    // Gateway b alone now; page 1 asked for the list when it left gateway a.
    assert.deepEqual((await endpointsOf(gwB)).gateways.map((g) => g.node), ["b"]);
    measure(t, `${label}: page 1's GET /endpoints`, `${endpoints1.answered} answered, ${endpoints1.failed} failed (gateway a gone); page 2's: ${endpoints2.answered} answered`);

    // Nothing went wrong on either page (page 1's failed GET /endpoints on the drained
    // gateway is not an error: it had a list).
    await assertCleanExcept(p1, []);
    await assertCleanExcept(p2, []);
    ok = true;
  } finally {
    for (const p of pages) await saveEvents(p, termAt);
    if (!ok) for (const p of pages) await p.saveDiagnostics();
    for (const c of contexts) await c.close().catch(() => undefined);
    await gwA.stop();
    await gwB?.stop();
  }
}

test("cluster over WebTransport: gateway a drains; its page moves to gateway b by itself, same peer id, every signal once, in order, call undisturbed", async (t) => {
  await clusterDrain(t, { label: "cluster-webtransport", transport: "auto" });
});

test("cluster over WebSocket: gateway a drains; its page moves to gateway b by itself, same peer id, every signal once, in order, call undisturbed", async (t) => {
  await clusterDrain(t, { label: "cluster-websocket", transport: "websocket" });
});

test("cluster, no GoAway spread (--reconnect-spread 0s): the page reconnects to gateway b at once, racing the hand-over; same outcome", async (t) => {
  await clusterDrain(t, { label: "cluster-nospread", transport: "auto", extraArgsA: ["--reconnect-spread", "0s"] });
});
