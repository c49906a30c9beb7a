// The demo with two peers in a call (fake camera, chat over the data channel), once over each
// transport. Screenshots go to $SIGNALGATE_E2E_OUT and, when SIGNALGATE_E2E_SCREENSHOTS is
// set (e.g. to docs/screenshots), there too as demo-webtransport.png / demo-websocket.png.
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { launchBrowser } from "./lib/browser.mjs";
import { startGateway } from "./lib/gateway.mjs";
import { assertClean, connectPair, exchangeChat } from "./lib/scenario.mjs";
import { outDir } from "./lib/util.mjs";

let gw;
let browser;
before(async () => {
  gw = await startGateway({ name: "screenshots" });
  browser = await launchBrowser("screenshots");
});
after(async () => {
  await browser?.close();
  await gw?.stop();
});

for (const transport of ["webtransport", "websocket"]) {
  test(`demo with video over ${transport}: two peers connected (screenshot)`, async (t) => {
    const [ca, cb] = [await browser.newContext(), await browser.newContext()];
    try {
      const query = { video: "1", ...(transport === "websocket" ? { transport } : {}) };
      const { pa, pb } = await connectPair(t, gw, {
        room: `shot-${transport}`,
        a: { name: `shot-${transport}-a`, context: ca, query },
        b: { name: `shot-${transport}-b`, context: cb, query },
      });
      assert.equal(pa.transport, transport);
      assert.equal(pb.transport, transport);
      // The remote (fake camera) video plays on both sides.
      for (const p of [pa, pb]) {
        await p.waitFor("remote video playing", () => {
          const v = document.getElementById("remote-video");
          return v.videoWidth > 0 && v.currentTime > 0.5;
        });
      }
      await exchangeChat(pa, pb, transport);
      await assertClean(pa, pb);
      await pa.page.locator("#chat-input").blur();
      const file = join(outDir(), `demo-${transport}.png`);
      await pa.screenshot(file);
      const dir = process.env.SIGNALGATE_E2E_SCREENSHOTS;
      if (dir) {
        mkdirSync(dir, { recursive: true });
        copyFileSync(file, join(dir, `demo-${transport}.png`));
      }
      t.diagnostic(`screenshot ${file}`);
    } finally {
      await ca.close();
      await cb.close();
    }
  });
}
