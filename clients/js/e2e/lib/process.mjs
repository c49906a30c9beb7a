// Server processes of the e2e suite (gateways, nats-server): output appended to a log file,
// started until they answer, and stopped whatever way this process ends.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { sleep, withTimeout } from "./util.mjs";

/** Every process started here, so that an unexpected exit still stops them. */
const running = new Set();
function killAll() {
  for (const child of running) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
}
process.on("exit", killAll);
// run.sh's `timeout` sends SIGTERM to the whole process group. playwright's own handler closes
// the browsers and exits; make sure the servers go too, and that the process does exit.
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    killAll();
    setTimeout(() => process.exit(128 + (signal === "SIGTERM" ? 15 : 2)), 5000).unref();
  });
}

/**
 * Starts `bin` with its output appended to `log` (a write stream of `logPath`) and polls
 * `ready()` every 100 ms until it resolves true. On failure the process is killed and the
 * error carries the log's tail.
 * @returns {Promise<{stop(): Promise<{code, signal}>}>} stop: SIGTERM, SIGKILL after 5 s.
 */
export async function startServer({ what, bin, args, env = process.env, log, logPath, ready, timeoutMs }) {
  log.write(`$ ${bin} ${args.join(" ")}\n`);
  const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], env });
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
  try {
    await withTimeout(
      (async () => {
        for (;;) {
          if (exited) throw new Error(`${what} exited during start-up (${JSON.stringify(exited)})`);
          if (await ready()) return;
          await sleep(100);
        }
      })(),
      timeoutMs,
      `${what} start-up`,
    );
  } catch (err) {
    child.kill("SIGKILL");
    await exit;
    let tail = "";
    try {
      tail = readFileSync(logPath, "utf8").split("\n").slice(-30).join("\n");
    } catch {
      // no log
    }
    throw new Error(`${err.message}\n--- ${logPath} (tail) ---\n${tail}`);
  }
  return {
    async stop() {
      if (exited) return exited;
      child.kill("SIGTERM");
      const done = await Promise.race([exit, sleep(5000).then(() => null)]);
      if (done) return done;
      child.kill("SIGKILL");
      return exit;
    },
  };
}
