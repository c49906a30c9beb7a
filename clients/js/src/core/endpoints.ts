/**
 * The gateways a `GET /endpoints` answer describes (pure: JSON in, list out).
 *
 *   {"webtransport": "https://127.0.0.1:4433/wt" | null, "websocket": "ws://127.0.0.1:4480/ws",
 *    "websocket_tls": "wss://…", "cert_sha256": "<64 hex>" | null,
 *    "gateways": [{"node": "a", "websocket": "wss://host:port/ws",
 *                  "webtransport": "https://host:port/wt" | null, "cert_sha256": "<64 hex>"}, …]}
 *
 * Cluster mode: `gateways` lists every live gateway that is not draining, the answering one
 * first, each with its own certificate hash. Alone (not in a cluster) it is `[]`: the
 * top-level fields are the one gateway.
 */
import type { GatewayEndpoint, WebTransportHashInit } from "../types.js";

/**
 * The gateways of a `GET /endpoints` answer: its `gateways` array, or (when that is empty or
 * missing) the answering gateway from the top-level fields. Entries without any URL are left
 * out; `[]` when nothing is usable.
 *
 * The answering gateway is also in `gateways` (with the host it advertises to the cluster); its
 * entry, recognised by its certificate hash, takes the top-level URLs instead, which use the
 * host this client reached it by.
 */
export function gatewaysFromEndpoints(json: unknown): GatewayEndpoint[] {
  if (!isObject(json)) return [];
  const here = {
    webTransportUrl: url(json["webtransport"]),
    webSocketUrl: url(json["websocket"]),
    hash: hex(json["cert_sha256"]),
  };
  const cluster = Array.isArray(json["gateways"]) ? json["gateways"] : [];
  const out: GatewayEndpoint[] = [];
  for (const entry of cluster) {
    if (!isObject(entry)) continue;
    const hash = hex(entry["cert_sha256"]);
    const answering = hash !== undefined && hash === here.hash;
    const g = gateway(
      answering ? (here.webTransportUrl ?? url(entry["webtransport"])) : url(entry["webtransport"]),
      answering ? (here.webSocketUrl ?? url(entry["websocket"])) : url(entry["websocket"]),
      hash,
    );
    if (!g) continue;
    const node = entry["node"];
    if (typeof node === "string" && node !== "") g.node = node;
    out.push(g);
  }
  if (out.length > 0) return out;
  const alone = gateway(here.webTransportUrl, here.webSocketUrl, here.hash);
  return alone ? [alone] : [];
}

/** `cert_sha256` (64 hex digits) as the value WebTransport's `serverCertificateHashes` takes. */
export function certificateHash(sha256Hex: string): WebTransportHashInit {
  const bytes = new Uint8Array(sha256Hex.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(sha256Hex.slice(2 * i, 2 * i + 2), 16);
  return { algorithm: "sha-256", value: bytes };
}

function gateway(webTransportUrl: string | undefined, webSocketUrl: string | undefined, hash: string | undefined): GatewayEndpoint | undefined {
  if (!webTransportUrl && !webSocketUrl) return undefined;
  const g: GatewayEndpoint = {};
  if (webTransportUrl) g.webTransportUrl = webTransportUrl;
  if (webSocketUrl) g.webSocketUrl = webSocketUrl;
  if (webTransportUrl && hash) g.serverCertificateHashes = [certificateHash(hash)];
  return g;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function url(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

function hex(v: unknown): string | undefined {
  return typeof v === "string" && /^[0-9a-fA-F]{64}$/.test(v) ? v.toLowerCase() : undefined;
}
