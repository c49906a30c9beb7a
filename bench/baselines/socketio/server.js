// Baseline: a Socket.IO 4 server with its default heartbeat (the server pings every
// pingInterval = 25 s and drops a client whose pong does not come within pingTimeout = 20 s).
// Prints JSON lines: ready; connected {client, peer}; disconnected {client, reason}; each with
// t = CLOCK_REALTIME seconds.
"use strict";
const http = require("http");
const { Server } = require("socket.io");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}
const now = () => (performance.timeOrigin + performance.now()) / 1000;
const emit = (fields) => process.stdout.write(JSON.stringify({ t: now(), ...fields }) + "\n");

const httpServer = http.createServer();
const io = new Server(httpServer); // defaults: pingInterval 25000, pingTimeout 20000
let next = 0;
io.on("connection", (socket) => {
  const client = next++;
  emit({ event: "connected", client, peer: socket.handshake.address, transport: socket.conn.transport.name });
  socket.on("disconnect", (reason) => emit({ event: "disconnected", client, reason }));
});
httpServer.listen(Number(arg("port")), arg("host"), () =>
  emit({
    event: "ready",
    version: require("socket.io/package.json").version,
    pingInterval: io.engine.opts.pingInterval,
    pingTimeout: io.engine.opts.pingTimeout,
  }),
);
setTimeout(() => process.exit(0), Number(arg("max-secs", "1800")) * 1000).unref();
process.on("SIGTERM", () => process.exit(0));
