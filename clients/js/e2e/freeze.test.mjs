// Case 4: a page frozen (CDP Page.setWebLifecycleState frozen: no JavaScript runs, as in a
// background tab that the browser froze) for longer than the liveness timeout is NOT
// declared unreachable, over either transport. As in real browsers, the page is hidden first
// (another tab becomes active), then frozen.
//
// - On WebSocket the gateway's probes (control Pings) are answered by the browser's network
//   stack, not by the page: nobody notices the freeze.
// - Chromium closes a frozen page's WebTransport sessions (Blink
//   WebTransport::ContextLifecycleStateChanged: "Page entered back/forward cache."), which
//   the gateway must count as lost. So the SDK parks the session on WebSocket as soon as the
//   page is hidden (a resume that takes the live session over: the other peers see nothing),
//   and moves it back to WebTransport when the page is visible again.
//
// Once unfrozen and visible, the page has every signal sent to it meanwhile, in order and
// once, under the same peer id, and the WebRTC call still works.
//
// Control: the same on WebTransport with parking off (`?park=0`) shows why parking exists:
// the gateway reports the page UNREACHABLE (connection_lost) as soon as it freezes; the page
// resumes its session when it thaws.
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

// `started`: the transport the page is on before it is hidden. WebTransport: the demo in
// `auto` mode (the SDK parks it while hidden, unless `park` is false); WebSocket:
// `?transport=websocket`.
const cases = [
  { started: "webtransport", park: true },
  { started: "websocket", park: false },
  { started: "webtransport", park: false, control: true },
];
for (const { started, park, control = false } of cases) {
  const title = control
    ? "control: a page on webtransport with parking off, hidden then frozen, is declared UNREACHABLE at once and resumes when it thaws"
    : `a page on ${started}, hidden then frozen for 2.5x the liveness timeout, is not declared unreachable and works after unfreezing`;
  test(title, async (t) => {
    // The frozen page needs a browser without playwright's focus emulation (see launchBrowserOverCdp).
    const label = control ? `${started}, parking off` : started;
    const tag = `freeze-${started}${control ? "-control" : ""}`;
    const frozenBrowser = await launchBrowserOverCdp(`${tag}-frozen`);
    const cf = frozenBrowser.defaultContext();
    const co = await observerBrowser.newContext();
    try {
      const room = tag;
      const query = started === "websocket" ? { transport: "websocket" } : park ? {} : { park: "0" };
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

      // Whenever it is hidden or shown, the page signals the other one as fast as the network
      // lets it (each send waits for the SDK to write it, then a fetch: no timers, which a
      // hidden page runs late), across the move, until told to stop (at most 60 signals, well
      // within the gateway's rate limit).
      await frozen.page.evaluate(
        ({ room, to }) => {
          window.__bursts = {};
          document.addEventListener("visibilitychange", async () => {
            const phase = document.visibilityState;
            if (window.__bursts[phase]) return;
            const burst = (window.__bursts[phase] = { sent: [], stop: false, done: false });
            const client = window.signalgateDemo.client;
            for (let i = 1; i <= 60 && !burst.stop; i++) {
              const text = `around-${phase}-${i}`;
              await client.sendData(room, to, new TextEncoder().encode(text));
              burst.sent.push({ text, t: Date.now() });
              await fetch("/healthz", { cache: "no-store" });
            }
            burst.done = true;
          });
        },
        { room, to: observer.peerId },
      );
      const endBurst = async (phase) => {
        await sleep(100);
        await frozen.page.evaluate((phase) => (window.__bursts[phase].stop = true), phase);
        const sent = await frozen.waitFor(`the ${phase} burst of signals to end`, (phase) => window.__bursts[phase].done && window.__bursts[phase].sent, phase, 5000);
        const moved = (await frozen.events("transportChanged")).find((e) => e.reason === phase);
        if (moved) {
          const before = sent.filter((s) => s.t < moved.t).length;
          measure(t, `freeze (${label}) signals from the page around the move (${phase})`, `${sent.length}: ${before} written before the move completed, ${sent.length - before} after`);
          assert.ok(before > 0 && sent.length - before > 0, `the ${phase} burst did not span the move`);
        }
        return sent;
      };

      // 1. Hidden, as a background tab.
      const hiddenAt = Date.now();
      await frozenBrowser.hidePage(frozen.page);
      if (park) {
        const parked = await frozen.waitFor(
          "parked on WebSocket",
          () => window.__e2e.events.find((e) => e.type === "transportChanged" && e.to === "websocket"),
          undefined,
          5000,
        );
        assert.equal(parked.from, "webtransport");
        assert.equal(parked.reason, "hidden");
        measure(t, `freeze (${label}) hidden -> parked on WebSocket`, `${parked.t - hiddenAt} ms (move ${parked.tookMs} ms)`);
        const ds = await frozen.dataset();
        assert.equal(ds.transport, "websocket");
        assert.equal(ds.parked, "true");
      }
      const burst = await endBurst("hidden");

      // 2. Frozen for 2.5x the liveness timeout, while the other page keeps signalling to it.
      const cdp = await cf.newCDPSession(frozen.page);
      const freezeMs = Math.round(gw.liveness * 2.5);
      await cdp.send("Page.setWebLifecycleState", { state: "frozen" });
      const frozenAt = Date.now();
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
      measure(t, `freeze (${label}) duration`, `${thawedAt - frozenAt} ms (liveness ${gw.liveness} ms), ${sent.length} signals sent to the frozen page`);
      // What the other page saw of the frozen one from the moment it was hidden: nothing.
      const seen = async () =>
        [...(await observer.events("peerState")), ...(await observer.events("peerLeft"))]
          .filter((e) => e.peerId === frozenId && e.t >= hiddenAt)
          .map((e) => `${e.type} ${e.state ?? ""} (${e.reason}) at +${e.t - frozenAt} ms`);
      if (!control) assert.deepEqual(await seen(), [], "the other page saw the frozen page change during the freeze");

      // 3. Visible again (unfrozen first, as a browser thaws a tab it is about to show).
      const visibleAt = Date.now();
      await frozenBrowser.showPage(frozen.page);
      if (park) {
        const back = await frozen.waitFor(
          "back on WebTransport",
          () => window.__e2e.events.find((e) => e.type === "transportChanged" && e.to === "webtransport"),
          undefined,
          5000,
        );
        assert.equal(back.reason, "visible");
        measure(t, `freeze (${label}) visible -> back on WebTransport`, `${back.t - visibleAt} ms (move ${back.tookMs} ms)`);
      }
      burst.push(...(await endBurst("visible")));

      // It really was hidden, then frozen...
      const lifecycle = (await frozen.events()).filter((e) => e.type.startsWith("document.")).map((e) => `${e.type}:${e.visibilityState}`);
      assert.deepEqual(lifecycle, ["document.visibilitychange:hidden", "document.freeze:hidden", "document.resume:hidden", "document.visibilitychange:visible"]);
      const maxGap = await frozen.waitFor("heartbeat after unfreezing", () => window.__maxGap >= 1000 && window.__maxGap, undefined, 5000);
      measure(t, `freeze (${label}) longest heartbeat gap in the frozen page`, `${maxGap} ms`);
      assert.ok(maxGap >= gw.liveness, `the page's timers paused only ${maxGap} ms`);

      // ...and got the signals sent to it meanwhile: all, in order, once.
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

      // The peer never left, kept its peer id and its session, and is on the transport it
      // started on; and (parked, or on WebSocket) it was never unreachable either.
      await sleep(300);
      const presence = await seen();
      measure(t, `freeze (${label}) presence changes seen by the other page`, presence.join(", ") || "none");
      assert.equal((await observer.peerStates())[frozenId], "online");
      assert.deepEqual(await frozen.events("sessionLost"), []);
      const ds = await frozen.dataset();
      assert.equal(ds.clientState, "connected");
      assert.equal(ds.peerId, frozenId);
      assert.equal(ds.transport, started);
      assert.equal(ds.parked, "false");
      const moves = (await frozen.events("transportChanged")).map((e) => `${e.from}->${e.to} (${e.reason})`);
      assert.deepEqual(moves, park ? ["webtransport->websocket (hidden)", "websocket->webtransport (visible)"] : []);
      if (!control) {
        assert.deepEqual(presence, []);
        assert.deepEqual(await frozen.events("disconnected"), []);
        assert.deepEqual(await frozen.events("resumed"), []);
      } else {
        // Chromium closed the frozen page's WebTransport session: the gateway had to report
        // it lost at once. On thaw the page resumed the same session.
        assert.match(presence[0] ?? "", /^peerState unreachable \(connection_lost\) at \+\d+ ms$/);
        assert.match(presence[1] ?? "", /^peerState online \(resumed\)/);
        assert.equal(presence.length, 2);
        const resumed = (await frozen.events("resumed"))[0];
        assert.ok(resumed, "the thawed page did not resume its session");
        assert.equal(resumed.peerId, frozenId);
        measure(t, `freeze (${label}) unfreeze -> resumed`, `${resumed.t - thawedAt} ms over ${resumed.transport}, ${resumed.replayed} frames replayed`);
      }

      // The other page got the bursts sent around the moves: all, in order, once.
      await observer.waitFor(
        "the signals sent around the moves",
        ({ from, n }) => window.__e2e.events.filter((e) => e.type === "signal" && e.from === from && e.data?.startsWith("around-")).length >= n,
        { from: frozenId, n: burst.length },
        5000,
      );
      await sleep(300); // a duplicate would arrive right behind
      const gotBurst = (await observer.events("signal")).filter((e) => e.from === frozenId && e.data?.startsWith("around-"));
      assert.deepEqual(gotBurst.map((e) => e.data), burst.map((s) => s.text));
      measure(t, `freeze (${label}) signals from the page while hidden and on showing it`, `${burst.length} sent, ${gotBurst.length} received in order`);

      // It still works: signalling from the thawed page, and the call.
      await frozen.page.evaluate(
        ({ room, to }) => window.signalgateDemo.client.sendData(room, to, new TextEncoder().encode("thawed")),
        { room, to: observer.peerId },
      );
      await observer.waitFor("signal from the thawed page", (from) => window.__e2e.events.some((e) => e.type === "signal" && e.data === "thawed" && e.from === from), frozenId, 5000);
      await frozen.callConnected(10_000);
      await exchangeChat(frozen, observer, `after-freeze-${started}`);
      await assertClean(frozen, observer);
    } finally {
      await co.close();
      await frozenBrowser.close();
    }
  });
}
