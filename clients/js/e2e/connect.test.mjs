// Cases 1 and 2: a call signalled over WebTransport; the automatic WebSocket fallback of a
// page without WebTransport; the forced WebSocket transport (?transport=websocket).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser } from "./lib/browser.mjs";
import { startGateway } from "./lib/gateway.mjs";
import { startUdpRelay } from "./lib/netcut.mjs";
import { assertClean, connectPair, exchangeChat } from "./lib/scenario.mjs";
import { measure } from "./lib/util.mjs";

let gw;
let browser;
before(async () => {
  gw = await startGateway({ name: "connect" });
  browser = await launchBrowser("connect");
});
after(async () => {
  await browser?.close();
  await gw?.stop();
});

test("two pages over WebTransport: offer/answer/candidates through the gateway, call connected, data channel message", async (t) => {
  const [ca, cb] = [await browser.newContext(), await browser.newContext()];
  try {
    const { pa, pb } = await connectPair(t, gw, { room: "wt", a: { name: "wt-a", context: ca }, b: { name: "wt-b", context: cb } });
    assert.equal(pa.transport, "webtransport");
    assert.equal(pb.transport, "webtransport");
    await exchangeChat(pa, pb, "wt");
    await assertClean(pa, pb);
    // No page fell back or reconnected on the way.
    for (const p of [pa, pb]) {
      assert.deepEqual(await p.events("transportFailed"), [], `${p.name}: a transport failed`);
      assert.deepEqual(await p.events("disconnected"), [], `${p.name}: disconnected`);
    }
  } finally {
    await ca.close();
    await cb.close();
  }
});

test("a page without WebTransport falls back to WebSocket by itself; the call still connects", async (t) => {
  const [ca, cb] = [await browser.newContext(), await browser.newContext()];
  try {
    const { pa, pb } = await connectPair(t, gw, {
      room: "fallback",
      a: { name: "fallback-nowt", context: ca, noWebTransport: true },
      b: { name: "fallback-wt", context: cb },
    });
    // The page really had no WebTransport, asked for nothing but the default (auto)...
    assert.equal(await pa.page.evaluate(() => typeof window.WebTransport), "undefined");
    assert.equal(new URL(pa.page.url()).searchParams.get("transport"), null);
    // ...and reports the transport it fell back to.
    assert.equal(pa.transport, "websocket");
    assert.equal((await pa.dataset()).transport, "websocket");
    assert.equal(await pa.page.locator("#transport").textContent(), "websocket");
    assert.ok((await pa.events("connected"))[0].transport === "websocket");
    assert.equal(pb.transport, "webtransport");
    await exchangeChat(pa, pb, "fallback");
    await assertClean(pa, pb);
  } finally {
    await ca.close();
    await cb.close();
  }
});

test("?transport=websocket forces WebSocket although WebTransport is available", async (t) => {
  const [ca, cb] = [await browser.newContext(), await browser.newContext()];
  try {
    const { pa, pb } = await connectPair(t, gw, {
      room: "forced",
      a: { name: "forced-ws", context: ca, query: { transport: "websocket" } },
      b: { name: "forced-auto", context: cb },
    });
    assert.equal(await pa.page.evaluate(() => typeof window.WebTransport), "function");
    assert.equal(pa.transport, "websocket");
    assert.equal(await pa.page.locator("#transport").textContent(), "websocket");
    assert.equal(await pa.page.locator("#transport-select").inputValue(), "websocket");
    // Forced: WebTransport was never tried.
    assert.deepEqual(await pa.events("transportFailed"), []);
    assert.equal(pb.transport, "webtransport");
    await exchangeChat(pa, pb, "forced");
    await assertClean(pa, pb);
  } finally {
    await ca.close();
    await cb.close();
  }
});

test("WebTransport available but its UDP path blocked: the page falls back to WebSocket after the WebTransport timeout", async (t) => {
  const relay = await startUdpRelay(gw.port);
  relay.cut(); // every datagram dropped, as by a firewall that blocks UDP
  const [ca, cb] = [await browser.newContext(), await browser.newContext()];
  try {
    const { pa, pb } = await connectPair(t, gw, {
      room: "udp-blocked",
      a: {
        name: "udp-blocked",
        context: ca,
        rewriteEndpoints: (e) => ({ ...e, webtransport: `https://127.0.0.1:${relay.port}/wt` }),
      },
      b: { name: "udp-ok", context: cb },
    });
    assert.equal(await pa.page.evaluate(() => typeof window.WebTransport), "function");
    assert.equal(pa.transport, "websocket");
    const failed = await pa.events("transportFailed");
    assert.equal(failed.length, 1);
    assert.equal(failed[0].transport, "webtransport");
    const connected = (await pa.events("connected"))[0];
    measure(t, "UDP blocked: page open -> WebTransport given up", `${failed[0].t - pa.openedAt} ms (${failed[0].error})`);
    measure(t, "UDP blocked: page open -> Welcome over WebSocket", `${connected.t - pa.openedAt} ms`);
    assert.ok(relay.dropped > 0, "no datagram reached the blocked path");
    assert.equal(pb.transport, "webtransport");
    await exchangeChat(pa, pb, "udp-blocked");
    await assertClean(pa, pb);
  } finally {
    await ca.close();
    await cb.close();
    await relay.close();
  }
});
