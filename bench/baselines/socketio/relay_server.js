// Baseline of the relay-latency and idle-session benchmarks: a Socket.IO 4 server that relays
// signals within rooms, driven by `signalgate-bench relay|clients --protocol socketio`.
// Socket.IO defaults (pingInterval 25 s, pingTimeout 20 s), WebSocket transport only.
// Events: `join` (room, ack) joins the room and acks; `signal` (payload, a string) goes to
// the other members of the rooms the socket joined (`socket.to(rooms).emit`).
// Prints JSON lines: ready {version, pid, pingInterval, pingTimeout}; each with
// t = CLOCK_REALTIME seconds.
// Usage: node relay_server.js --port PORT [--host 127.0.0.1] [--max-secs 1800]
"use strict";
const http = require("http");
const { parseArgs } = require("util");
const { Server } = require("socket.io");

const { values: opts } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "0" },
    "max-secs": { type: "string", default: "1800" },
  },
});
const emit = (fields) =>
  process.stdout.write(JSON.stringify({ t: (performance.timeOrigin + performance.now()) / 1000, ...fields }) + "\n");

const httpServer = http.createServer();
const io = new Server(httpServer, { transports: ["websocket"], serveClient: false });
io.on("connection", (socket) => {
  const rooms = [];
  socket.on("join", (room, ack) => {
    if (typeof room !== "string") return;
    socket.join(room);
    if (!rooms.includes(room)) rooms.push(room);
    if (typeof ack === "function") ack();
  });
  socket.on("signal", (payload) => {
    if (rooms.length) socket.to(rooms).emit("signal", payload);
  });
});
httpServer.listen(Number(opts.port), opts.host, () =>
  emit({
    event: "ready",
    version: require("socket.io/package.json").version,
    pid: process.pid,
    port: httpServer.address().port,
    pingInterval: io.engine.opts.pingInterval,
    pingTimeout: io.engine.opts.pingTimeout,
  }),
);
setTimeout(() => process.exit(0), Number(opts["max-secs"]) * 1000).unref();
process.on("SIGTERM", () => process.exit(0));
