// Headless Chromium (Debian package `chromium`) driven by playwright-core, and a handle on one
// demo page that records every SDK event with a wall-clock timestamp.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { outDir, withTimeout } from "./util.mjs";

export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";

/** The flags these machines need (see /work/shared/FACTS.md). No --disable-features: playwright sets its own. */
function chromiumArgs(name) {
  const args = [
    "--no-sandbox", // required as root
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
  ];
  if (process.env.SIGNALGATE_E2E_NETLOG) args.push(`--log-net-log=${join(outDir(), `${name}-netlog.json`)}`);
  return args;
}

function assertChromium() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: install the Debian package \`chromium\` (apt-get install -y chromium) or set CHROMIUM_BIN`);
  }
}

/** One browser process. `kill()` SIGKILLs its whole process group (browser, renderers, network service). */
export async function launchBrowser(name) {
  assertChromium();
  // launchServer (not launch) so that the browser's process is ours to kill.
  const server = await chromium.launchServer({
    executablePath: CHROMIUM,
    headless: true,
    args: chromiumArgs(name),
    // playwright's default SIGINT/SIGTERM/SIGHUP handlers close the browser, then exit.
  });
  const browser = await chromium.connect(server.wsEndpoint());
  const proc = server.process();
  let killed = false;
  return {
    name,
    browser,
    pid: proc.pid,
    async newContext() {
      return browser.newContext({
        viewport: { width: 1100, height: 820 },
        permissions: ["camera", "microphone"],
      });
    },
    /** SIGKILL to the whole process group (playwright starts Chromium as a group leader). */
    kill() {
      killed = true;
      try {
        process.kill(-proc.pid, "SIGKILL");
      } catch {
        proc.kill("SIGKILL");
      }
    },
    async close() {
      if (killed) {
        await server.close().catch(() => undefined);
        return;
      }
      await withTimeout(browser.close(), 10_000, `${name}: browser.close`).catch(() => this.kill());
      await server.close().catch(() => undefined);
    },
  };
}

/**
 * A browser whose default context runs without playwright's per-page overrides (playwright's
 * connectOverCDP option `noDefaults`). Needed to hide and freeze a page: playwright turns on
 * focus emulation for every page it sets up, which keeps the page visible whatever happens,
 * and CDP Page.setWebLifecycleState frozen then does nothing at all. Without it, the active
 * tab is visible and the others hidden, as in a real browser: `hidePage(page)` activates
 * another tab, `showPage(page)` activates the page's own (both wait for
 * `document.visibilityState` to follow). Note: freezing a visible page with CDP first fires
 * `visibilitychange` (hidden) and freezes right after, leaving the page no time to act on
 * it; real browsers freeze only tabs that have been hidden for a while, so hide first.
 * We start Chromium ourselves (own process group) and attach over CDP. `defaultContext()`
 * gives that context; grant camera with the --use-fake-ui flag.
 */
export async function launchBrowserOverCdp(name) {
  assertChromium();
  const profile = mkdtempSync(join(tmpdir(), `sg-e2e-profile-${name}-`));
  const child = spawn(
    CHROMIUM,
    ["--headless=new", ...chromiumArgs(name), `--user-data-dir=${profile}`, "--remote-debugging-port=0", "about:blank"],
    { detached: true, stdio: ["ignore", "ignore", "pipe"] },
  );
  let exited = false;
  child.once("exit", () => {
    exited = true;
  });
  const killGroup = () => {
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // gone
    }
  };
  process.on("exit", killGroup);
  let stderr = "";
  const wsUrl = await withTimeout(
    new Promise((resolve, reject) => {
      child.stderr.on("data", (d) => {
        stderr += d.toString();
        const m = /DevTools listening on (ws:\/\/\S+)/.exec(stderr);
        if (m) resolve(m[1]);
      });
      child.once("exit", (code) => reject(new Error(`chromium exited (${code}): ${stderr.slice(-2000)}`)));
    }),
    15_000,
    `${name}: chromium DevTools endpoint`,
  );
  child.stderr.resume();
  const browser = await chromium.connectOverCDP(wsUrl, { noDefaults: true, timeout: 15_000 });
  let browserCdp;
  let otherTab;
  const targetIdOf = async (page) => {
    const session = await page.context().newCDPSession(page);
    try {
      return (await session.send("Target.getTargetInfo")).targetInfo.targetId;
    } finally {
      await session.detach().catch(() => undefined);
    }
  };
  const waitVisibility = (page, state) =>
    page
      .waitForFunction((state) => document.visibilityState === state, state, { timeout: 5000, polling: 20 })
      .catch((err) => {
        throw new Error(`${name}: the page did not become ${state}: ${err.message.split("\n")[0]}`);
      });
  return {
    name,
    browser,
    pid: child.pid,
    defaultContext() {
      return browser.contexts()[0];
    },
    /** Activates another tab (a blank one, opened once), so `page` becomes hidden. */
    async hidePage(page) {
      browserCdp ??= await browser.newBrowserCDPSession();
      otherTab ??= (await browserCdp.send("Target.createTarget", { url: "about:blank" })).targetId;
      await browserCdp.send("Target.activateTarget", { targetId: otherTab });
      await waitVisibility(page, "hidden");
    },
    /** Activates `page`'s tab, so it becomes visible. */
    async showPage(page) {
      browserCdp ??= await browser.newBrowserCDPSession();
      await browserCdp.send("Target.activateTarget", { targetId: await targetIdOf(page) });
      await waitVisibility(page, "visible");
    },
    kill: killGroup,
    async close() {
      await withTimeout(browser.close(), 5000, `${name}: browser.close`).catch(() => undefined);
      killGroup();
      if (!exited) await withTimeout(new Promise((r) => child.once("exit", r)), 5000, `${name}: exit`).catch(() => undefined);
      process.off("exit", killGroup);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

const SDK_EVENTS = [
  "connected",
  "resumed",
  "sessionLost",
  "disconnected",
  "transportFailed",
  "reconnecting",
  "joined",
  "peerJoined",
  "peerState",
  "peerLeft",
  "signal",
  "error",
  "goAway",
];

/**
 * Runs in the page before its scripts. Hooks the assignment of `window.signalgateDemo` (the
 * demo sets it right after creating the client, before connect()) to subscribe to every SDK
 * event, and watches the body's data-* attributes. Everything lands in `window.__e2e.events`
 * as `{t: Date.now(), type, ...}`; data signals are decoded as UTF-8 text.
 */
function recorderScript(opts) {
  const events = [];
  window.__e2e = { events };
  const rec = (type, e) => {
    const out = { t: Date.now(), type };
    for (const [k, v] of Object.entries(e ?? {})) {
      if (k === "data" && v instanceof Uint8Array) out.data = new TextDecoder().decode(v);
      else if (k === "description") out.description = v?.type;
      else if (k === "candidate") out.candidate = true;
      else if (k === "peers" && Array.isArray(v)) out.peers = v.map((p) => ({ ...p }));
      else if (k === "peer" && v) out.peer = { ...v };
      else out[k] = v;
    }
    events.push(out);
  };
  let current;
  Object.defineProperty(window, "signalgateDemo", {
    configurable: true,
    get: () => current,
    set: (value) => {
      current = value;
      const client = value?.client;
      if (client && !client.__e2eHooked) {
        client.__e2eHooked = true;
        for (const type of opts.events) client.on(type, (e) => rec(type, e));
      }
    },
  });
  const watched = { "data-pc-state": "pcState", "data-data-channel": "dataChannel", "data-client-state": "clientState", "data-transport": "transport" };
  new MutationObserver((records) => {
    for (const r of records) {
      const key = watched[r.attributeName];
      if (!key || r.target !== document.body) continue;
      const value = document.body.getAttribute(r.attributeName);
      if (value !== r.oldValue) events.push({ t: Date.now(), type: `dataset.${key}`, value });
    }
  }).observe(document, { subtree: true, attributes: true, attributeOldValue: true, attributeFilter: Object.keys(watched) });
  for (const type of ["freeze", "resume", "visibilitychange"]) {
    document.addEventListener(type, () => events.push({ t: Date.now(), type: `document.${type}`, visibilityState: document.visibilityState }));
  }
  for (const type of ["pagehide", "pageshow"]) {
    window.addEventListener(type, (e) => events.push({ t: Date.now(), type: `window.${type}`, persisted: e.persisted }));
  }
  if (opts.noWebTransport) {
    // As in a browser without WebTransport: the SDK's automatic fallback must notice by itself.
    delete window.WebTransport;
  }
}

/**
 * Opens the demo page of `gateway` in a new page of `context`. Options: `name` (for logs),
 * `query` (room, transport, video), `noWebTransport` (delete window.WebTransport before the
 * page's scripts run), `rewriteEndpoints` (a function that rewrites the /endpoints JSON, e.g.
 * to point the page at a proxy).
 */
export async function openDemo(context, gateway, { name, query = {}, noWebTransport = false, rewriteEndpoints } = {}) {
  const page = await context.newPage();
  const consoleLines = [];
  page.on("console", (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`[pageerror] ${e.message}`));
  await page.addInitScript(recorderScript, { events: SDK_EVENTS, noWebTransport });
  if (rewriteEndpoints) {
    await page.route("**/endpoints", async (route) => {
      const response = await route.fetch();
      const json = rewriteEndpoints(await response.json());
      await route.fulfill({ response, json });
    });
  }
  const demo = new DemoPage(name, page, context, consoleLines);
  demo.openedAt = Date.now();
  await page.goto(gateway.pageUrl(query), { timeout: 15_000 });
  return demo;
}

export class DemoPage {
  constructor(name, page, context, consoleLines) {
    this.name = name;
    this.page = page;
    this.context = context;
    this.consoleLines = consoleLines;
    this.openedAt = 0;
  }

  /** Waits (polling every 50 ms, at most `timeout` ms) until `fn(arg)` is truthy in the page. */
  async waitFor(what, fn, arg, timeout = 15_000) {
    try {
      const handle = await this.page.waitForFunction(fn, arg, { timeout, polling: 50 });
      const value = await handle.jsonValue().catch(() => true);
      await handle.dispose().catch(() => undefined);
      return value;
    } catch (err) {
      throw new Error(`${this.name}: ${what}: ${err.message.split("\n")[0]}\n${await this.describe()}`);
    }
  }

  /** The demo's state and the last log lines: attached to every failure. */
  async describe() {
    try {
      const s = await withTimeout(
        this.page.evaluate(() => ({
          dataset: { ...document.body.dataset },
          log: window.signalgateDemo?.state.log.slice(-25) ?? [],
          events: window.__e2e.events.slice(-25),
        })),
        3000,
        "describe",
      );
      return [
        `--- ${this.name} dataset: ${JSON.stringify(s.dataset)}`,
        `--- ${this.name} demo log:`,
        ...s.log,
        `--- ${this.name} recent SDK events:`,
        ...s.events.map((e) => JSON.stringify(e)),
        `--- ${this.name} console:`,
        ...this.consoleLines.slice(-15),
      ].join("\n");
    } catch (err) {
      return `--- ${this.name}: page state unavailable (${err.message})`;
    }
  }

  /**
   * No Error frame from the gateway that nobody asked for (SDK `error` events), no uncaught
   * exception in the page, no error line in the demo's log (WebRTC errors, unsent candidates).
   */
  async assertClean() {
    const { errors, log } = await this.page.evaluate(() => ({
      errors: window.__e2e.events.filter((e) => e.type === "error"),
      log: window.signalgateDemo?.state.log ?? [],
    }));
    const pageErrors = this.consoleLines.filter((l) => l.startsWith("[pageerror]"));
    // "<transport> failed: ..." lines are connection attempts that failed (expected in some
    // cases, which check the transportFailed events themselves).
    const badLog = log.filter((l) => /\b(error|failed|not sent)\b/i.test(l) && !/^\S+ (webtransport|websocket) failed: /.test(l));
    if (errors.length || pageErrors.length || badLog.length) {
      throw new Error(
        `${this.name}: ${JSON.stringify({ sdkErrors: errors, pageErrors, demoLog: badLog }, null, 2)}`,
      );
    }
  }

  dataset() {
    return this.page.evaluate(() => ({ ...document.body.dataset }));
  }

  events(type) {
    return this.page.evaluate((type) => window.__e2e.events.filter((e) => !type || e.type === type), type);
  }

  /** Connected to the gateway and in the room; returns {peerId, transport}. */
  async ready(timeout = 15_000) {
    await this.waitFor(
      "connected and joined",
      () =>
        document.body.dataset.clientState === "connected" &&
        !!document.body.dataset.peerId &&
        window.__e2e.events.some((e) => e.type === "joined"),
      undefined,
      timeout,
    );
    const ds = await this.dataset();
    return { peerId: ds.peerId, transport: ds.transport };
  }

  /** RTCPeerConnection connected and the data channel open; returns when (Date.now()). */
  async callConnected(timeout = 20_000) {
    await this.waitFor(
      "WebRTC connected with the data channel open",
      () => document.body.dataset.pcState === "connected" && document.body.dataset.dataChannel === "open",
      undefined,
      timeout,
    );
    const events = await this.events("dataset.pcState");
    return events.findLast((e) => e.value === "connected")?.t ?? Date.now();
  }

  /** Sends a chat message over the data channel (false if the channel is not open). */
  send(text) {
    return this.page.evaluate((text) => window.signalgateDemo.send(text), text);
  }

  async waitReceived(text, timeout = 10_000) {
    await this.waitFor(`data-channel message ${JSON.stringify(text)}`, (text) => window.signalgateDemo.state.received.includes(text), text, timeout);
  }

  peerStates() {
    return this.page.evaluate(() => JSON.parse(document.body.dataset.peers || "{}"));
  }

  async screenshot(file) {
    mkdirSync(join(file, ".."), { recursive: true });
    await this.page.screenshot({ path: file, fullPage: true });
  }

  async saveDiagnostics() {
    try {
      const text = await this.describe();
      writeFileSync(join(outDir(), `${this.name}-page.txt`), text);
    } catch {
      // the page may be gone (killed browser)
    }
  }
}
