// Case 4: a page frozen (CDP Page.setWebLifecycleState frozen: no JavaScript runs, as in a
// backgrounded mobile tab) for longer than the liveness timeout is NOT declared unreachable,
// because the gateway's probes are answered by the browser's network stack (WebSocket Pong,
// QUIC ACK), not by the page. Once unfrozen it still works: same session, the signals sent to
// it meanwhile arrive in order, the call still passes messages.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser, launchBrowserOverCdp } from "./lib/browser.mjs";
import { startGateway } from "./lib/gateway.mjs";
import { assertClean, connectPair, exchangeChat } from "./lib/scenario.mjs";
import { measure, sleep } from "./lib/util.mjs";

let gw;
let observerBrowser;
before(async () => {
  gw = await startGateway({ name: "freeze", liveness: "2s", ping: "600ms", resumeWindow: "30s" });
  observerBrowser = await launchBrowser("freeze-observer");
});
after(async () => {
  await observerBrowser?.close();
  await gw?.stop();
});

for (const transport of ["webtransport", "websocket"]) {
  test(`a page frozen on ${transport} for 2.5x the liveness timeout is not declared unreachable (WebSocket) / resumes (WebTransport), and works after unfreezing`, async (t) => {
    // The frozen page needs a browser without playwright's focus emulation (see launchBrowserOverCdp).
    const frozenBrowser = await launchBrowserOverCdp(`freeze-${transport}-frozen`);
    const cf = frozenBrowser.defaultContext();
    const co = await observerBrowser.newContext();
    try {
      const room = `freeze-${transport}`;
      const { pa: frozen, pb: observer } = await connectPair(t, gw, {
        room,
        a: { name: `freeze-${transport}-frozen`, context: cf, query: { transport } },
        b: { name: `freeze-${transport}-observer`, context: co },
      });
      assert.equal(frozen.transport, transport);
      const frozenId = frozen.peerId;
      // A heartbeat in the frozen page: its longest gap proves that the page really froze.
      await frozen.page.evaluate(() => {
        let last = Date.now();
        window.__maxGap = 0;
        setInterval(() => {
          const now = Date.now();
          window.__maxGap = Math.max(window.__maxGap, now - last);
          last = now;
        }, 100);
      });

      const cdp = await cf.newCDPSession(frozen.page);
      const freezeMs = Math.round(gw.liveness * 2.5);
      await cdp.send("Page.setWebLifecycleState", { state: "frozen" });
      const frozenAt = Date.now();
      // Signals to the frozen page, through the gateway, while it sleeps.
      const sent = [];
      for (let i = 1; i <= 5; i++) {
        const text = `while-frozen-${i}`;
        sent.push(text);
        await observer.page.evaluate(
          ({ room, to, text }) => window.signalgateDemo.client.sendData(room, to, new TextEncoder().encode(text)),
          { room, to: frozenId, text },
        );
        await sleep(200);
      }
      await sleep(Math.max(0, freezeMs - (Date.now() - frozenAt)));
      await cdp.send("Page.setWebLifecycleState", { state: "active" });
      const thawedAt = Date.now();
      measure(t, `freeze (${transport}) duration`, `${thawedAt - frozenAt} ms (liveness ${gw.liveness} ms)`);

      // It really was frozen...
      const maxGap = await frozen.waitFor("heartbeat after unfreezing", () => window.__maxGap >= 1000 && window.__maxGap, undefined, 5000);
      measure(t, `freeze (${transport}) longest heartbeat gap in the frozen page`, `${maxGap} ms`);
      assert.ok(maxGap >= gw.liveness, `the page's timers paused only ${maxGap} ms`);

      // ...and the frozen page got the signals sent to it meanwhile, in order, once thawed.
      await frozen.waitFor(
        "signals sent while frozen",
        (n) => window.__e2e.events.filter((e) => e.type === "signal" && e.data?.startsWith("while-frozen-")).length >= n,
        sent.length,
        5000,
      );
      const got = (await frozen.events("signal")).filter((e) => e.data?.startsWith("while-frozen-"));
      assert.deepEqual(got.map((e) => e.data), sent);
      assert.ok(got.every((e) => e.from === observer.peerId));

      // The peer never left, kept its peer id, and is connected on the same transport.
      await sleep(500);
      const states = (await observer.events("peerState")).filter((e) => e.peerId === frozenId);
      const presence = states.map((e) => `${e.state} (${e.reason}) at +${e.t - frozenAt} ms`).join(", ");
      measure(t, `freeze (${transport}) presence changes seen by the other page`, presence || "none");
      assert.deepEqual((await observer.events("peerLeft")).filter((e) => e.peerId === frozenId), []);
      assert.equal((await observer.peerStates())[frozenId], "online");
      assert.deepEqual(await frozen.events("sessionLost"), []);
      const ds = await frozen.dataset();
      assert.equal(ds.clientState, "connected");
      assert.equal(ds.peerId, frozenId);
      assert.equal(ds.transport, transport);

      if (transport === "websocket") {
        // Nobody declared anything: the gateway's WebSocket Pings were answered by the
        // browser's network service all along, and the page's client never lost its connection.
        assert.deepEqual(states, [], `the observer saw presence changes: ${presence}`);
        assert.deepEqual(await frozen.events("disconnected"), []);
        assert.deepEqual(await frozen.events("resumed"), []);
      } else {
        // Chromium closes every WebTransport session of a page when the page freezes (Blink
        // WebTransport::ContextLifecycleStateChanged(kFrozen): "Page entered back/forward
        // cache."), so the gateway sees the connection end at once and reports the peer
        // UNREACHABLE (connection_lost); no liveness setting can prevent that. What the SDK
        // and gateway do guarantee: on thaw the page resumes the same session (same peer id,
        // held signals delivered in order, checked above), the peer is ONLINE again, never LEFT.
        const resumed = (await frozen.events("resumed"))[0];
        assert.ok(resumed, "the thawed page did not resume its session");
        assert.equal(resumed.peerId, frozenId);
        measure(t, `freeze (${transport}) unfreeze -> resumed`, `${resumed.t - thawedAt} ms, ${resumed.replayed} frames replayed`);
        await t.test(
          "WebTransport: a frozen page is not declared unreachable",
          { todo: "impossible in Chromium: it closes a frozen page's WebTransport sessions (see the comment above)" },
          () => assert.deepEqual(states, [], `the observer saw: ${presence}`),
        );
      }

      // It still works: signalling from the thawed page, and the call.
      await frozen.page.evaluate(
        ({ room, to }) => window.signalgateDemo.client.sendData(room, to, new TextEncoder().encode("thawed")),
        { room, to: observer.peerId },
      );
      await observer.waitFor("signal from the thawed page", (from) => window.__e2e.events.some((e) => e.type === "signal" && e.data === "thawed" && e.from === from), frozenId, 5000);
      await frozen.callConnected(10_000);
      await exchangeChat(frozen, observer, `after-freeze-${transport}`);
      await assertClean(frozen, observer);
    } finally {
      await co.close();
      await frozenBrowser.close();
    }
  });
}
