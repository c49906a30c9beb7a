// Beyond the five cases: the gateway restarts (SIGTERM: GoAway to every session, then a new
// process on the same ports that knows none of the old sessions). Both pages come back by
// themselves: their resume is refused, they start fresh sessions, re-join the room, see each
// other again, and the demo sets the call up again.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser } from "./lib/browser.mjs";
import { startGateway } from "./lib/gateway.mjs";
import { assertClean, connectPair, exchangeChat } from "./lib/scenario.mjs";
import { measure } from "./lib/util.mjs";

let gw;
let browser;
before(async () => {
  gw = await startGateway({ name: "restart", liveness: "2s", ping: "600ms", resumeWindow: "5s" });
  browser = await launchBrowser("restart");
});
after(async () => {
  await browser?.close();
  await gw?.stop();
});

test("gateway restart: both pages get GoAway, start new sessions, re-join, and the call is set up again", async (t) => {
  const [ca, cb] = [await browser.newContext(), await browser.newContext()];
  try {
    const room = "restart";
    const { pa, pb } = await connectPair(t, gw, {
      room,
      a: { name: "restart-wt", context: ca },
      b: { name: "restart-ws", context: cb, query: { transport: "websocket" } },
    });
    const before = { a: pa.peerId, b: pb.peerId };

    const restartAt = Date.now();
    const exited = await gw.restart();
    assert.equal(exited.code, 0, `the gateway did not exit cleanly on SIGTERM: ${JSON.stringify(exited)}`);
    measure(t, "gateway restart (SIGTERM, exit, new process healthy)", `${Date.now() - restartAt} ms`);

    for (const [p, other] of [
      [pa, pb],
      [pb, pa],
    ]) {
      // A new session (new peer id), re-joined, the other peer ONLINE under its new id.
      const again = await p.waitFor(
        "a new session, re-joined, with the other peer online",
        (oldId) => {
          const ev = window.__e2e.events;
          const connected = ev.filter((e) => e.type === "connected");
          const rejoined = ev.find((e) => e.type === "joined" && e.rejoined);
          const peers = JSON.parse(document.body.dataset.peers || "{}");
          const others = Object.entries(peers).filter(([id, s]) => id !== oldId && s === "online");
          return connected.length === 2 && rejoined && others.length > 0 ? connected[1] : false;
        },
        other === pb ? before.b : before.a,
        20_000,
      );
      measure(t, `${p.name}: gateway stopped -> new session over ${again.transport}`, `${again.t - restartAt} ms`);
      const goAway = (await p.events("goAway"))[0];
      assert.ok(goAway, `${p.name}: no GoAway`);
      assert.equal(goAway.reason, "server_shutdown");
      const lost = await p.events("sessionLost");
      assert.equal(lost.length, 1, `${p.name}: sessionLost ${JSON.stringify(lost)}`);
      assert.equal(lost[0].previousPeerId, p.peerId);
      assert.notEqual(again.peerId, p.peerId);
    }
    pa.peerId = (await pa.dataset()).peerId;
    pb.peerId = (await pb.dataset()).peerId;
    assert.equal((await pa.dataset()).transport, "webtransport");
    assert.equal((await pb.dataset()).transport, "websocket");
    const [ta, tb] = await Promise.all([pa.callConnected(), pb.callConnected()]);
    measure(t, "gateway stopped -> call connected again", `${Math.max(ta, tb) - restartAt} ms`);
    await exchangeChat(pa, pb, "after-restart");
    await assertClean(pa, pb);
  } finally {
    await ca.close();
    await cb.close();
  }
});
