// A tab the browser freezes comes back: never LEFT, resumed under the same peer id with every
// signal sent to it meanwhile, in order, once.
//
// What current Chromium does when it freezes a hidden tab (CDP Page.setWebLifecycleState
// frozen, as for background tabs): it fires `freeze`, then closes the page's connections
// itself (WebSocket with 1001 "Page entered Back-Forward Cache", at once or only at the
// thaw; WebTransport without a FIN). So the SDK says Suspend in the `freeze` handler — the
// frame leaves before the browser tears the connection down — and the other peers see the
// page UNREACHABLE with reason `suspended` (not a network loss). On `resume` the SDK
// reconnects at once and resumes the session. The test asserts that contract, whatever the
// browser does to the connections in between.
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

for (const started of ["webtransport", "websocket"]) {
  test(`a page on ${started}, hidden then frozen for 4x the liveness timeout, is suspended (never LEFT) and resumes with every signal`, async (t) => {
    // The frozen page needs a browser without playwright's focus emulation (see launchBrowserOverCdp).
    const tag = `freeze-${started}`;
    const frozenBrowser = await launchBrowserOverCdp(`${tag}-frozen`);
    const cf = frozenBrowser.defaultContext();
    const co = await observerBrowser.newContext();
    try {
      const room = tag;
      const query = started === "websocket" ? { transport: "websocket" } : {};
      const { pa: frozen, pb: observer } = await connectPair(t, gw, {
        room,
        a: { name: `${tag}-frozen`, context: cf, query },
        b: { name: `${tag}-observer`, context: co },
      });
      assert.equal(frozen.transport, started);
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

      // 1. Hidden (a background tab), then frozen, as browsers do to background tabs.
      const hiddenAt = Date.now();
      await frozenBrowser.hidePage(frozen.page);
      await sleep(500);
      const cdp = await cf.newCDPSession(frozen.page);
      await cdp.send("Page.setWebLifecycleState", { state: "frozen" });
      const frozenAt = Date.now();
      const suspended = await observer.waitFor(
        "the frozen page shown as suspended",
        (id) => window.__e2e.events.find((e) => e.type === "peerState" && e.peerId === id),
        frozenId,
        5000,
      );
      measure(t, `freeze (${started}) frozen -> peers see UNREACHABLE (${suspended.reason})`, `${suspended.t - frozenAt} ms`);
      assert.equal(suspended.state, "unreachable");
      assert.equal(suspended.reason, "suspended", "a frozen page is suspended, not lost");

      // 2. Frozen for 4x the liveness timeout while the other page keeps signalling to it; each
      // signal's promise resolves once the gateway accepted it (held for the suspended page).
      const freezeMs = gw.liveness * 4;
      const sent = [];
      for (let i = 1; Date.now() - frozenAt < freezeMs; i++) {
        const text = `while-frozen-${i}`;
        await observer.page.evaluate(
          ({ room, to, text }) => window.signalgateDemo.client.sendData(room, to, new TextEncoder().encode(text)),
          { room, to: frozenId, text },
        );
        sent.push(text);
        await sleep(200);
      }
      await cdp.send("Page.setWebLifecycleState", { state: "active" });
      const thawedAt = Date.now();
      await frozenBrowser.showPage(frozen.page);
      measure(t, `freeze (${started}) duration`, `${thawedAt - frozenAt} ms (liveness ${gw.liveness} ms), ${sent.length} signals accepted for the frozen page`);

      // 3. Back: resumed at once, same peer id, every signal in order, once.
      const resumed = await frozen.waitFor("resumed after the thaw", () => window.__e2e.events.find((e) => e.type === "resumed"), undefined, 5000);
      measure(t, `freeze (${started}) thaw -> resumed`, `${resumed.t - thawedAt} ms over ${resumed.transport}, ${resumed.replayed} frames replayed`);
      assert.equal(resumed.peerId, frozenId);
      const lifecycle = (await frozen.events()).filter((e) => e.type.startsWith("document.")).map((e) => `${e.type}:${e.visibilityState}`);
      assert.deepEqual(lifecycle, ["document.visibilitychange:hidden", "document.freeze:hidden", "document.resume:hidden", "document.visibilitychange:visible"]);
      const maxGap = await frozen.waitFor("heartbeat after unfreezing", () => window.__maxGap >= 1000 && window.__maxGap, undefined, 5000);
      measure(t, `freeze (${started}) longest heartbeat gap in the frozen page`, `${maxGap} ms`);
      assert.ok(maxGap >= freezeMs * 0.9, `the page's timers paused only ${maxGap} ms`);
      await frozen.waitFor(
        "signals sent while frozen",
        (n) => window.__e2e.events.filter((e) => e.type === "signal" && e.data?.startsWith("while-frozen-")).length >= n,
        sent.length,
        5000,
      );
      await sleep(300); // a duplicate would arrive right behind
      const got = (await frozen.events("signal")).filter((e) => e.data?.startsWith("while-frozen-"));
      assert.deepEqual(got.map((e) => e.data), sent);
      assert.ok(got.every((e) => e.from === observer.peerId));
      assert.deepEqual(await frozen.events("sessionLost"), []);

      // What the other page saw from the moment the page was hidden: suspended, then back.
      // Never LEFT.
      const seen = [...(await observer.events("peerState")), ...(await observer.events("peerLeft"))]
        .filter((e) => e.peerId === frozenId && e.t >= hiddenAt)
        .sort((a, b) => a.t - b.t)
        .map((e) => `${e.type} ${e.state ?? ""} (${e.reason})`);
      measure(t, `freeze (${started}) presence changes seen by the other page`, seen.join(", "));
      assert.deepEqual(seen, ["peerState unreachable (suspended)", "peerState online (resumed)"]);
      assert.equal((await observer.peerStates())[frozenId], "online");

      // 4. It still works: a signal from the thawed page, and the call. The demo does no ICE
      // restart: the call must have survived the freeze as it was.
      await frozen.page.evaluate(
        ({ room, to }) => window.signalgateDemo.client.sendData(room, to, new TextEncoder().encode("thawed")),
        { room, to: observer.peerId },
      );
      await observer.waitFor("signal from the thawed page", (from) => window.__e2e.events.some((e) => e.type === "signal" && e.data === "thawed" && e.from === from), frozenId, 5000);
      const pcChanges = (await frozen.events("dataset.pcState")).filter((e) => e.t >= hiddenAt).map((e) => e.value);
      measure(t, `freeze (${started}) RTCPeerConnection states of the frozen page meanwhile`, pcChanges.join(" -> ") || "stayed connected");
      await frozen.callConnected(10_000);
      await exchangeChat(frozen, observer, `after-freeze-${started}`);
      const ds = await frozen.dataset();
      assert.equal(ds.clientState, "connected");
      assert.equal(ds.peerId, frozenId);
      await assertClean(frozen, observer);
    } finally {
      await co.close();
      await frozenBrowser.close();
    }
  });
}
