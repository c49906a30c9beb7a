import { appendFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Rejects with "<what>: timed out after N ms" unless `promise` settles first. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Where logs, screenshots and measurements of this run go. */
export function outDir() {
  const dir = process.env.SIGNALGATE_E2E_OUT ?? join(tmpdir(), "signalgate-e2e");
  mkdirSync(dir, { recursive: true });
  return dir;
}

/**
 * Reports a measured number: as a test diagnostic (shown by the reporter) and as a line in
 * $SIGNALGATE_E2E_OUT/measurements.txt (run.sh prints that file at the end).
 */
export function measure(t, label, value) {
  const line = `${label}: ${value}`;
  t.diagnostic(line);
  appendFileSync(join(outDir(), "measurements.txt"), `${line}\n`);
}
