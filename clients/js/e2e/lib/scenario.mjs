// Steps shared by the test files.
import assert from "node:assert/strict";
import { openDemo } from "./browser.mjs";
import { measure } from "./util.mjs";

/**
 * Opens two demo pages (in the given contexts) in one room, waits until both are connected
 * to the gateway and their RTCPeerConnections are `connected` with the data channel open, and
 * checks that offer, answer and candidates went through the gateway. Returns both pages.
 */
export async function connectPair(t, gw, { room, a, b }) {
  const pa = await openDemo(a.context, gw, { name: a.name, query: { room, ...a.query }, noWebTransport: a.noWebTransport, rewriteEndpoints: a.rewriteEndpoints });
  const ra = await pa.ready();
  const pb = await openDemo(b.context, gw, { name: b.name, query: { room, ...b.query }, noWebTransport: b.noWebTransport, rewriteEndpoints: b.rewriteEndpoints });
  const rb = await pb.ready();
  pa.peerId = ra.peerId;
  pb.peerId = rb.peerId;
  pa.transport = ra.transport;
  pb.transport = rb.transport;
  assert.notEqual(ra.peerId, rb.peerId);
  for (const [p, r] of [[pa, ra], [pb, rb]]) {
    const connected = (await p.events("connected"))[0];
    assert.ok(connected, `${p.name}: no connected event`);
    measure(t, `${p.name}: page open -> gateway Welcome over ${r.transport}`, `${connected.t - p.openedAt} ms`);
  }
  const [ta, tb] = await Promise.all([pa.callConnected(), pb.callConnected()]);
  measure(t, `${room}: second page open -> both RTCPeerConnections connected`, `${Math.max(ta, tb) - pb.openedAt} ms`);

  // The offer went from the smaller peer id to the larger one, the answer back, and both
  // sides received ICE candidates: all through the gateway, with `from` set by it.
  const [offerer, answerer] = ra.peerId < rb.peerId ? [pa, pb] : [pb, pa];
  // A call can connect before the last trickled candidate is in: the answerer learns the
  // offerer's address from its connectivity checks (a peer-reflexive candidate). So the
  // candidates are waited for, briefly, rather than expected at the moment of connection.
  const got = async (page, what, pick) => {
    const until = Date.now() + 5000;
    while (Date.now() < until) {
      if ((await page.events("signal")).some(pick)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.fail(`${page.name} got no ${what}`);
  };
  await got(answerer, `offer from ${offerer.peerId}`, (e) => e.description === "offer" && e.from === offerer.peerId);
  await got(offerer, `answer from ${answerer.peerId}`, (e) => e.description === "answer" && e.from === answerer.peerId);
  await got(answerer, "ICE candidate", (e) => e.candidate && e.from === offerer.peerId);
  await got(offerer, "ICE candidate", (e) => e.candidate && e.from === answerer.peerId);
  return { pa, pb };
}

/** A message each way over the WebRTC data channel. */
export async function exchangeChat(pa, pb, tag) {
  const ab = `${tag}: hello from ${pa.name}`;
  const ba = `${tag}: hello from ${pb.name}`;
  assert.equal(await pa.send(ab), true, `${pa.name}: data channel not open`);
  await pb.waitReceived(ab);
  assert.equal(await pb.send(ba), true, `${pb.name}: data channel not open`);
  await pa.waitReceived(ba);
}

/** See DemoPage.assertClean. */
export async function assertClean(...pages) {
  for (const p of pages) await p.assertClean();
}
