// Starts one nats-server (Debian package `nats-server`) on a free loopback port, for the
// gateways of a cluster test, and stops it. Logs go to $SIGNALGATE_E2E_OUT/<name>-nats.log.
import { spawn } from "node:child_process";
import { createWriteStream, existsSync, readFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { freePort } from "./gateway.mjs";
import { outDir, sleep, withTimeout } from "./util.mjs";

export const NATS_SERVER = process.env.NATS_SERVER_BIN ?? "/usr/sbin/nats-server";

/** Every nats-server started by this process, so that an unexpected exit still stops them. */
const running = new Set();
process.on("exit", () => {
  for (const child of running) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
});

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
  log.write(`$ ${NATS_SERVER} ${args.join(" ")}\n`);
  const child = spawn(NATS_SERVER, args, { stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  let exited = null;
  const exit = new Promise((resolve) => {
    child.once("exit", (code, signal) => {
      exited = { code, signal };
      running.delete(child);
      resolve(exited);
    });
  });
  const stop = async () => {
    if (!exited) {
      child.kill("SIGTERM");
      if (!(await Promise.race([exit, sleep(5000).then(() => null)]))) child.kill("SIGKILL");
    }
    const result = await exit;
    log.end();
    return result;
  };
  try {
    await withTimeout(
      (async () => {
        for (;;) {
          if (exited) throw new Error(`nats-server exited during start-up (${JSON.stringify(exited)})`);
          if (await greets(port)) return;
          await sleep(100);
        }
      })(),
      15_000,
      "nats-server start-up",
    );
  } catch (err) {
    await stop();
    let tail = "";
    try {
      tail = readFileSync(logPath, "utf8").split("\n").slice(-20).join("\n");
    } catch {
      // no log
    }
    throw new Error(`${err.message}\n--- ${logPath} (tail) ---\n${tail}`);
  }
  return { url: `nats://127.0.0.1:${port}`, port, logPath, stop };
}
