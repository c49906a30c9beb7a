// Back/forward cache: navigating away from a page and back. A page that the browser keeps in
// its back/forward cache is frozen there and its connections are closed; it may come back
// (pageshow with persisted) or be evicted. The SDK says Suspend on `pagehide` with
// `persisted`, so the other peers see it UNREACHABLE (suspended) — never LEFT — and it
// resumes its session at once when it is shown again. A page that is not cached says Bye
// instead (LEFT at once; coming back is a new page and a new session). Chromium keeps no page
// with an RTCPeerConnection in the cache, so these pages run the demo without WebRTC
// (?rtc=0; chat goes through the gateway as data signals).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser, launchBrowserOverCdp, openDemo } from "./lib/browser.mjs";
import { startGateway } from "./lib/gateway.mjs";
import { measure, sleep } from "./lib/util.mjs";

let gw;
let observerBrowser;
before(async () => {
  gw = await startGateway({ name: "bfcache", liveness: "2s", ping: "600ms", resumeWindow: "30s" });
  observerBrowser = await launchBrowser("bfcache-observer");
});
after(async () => {
  await observerBrowser?.close();
  await gw?.stop();
});

for (const transport of ["webtransport", "websocket"]) {
  test(`navigating away and back on ${transport}: the cached page is suspended, never LEFT, and resumes with every signal`, async (t) => {
    const browser = await launchBrowserOverCdp(`bfcache-${transport}`);
    const co = await observerBrowser.newContext();
    try {
      const room = `bfcache-${transport}`;
      const page = await openDemo(browser.defaultContext(), gw, { name: `bfcache-${transport}-page`, query: { room, rtc: "0", transport } });
      const { peerId } = await page.ready();
      const observer = await openDemo(co, gw, { name: `bfcache-${transport}-observer`, query: { room, rtc: "0" } });
      await observer.ready();
      await page.waitFor("the observer joined", () => Object.keys(JSON.parse(document.body.dataset.peers || "{}")).length === 1);

      const awayAt = Date.now();
      await page.page.goto(`http://localhost:${gw.httpPort}/healthz`, { waitUntil: "commit" });
      const gone = await observer.waitFor(
        "the page gone",
        (id) => window.__e2e.events.find((e) => (e.type === "peerState" || e.type === "peerLeft") && e.peerId === id),
        peerId,
        5000,
      );
      // While it is away, the observer sends it signals (accepted: held for it, or — if the
      // page was not cached and said Bye — refused with PEER_NOT_IN_ROOM).
      const sent = [];
      for (let i = 1; i <= 10; i++) {
        const text = `while-away-${i}`;
        const ok = await observer.page.evaluate(
          ({ room, to, text }) =>
            window.signalgateDemo.client.sendData(room, to, new TextEncoder().encode(text)).then(
              () => true,
              () => false,
            ),
          { room, to: peerId, text },
        );
        if (ok) sent.push(text);
        await sleep(100);
      }
      await sleep(1000);
      const backAt = Date.now();
      await page.page.goBack({ waitUntil: "commit" });
      const shown = await page.waitFor(
        "the page shown again",
        (since) => window.__e2e?.events.find((e) => e.type === "window.pageshow" && e.t >= since),
        backAt,
        10_000,
      );
      const restored = shown.persisted;
      measure(t, `bfcache (${transport}) restored from the back/forward cache`, String(restored));
      if (!restored) {
        // Not cached: the page was unloaded for real, so it said Bye.
        assert.equal(gone.type, "peerLeft", JSON.stringify(gone));
        assert.equal(gone.reason, "bye");
        return;
      }
      measure(t, `bfcache (${transport}) navigated away -> peers see ${gone.type} ${gone.state ?? ""} (${gone.reason})`, `${gone.t - awayAt} ms`);
      assert.equal(gone.type, "peerState", `a cached page is not LEFT: ${JSON.stringify(gone)}`);
      assert.equal(gone.state, "unreachable");
      assert.equal(gone.reason, "suspended");
      assert.equal(sent.length, 10, "signals to a suspended peer are accepted");
      const resumed = await page.waitFor("resumed", () => window.__e2e.events.find((e) => e.type === "resumed"), undefined, 10_000);
      measure(t, `bfcache (${transport}) back -> resumed`, `${resumed.t - backAt} ms over ${resumed.transport}, ${resumed.replayed} frames replayed`);
      assert.equal(resumed.peerId, peerId);
      await page.waitFor(
        "the signals sent while away",
        (n) => window.__e2e.events.filter((e) => e.type === "signal" && e.data?.startsWith("while-away-")).length >= n,
        sent.length,
        5000,
      );
      await sleep(300);
      const got = (await page.events("signal")).filter((e) => e.data?.startsWith("while-away-")).map((e) => e.data);
      assert.deepEqual(got, sent, "every signal, in order, once");
      const seen = [...(await observer.events("peerState")), ...(await observer.events("peerLeft"))]
        .filter((e) => e.peerId === peerId && e.t >= awayAt)
        .sort((a, b) => a.t - b.t)
        .map((e) => `${e.type} ${e.state ?? ""} (${e.reason})`);
      assert.deepEqual(seen, ["peerState unreachable (suspended)", "peerState online (resumed)"]);
      assert.equal((await page.dataset()).peerId, peerId);
    } finally {
      await co.close();
      await browser.close();
    }
  });
}
