// Small in-process network middleboxes that can make a path vanish, as a phone losing its
// network does: packets and bytes are swallowed silently (no RST, no FIN, no ICMP), so only
// liveness can notice.
import { createSocket } from "node:dgram";
import { connect, createServer } from "node:net";

/**
 * TCP proxy 127.0.0.1:<port> -> 127.0.0.1:<target>.
 * `cut()`: existing connections stay open but every byte in either direction is dropped, and
 * new connections are closed at once (as a connect attempt that fails). `restore()`: existing
 * connections are destroyed (their path is gone for good) and new ones are forwarded again.
 * `cutDownstream()`: only the bytes from the target to the client are dropped (a one-way
 * failure); new connections are still refused.
 */
export async function startTcpProxy(target) {
  const pairs = new Set();
  let cut = false;
  let downOnly = false;
  let accepted = 0;
  const server = createServer((down) => {
    if (cut) {
      down.destroy();
      return;
    }
    accepted++;
    const up = connect(target, "127.0.0.1");
    const pair = { down, up, dead: false };
    pairs.add(pair);
    const forward = (from, to) => {
      from.on("data", (chunk) => {
        if (!pair.dead || (downOnly && from === down)) to.write(chunk);
      });
      from.on("end", () => {
        if (!pair.dead) to.end();
      });
      from.on("error", () => undefined);
      from.on("close", () => {
        if (!pair.dead) to.destroy();
        pairs.delete(pair);
      });
    };
    forward(down, up);
    forward(up, down);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    get accepted() {
      return accepted;
    },
    cut() {
      cut = true;
      for (const p of pairs) p.dead = true;
    },
    cutDownstream() {
      downOnly = true;
      this.cut();
    },
    restore() {
      for (const p of pairs) {
        p.down.destroy();
        p.up.destroy();
      }
      pairs.clear();
      cut = false;
      downOnly = false;
    },
    close() {
      this.restore();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * UDP relay 127.0.0.1:<port> -> 127.0.0.1:<target>, one upstream socket per client address
 * (so a QUIC server sees one stable peer per client). `cut()` drops every datagram in both
 * directions, for existing and new flows; `cutDownstream()` only those from the target to
 * the client; `restore()` forwards again.
 */
export async function startUdpRelay(target) {
  const front = createSocket("udp4");
  const flows = new Map();
  let cut = false;
  let downOnly = false;
  let dropped = 0;
  front.on("message", (msg, rinfo) => {
    if (cut && !downOnly) {
      dropped++;
      return;
    }
    const key = `${rinfo.address}:${rinfo.port}`;
    let up = flows.get(key);
    if (!up) {
      up = createSocket("udp4");
      up.on("message", (reply) => {
        if (cut) {
          dropped++;
          return;
        }
        front.send(reply, rinfo.port, rinfo.address);
      });
      up.on("error", () => undefined);
      up.bind(0, "127.0.0.1");
      flows.set(key, up);
    }
    up.send(msg, target, "127.0.0.1");
  });
  front.on("error", () => undefined);
  await new Promise((resolve) => front.bind(0, "127.0.0.1", resolve));
  return {
    port: front.address().port,
    get flows() {
      return flows.size;
    },
    get dropped() {
      return dropped;
    },
    cut() {
      cut = true;
    },
    cutDownstream() {
      downOnly = true;
      cut = true;
    },
    restore() {
      cut = false;
      downOnly = false;
    },
    close() {
      for (const up of flows.values()) up.close();
      flows.clear();
      return new Promise((resolve) => front.close(() => resolve()));
    },
  };
}
