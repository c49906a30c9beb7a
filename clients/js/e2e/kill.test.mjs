// Case 3: a browser is SIGKILLed (whole process group, so nothing closes anything politely).
// The other page shows the peer UNREACHABLE within liveness_timeout + 1 s, then LEFT when
// the resume window runs out. Once with the killed page on WebTransport (only liveness can
// tell: QUIC has no FIN to lose), once on WebSocket (the kernel closes the TCP socket at
// once, so the gateway sees EOF).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser } from "./lib/browser.mjs";
import { startGateway } from "./lib/gateway.mjs";
import { assertClean, connectPair } from "./lib/scenario.mjs";
import { measure } from "./lib/util.mjs";

let gw;
let survivorBrowser;
const toClose = [];
before(async () => {
  // A short resume window, so that "then left" comes soon after "unreachable".
  gw = await startGateway({ name: "kill", liveness: "2s", ping: "600ms", resumeWindow: "3s" });
  survivorBrowser = await launchBrowser("kill-survivor");
  toClose.push(survivorBrowser);
});
after(async () => {
  for (const b of toClose) await b.close();
  await gw?.stop();
});

for (const [transport, reason] of [
  ["webtransport", "liveness_timeout"],
  ["websocket", "connection_lost"],
]) {
  test(`SIGKILL of a browser on ${transport}: the other page shows it UNREACHABLE within liveness + 1 s, then LEFT`, async (t) => {
    const victimBrowser = await launchBrowser(`kill-${transport}-victim`);
    toClose.push(victimBrowser);
    const survivorContext = await survivorBrowser.newContext();
    try {
      const { pa: survivor, pb: victim } = await connectPair(t, gw, {
        room: `kill-${transport}`,
        a: { name: `kill-${transport}-survivor`, context: survivorContext },
        b: { name: `kill-${transport}-victim`, context: await victimBrowser.newContext(), query: { transport } },
      });
      assert.equal(victim.transport, transport);
      const victimId = victim.peerId;
      assert.equal((await survivor.peerStates())[victimId], "online");

      const killedAt = Date.now();
      victimBrowser.kill();

      const limit = gw.liveness + 1000;
      const unreachable = await survivor.waitFor(
        `${victimId} UNREACHABLE on the page`,
        (id) => {
          const e = window.__e2e.events.find((e) => e.type === "peerState" && e.peerId === id && e.state === "unreachable");
          const li = document.querySelector(`#peers li[data-peer-id="${id}"]`);
          return e && li?.dataset.state === "unreachable" && li.textContent.includes("UNREACHABLE") ? e : false;
        },
        victimId,
        limit + 5000,
      );
      const detection = unreachable.t - killedAt;
      measure(t, `SIGKILL (${transport}) -> UNREACHABLE shown`, `${detection} ms (reason ${unreachable.reason}, silent for ${unreachable.silentForMs} ms, detected by ${unreachable.detectedBy}; limit ${limit} ms)`);
      assert.ok(detection <= limit, `UNREACHABLE after ${detection} ms, more than liveness ${gw.liveness} ms + 1 s`);
      assert.equal(unreachable.reason, reason);
      assert.equal(unreachable.detectedBy, transport);

      const left = await survivor.waitFor(
        `${victimId} LEFT on the page`,
        (id) => {
          const e = window.__e2e.events.find((e) => e.type === "peerLeft" && e.peerId === id);
          const li = document.querySelector(`#peers li[data-peer-id="${id}"]`);
          return e && li?.dataset.state === "left" ? e : false;
        },
        victimId,
        gw.resumeWindow + 5000,
      );
      const leftAfter = left.t - unreachable.t;
      measure(t, `SIGKILL (${transport}) UNREACHABLE -> LEFT`, `${leftAfter} ms (reason ${left.reason}; resume window ${gw.resumeWindow} ms)`);
      assert.equal(left.reason, "resume_window_expired");
      assert.ok(leftAfter >= gw.resumeWindow - 250 && leftAfter <= gw.resumeWindow + 1500, `LEFT ${leftAfter} ms after UNREACHABLE; resume window ${gw.resumeWindow} ms`);
      // The demo ended the call with the departed peer.
      await survivor.waitFor("call closed", () => document.body.dataset.pcState === "none", undefined, 3000);
      // The survivor itself stayed connected all along.
      assert.deepEqual(await survivor.events("disconnected"), []);
      await assertClean(survivor);
    } finally {
      await survivorContext.close();
      await victimBrowser.close();
    }
  });
}

// For contrast, a page that leaves: the application calls client.close(), or the tab is
// closed. Either way the SDK says Bye (on `pagehide` for a tab that is really unloading),
// and only that frame makes the gateway report LEFT: the connection's own end (WebSocket
// 1001, a WebTransport close without FIN) would say nothing about intent.
for (const transport of ["webtransport", "websocket"]) {
  for (const how of ["client.close()", "tab closed"]) {
    test(`${how} on ${transport}: the page says Bye and the other page shows it LEFT at once`, async (t) => {
      const [cs, cv] = [await survivorBrowser.newContext(), await survivorBrowser.newContext()];
      try {
        const { pa: survivor, pb: leaving } = await connectPair(t, gw, {
          room: `leave-${transport}-${how === "tab closed" ? "tab" : "close"}`,
          a: { name: `leave-${transport}-survivor`, context: cs },
          b: { name: `leave-${transport}-leaving`, context: cv, query: { transport } },
        });
        assert.equal(leaving.transport, transport);
        const leftAt = Date.now();
        if (how === "tab closed") await leaving.page.close();
        else await leaving.page.evaluate(() => window.signalgateDemo.client.close());
        const gone = await survivor.waitFor(
          `${leaving.peerId} gone`,
          (id) => window.__e2e.events.find((e) => (e.type === "peerLeft" || e.type === "peerState") && e.peerId === id),
          leaving.peerId,
          gw.liveness + 5000,
        );
        const shown = gone.type === "peerLeft" ? "LEFT" : gone.state.toUpperCase();
        measure(t, `${how} (${transport}) -> ${shown} shown`, `${gone.t - leftAt} ms (reason ${gone.reason})`);
        assert.equal(gone.type, "peerLeft", `expected LEFT, got ${JSON.stringify(gone)}`);
        assert.equal(gone.reason, "bye");
        // Generous: the Bye arrives within tens of ms; a lost Bye would show only after the
        // resume window (3 s here).
        assert.ok(gone.t - leftAt < 2000, `${shown} only after ${gone.t - leftAt} ms`);
        await assertClean(survivor);
      } finally {
        await cs.close();
        await cv.close();
      }
    });
  }
}
