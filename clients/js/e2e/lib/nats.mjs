// Starts one nats-server (Debian package `nats-server`) on a free loopback port, for the
// gateways of a cluster test, and stops it. Logs go to $SIGNALGATE_E2E_OUT/<name>-nats.log.
import { createWriteStream, existsSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { freePort } from "./gateway.mjs";
import { startServer } from "./process.mjs";
import { outDir } from "./util.mjs";

export const NATS_SERVER = process.env.NATS_SERVER_BIN ?? "/usr/sbin/nats-server";

/** Resolves true once the server greets a TCP client with its INFO line. */
function greets(port) {
  return new Promise((resolve) => {
    const sock = connect({ host: "127.0.0.1", port });
    let buf = "";
    const done = (ok) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.on("data", (d) => {
      buf += d.toString();
      if (buf.startsWith("INFO ")) done(true);
    });
    sock.on("error", () => done(false));
    sock.on("close", () => done(buf.startsWith("INFO ")));
  });
}

/** @returns {{url: string, port: number, logPath: string, stop(): Promise<{code, signal}>}} */
export async function startNats({ name }) {
  if (!existsSync(NATS_SERVER)) {
    throw new Error(`${NATS_SERVER} not found: install the Debian package \`nats-server\` (apt-get install -y nats-server) or set NATS_SERVER_BIN`);
  }
  const port = await freePort();
  const logPath = join(outDir(), `${name}-nats.log`);
  const log = createWriteStream(logPath, { flags: "a" });
  const args = ["-a", "127.0.0.1", "-p", String(port), "-n", `e2e-${name}`];
  const ready = () => greets(port);
  let server;
  try {
    server = await startServer({ what: "nats-server", bin: NATS_SERVER, args, log, logPath, ready, timeoutMs: 15_000 });
  } catch (err) {
    log.end();
    throw err;
  }
  const stop = async () => {
    const result = await server.stop();
    log.end();
    return result;
  };
  return { url: `nats://127.0.0.1:${port}`, port, logPath, stop };
}
