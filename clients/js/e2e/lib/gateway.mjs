// Starts a signalgate gateway on free loopback ports for one test file, and stops it.
//
// The binary comes from SIGNALGATE_BIN (run.sh always sets it). Logs go to
// $SIGNALGATE_E2E_OUT/<name>-gateway.log; the tail is printed when start-up fails.
import { createSocket } from "node:dgram";
import { createWriteStream, existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer } from "./process.mjs";
import { outDir, sleep } from "./util.mjs";

/** A TCP port that is free on 127.0.0.1; with `udpToo`, the same UDP port is free as well. */
export async function freePort({ udpToo = false } = {}) {
  for (let i = 0; i < 50; i++) {
    const port = await new Promise((resolve, reject) => {
      const srv = createServer();
      srv.once("error", reject);
      srv.listen(0, "127.0.0.1", () => {
        const { port } = srv.address();
        srv.close(() => resolve(port));
      });
    });
    if (!udpToo) return port;
    const ok = await new Promise((resolve) => {
      const sock = createSocket("udp4");
      sock.once("error", () => resolve(false));
      sock.bind(port, "127.0.0.1", () => sock.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error("no free port found in 50 tries");
}

export function gatewayBinary() {
  const bin = process.env.SIGNALGATE_BIN;
  if (!bin) throw new Error("SIGNALGATE_BIN is not set (run the suite with e2e/run.sh)");
  if (!existsSync(bin)) throw new Error(`SIGNALGATE_BIN=${bin} does not exist (cargo build --release)`);
  return bin;
}

/** Starts the binary and waits for /healthz; returns {stop()}. */
function spawnGateway(bin, args, log, logPath, httpBase) {
  const ready = async () => {
    try {
      return (await fetch(`${httpBase}/healthz`)).ok;
    } catch {
      return false; // not listening yet
    }
  };
  const env = { ...process.env, NO_COLOR: "1" };
  return startServer({ what: "gateway", bin, args, env, log, logPath, ready, timeoutMs: 20_000 });
}

/**
 * @param {object} o
 * @param {string} o.name           used for the log file name
 * @param {string} [o.liveness]     --liveness-timeout (default 2s)
 * @param {string} [o.ping]         --ping-interval (default 600ms)
 * @param {string} [o.resumeWindow] --resume-window (default 5s)
 * @param {string[]} [o.extraArgs]
 */
export async function startGateway({ name, liveness = "2s", ping = "600ms", resumeWindow = "5s", extraArgs = [] }) {
  const bin = gatewayBinary();
  const port = await freePort({ udpToo: true });
  const httpPort = await freePort();
  const certDir = mkdtempSync(join(tmpdir(), `sg-e2e-cert-${name}-`));
  const logPath = join(outDir(), `${name}-gateway.log`);
  const log = createWriteStream(logPath, { flags: "a" });
  const args = [
    "serve",
    "--listen", `127.0.0.1:${port}`,
    "--http-listen", `127.0.0.1:${httpPort}`,
    "--metrics-listen", "off",
    "--dev-cert-dir", certDir,
    "--liveness-timeout", liveness,
    "--ping-interval", ping,
    "--resume-window", resumeWindow,
    "--log", process.env.SIGNALGATE_E2E_GATEWAY_LOG ?? "info,signalgate=debug",
    ...extraArgs,
  ];
  const httpBase = `http://127.0.0.1:${httpPort}`;
  let proc = await spawnGateway(bin, args, log, logPath, httpBase);
  const endpoints = await (await fetch(`${httpBase}/endpoints`)).json();

  return {
    name,
    port,
    httpPort,
    logPath,
    endpoints,
    liveness: parseDurationMs(liveness),
    ping: parseDurationMs(ping),
    resumeWindow: parseDurationMs(resumeWindow),
    /** The demo page, as a secure context (http://localhost). */
    pageUrl(query = {}) {
      const q = new URLSearchParams(query).toString();
      return `http://localhost:${httpPort}/${q ? `?${q}` : ""}`;
    },
    /** A new gateway process on the same ports with the same certificate (so the pages' hash still fits). */
    async restart({ downMs = 0 } = {}) {
      const exited = await proc.stop();
      await sleep(downMs);
      proc = await spawnGateway(bin, args, log, logPath, httpBase);
      return exited;
    },
    /** SIGTERM (SIGKILL after 5 s); returns how the process exited ({code, signal}). */
    async stop() {
      const exited = await proc.stop();
      log.end();
      rmSync(certDir, { recursive: true, force: true });
      return exited;
    },
  };
}

export function parseDurationMs(s) {
  const m = /^(\d+(?:\.\d+)?)(ms|s)$/.exec(s);
  if (!m) throw new Error(`cannot parse duration ${s}`);
  return Number(m[1]) * (m[2] === "s" ? 1000 : 1);
}
