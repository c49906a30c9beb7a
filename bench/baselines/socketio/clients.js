// N quiet Socket.IO clients (socket.io-client 4, WebSocket transport, no reconnection).
// Client i connects after a delay spread evenly over --spread-secs, so that a cut meets each
// connection at a random phase of the server's heartbeat. Prints {"event": "ready"} once all
// were tried.
"use strict";
const { io } = require("socket.io-client");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}
const now = () => (performance.timeOrigin + performance.now()) / 1000;
const emit = (fields) => process.stdout.write(JSON.stringify({ t: now(), ...fields }) + "\n");

const url = arg("url");
const count = Number(arg("count"));
const spread = Number(arg("spread-secs", "0"));
const sources = (arg("bind", "") || "").split(",").filter(Boolean);
const GOLDEN = 0.6180339887498949;
let connected = 0;
let failed = 0;
const sockets = [];

function tried() {
  if (connected + failed === count) emit({ event: "ready", connected, failed });
}

for (let i = 0; i < count; i++) {
  setTimeout(() => {
    const opts = { transports: ["websocket"], reconnection: false, timeout: 20000 };
    if (sources.length) opts.localAddress = sources[i % sources.length];
    const socket = io(url, opts);
    sockets.push(socket);
    let settled = false;
    socket.on("connect", () => {
      if (!settled) { settled = true; connected++; tried(); }
    });
    socket.on("connect_error", (err) => {
      if (!settled) { settled = true; failed++; emit({ event: "connect_failed", index: i, error: String(err) }); tried(); }
    });
  }, spread * 1000 * ((i * GOLDEN) % 1));
}
setTimeout(() => process.exit(0), Number(arg("max-secs", "900")) * 1000).unref();
process.on("SIGTERM", () => process.exit(0));
