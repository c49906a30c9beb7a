// Case 5: a page whose path to the gateway vanishes (bytes/packets silently dropped, longer
// than the liveness timeout) reconnects by itself and resumes: same peer id, and every data
// signal the other page sent meanwhile arrives exactly once, in order, including those the
// gateway had already written into the dead connection.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser } from "./lib/browser.mjs";
import { startGateway } from "./lib/gateway.mjs";
import { startTcpProxy, startUdpRelay } from "./lib/netcut.mjs";
import { assertClean, connectPair } from "./lib/scenario.mjs";
import { measure, sleep } from "./lib/util.mjs";

let gw;
let browser;
before(async () => {
  gw = await startGateway({ name: "resume", liveness: "2s", ping: "600ms", resumeWindow: "30s" });
  browser = await launchBrowser("resume");
});
after(async () => {
  await browser?.close();
  await gw?.stop();
});

const SIGNALS = 80;
const EVERY_MS = 100;

/**
 * The sender page sends `data` signals m-1..m-N to `to`, one every EVERY_MS, from inside the
 * page (its own timers), so that sending goes on while the test drives the outage.
 */
async function startSending(sender, room, to) {
  await sender.page.evaluate(
    ({ room, to, n, every }) => {
      window.__sent = [];
      let i = 0;
      const timer = setInterval(() => {
        i++;
        if (i > n) {
          clearInterval(timer);
          return;
        }
        const text = `m-${i}`;
        window.__sent.push(text);
        window.signalgateDemo.client.sendData(room, to, new TextEncoder().encode(text)).catch((e) => window.__sent.push(`failed ${text}: ${e}`));
      }, every);
    },
    { room, to, n: SIGNALS, every: EVERY_MS },
  );
}

/**
 * @param cut      () => void: make the receiver's path vanish
 * @param restore  () => void
 * @param outageMs how long
 */
async function outageAndResume(t, { label, room, receiverSpec, senderSpec, cut, restore, outageMs, expectTransportAfter }) {
  const receiverContext = await browser.newContext();
  const senderContext = await browser.newContext();
  try {
    const { pa: receiver, pb: sender } = await connectPair(t, gw, {
      room,
      a: { name: `${label}-receiver`, context: receiverContext, ...receiverSpec },
      b: { name: `${label}-sender`, context: senderContext, ...senderSpec },
    });
    const peerIdBefore = receiver.peerId;
    const transportBefore = receiver.transport;

    await startSending(sender, room, peerIdBefore);
    await sleep(800);
    const cutAt = Date.now();
    cut();
    await sleep(outageMs);
    restore();
    const restoredAt = Date.now();

    const resumed = await receiver.waitFor("resumed", () => window.__e2e.events.find((e) => e.type === "resumed"), undefined, 20_000);
    const disconnected = (await receiver.events("disconnected"))[0];
    assert.ok(disconnected, "the receiver never noticed the outage");
    measure(t, `${label}: path cut -> receiver's SDK disconnects`, `${disconnected.t - cutAt} ms (reason ${disconnected.reason})`);
    measure(t, `${label}: path cut -> resumed`, `${resumed.t - cutAt} ms over ${resumed.transport}, ${resumed.replayed} frames replayed (outage ${outageMs ? `${outageMs} ms` : "permanent for UDP"})`);
    if (outageMs > 0) measure(t, `${label}: path restored -> resumed`, `${resumed.t - restoredAt} ms`);
    const unreachable = (await sender.events("peerState")).find((e) => e.peerId === peerIdBefore && e.state === "unreachable");
    if (unreachable) measure(t, `${label}: path cut -> sender sees receiver UNREACHABLE`, `${unreachable.t - cutAt} ms (reason ${unreachable.reason})`);

    // Same peer id, resumed (not a fresh session), on the expected transport.
    assert.equal(resumed.peerId, peerIdBefore);
    assert.equal((await receiver.dataset()).peerId, peerIdBefore);
    assert.equal(resumed.transport, expectTransportAfter ?? transportBefore);
    assert.deepEqual(await receiver.events("sessionLost"), []);
    assert.equal((await receiver.events("connected")).length, 1);
    assert.ok(resumed.replayed > 0, "nothing was replayed: the outage missed no signal?");

    // Every signal, exactly once, in order.
    const expected = Array.from({ length: SIGNALS }, (_, i) => `m-${i + 1}`);
    await receiver.waitFor(
      `all ${SIGNALS} data signals`,
      (n) => window.__e2e.events.filter((e) => e.type === "signal" && e.data?.startsWith("m-")).length >= n,
      SIGNALS,
      SIGNALS * EVERY_MS + 15_000,
    );
    await sleep(300); // any duplicate would arrive now
    assert.deepEqual(await sender.page.evaluate(() => window.__sent), expected, "the sender could not send everything");
    const got = (await receiver.events("signal")).filter((e) => e.data?.startsWith("m-"));
    assert.deepEqual(got.map((e) => e.data), expected);
    assert.ok(got.every((e) => e.from === sender.peerId));
    measure(t, `${label}: signals`, `${SIGNALS} sent, ${SIGNALS} received in order; ${resumed.replayed} frames replayed at resume`);

    // The sender saw the receiver come back ONLINE with the same id, and never leave.
    await sender.waitFor("receiver ONLINE again", (id) => JSON.parse(document.body.dataset.peers)[id] === "online", peerIdBefore, 5000);
    assert.deepEqual((await sender.events("peerLeft")).filter((e) => e.peerId === peerIdBefore), []);
    await assertClean(receiver, sender);
    return { receiver, sender };
  } finally {
    await receiverContext.close();
    await senderContext.close();
  }
}

test("WebSocket: the TCP path vanishes for 3.5 s; the page reconnects, resumes with the same peer id and gets every missed signal in order", async (t) => {
  const proxy = await startTcpProxy(gw.httpPort);
  try {
    await outageAndResume(t, {
      label: "resume-websocket",
      room: "resume-ws",
      receiverSpec: {
        query: { transport: "websocket" },
        rewriteEndpoints: (e) => ({ ...e, websocket: `ws://localhost:${proxy.port}/ws` }),
      },
      cut: () => proxy.cut(),
      restore: () => proxy.restore(),
      outageMs: 3500,
    });
    assert.ok(proxy.accepted >= 2, "the page did not reconnect through the proxy");
  } finally {
    await proxy.close();
  }
});

test("WebTransport: the UDP path vanishes for 3.5 s; the page reconnects, resumes with the same peer id and gets every missed signal in order", async (t) => {
  const relay = await startUdpRelay(gw.port);
  try {
    await outageAndResume(t, {
      label: "resume-webtransport",
      room: "resume-wt",
      receiverSpec: {
        query: { transport: "webtransport" },
        rewriteEndpoints: (e) => ({ ...e, webtransport: `https://127.0.0.1:${relay.port}/wt` }),
      },
      cut: () => relay.cut(),
      restore: () => relay.restore(),
      outageMs: 3500,
    });
    assert.ok(relay.flows >= 2, "the page did not reconnect through the relay");
  } finally {
    await relay.close();
  }
});

test("auto: UDP stops working mid-session; the page resumes the same session over WebSocket", async (t) => {
  const relay = await startUdpRelay(gw.port);
  try {
    await outageAndResume(t, {
      label: "resume-switch",
      room: "resume-switch",
      receiverSpec: {
        rewriteEndpoints: (e) => ({ ...e, webtransport: `https://127.0.0.1:${relay.port}/wt` }),
      },
      cut: () => relay.cut(),
      restore: () => undefined, // UDP stays blocked: only WebSocket is left
      outageMs: 0,
      expectTransportAfter: "websocket",
    });
  } finally {
    await relay.close();
  }
});

// One-way failures: only the gateway -> page direction vanishes. The page's SDK stops hearing
// the gateway and gives its connection up, but what it sends still arrives: it must not tell
// the gateway it is leaving (which ends the session: peers see LEFT, and the resume is refused).
test("WebSocket: only the gateway -> page direction vanishes; the page resumes the same session", async (t) => {
  const proxy = await startTcpProxy(gw.httpPort);
  try {
    await outageAndResume(t, {
      label: "resume-websocket-oneway",
      room: "resume-ws-oneway",
      receiverSpec: {
        query: { transport: "websocket" },
        rewriteEndpoints: (e) => ({ ...e, websocket: `ws://localhost:${proxy.port}/ws` }),
      },
      cut: () => proxy.cutDownstream(),
      restore: () => proxy.restore(),
      outageMs: 3500,
    });
  } finally {
    await proxy.close();
  }
});

test("WebTransport: only the gateway -> page direction vanishes; the page resumes the same session", async (t) => {
  const relay = await startUdpRelay(gw.port);
  try {
    await outageAndResume(t, {
      label: "resume-webtransport-oneway",
      room: "resume-wt-oneway",
      receiverSpec: {
        query: { transport: "webtransport" },
        rewriteEndpoints: (e) => ({ ...e, webtransport: `https://127.0.0.1:${relay.port}/wt` }),
      },
      cut: () => relay.cutDownstream(),
      restore: () => relay.restore(),
      outageMs: 3500,
    });
  } finally {
    await relay.close();
  }
});
