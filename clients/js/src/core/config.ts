/** The client's options with every default applied, as the core reads them. */
import type { BackoffOptions } from "./backoff.js";
import type { GatewayEndpoint, SignalgateClientOptions, TransportPreference } from "../types.js";
import { sameGateway } from "./gateways.js";

export const SDK_VERSION = "0.1.0";

export interface CoreConfig {
  transport: TransportPreference;
  /** This environment has WebTransport. */
  webTransportAvailable: boolean;
  /**
   * The gateways given in the options: the one of `webTransportUrl` / `webSocketUrl` (with
   * `serverCertificateHashes`) first, then `gateways`. Empty only with `endpointsUrls`.
   */
  gateways: GatewayEndpoint[];
  /** Where to fetch `GET /endpoints` (the list of the cluster's gateways); may be empty. */
  endpointsUrls: string[];
  webTransportTimeoutMs: number;
  webTransportRetryMs: number;
  helloTimeoutMs: number;
  requestTimeoutMs: number;
  token: string;
  /** The app gave `getToken` (the function itself stays with the driver). */
  getToken: boolean;
  maxTokenRefusals: number;
  client: string;
  backoff: BackoffOptions;
  ackEveryFrames: number;
  ackDelayMs: number;
  maxQueuedFrames: number;
  /** After Bye, how long the gateway gets to close the connection before the client does. */
  closeGraceMs: number;
}

/** How long the gateway gets to close the connection after Bye. */
export const CLOSE_GRACE_MS = 1000;

/** Validates the options (TypeError) and fills in the defaults. */
export function resolveConfig(options: SignalgateClientOptions, webTransportAvailable: boolean): CoreConfig {
  const transport = options.transport ?? "auto";
  const gateways: GatewayEndpoint[] = [];
  const add = (g: GatewayEndpoint) => {
    const known = gateways.find((k) => sameGateway(k, g));
    if (!known) gateways.push(g);
    else if (!known.node && g.node) known.node = g.node;
  };
  if (options.webTransportUrl || options.webSocketUrl) {
    add(gatewayOf(options.webTransportUrl, options.webSocketUrl, options.serverCertificateHashes));
  }
  for (const g of options.gateways ?? []) {
    if (!g.webTransportUrl && !g.webSocketUrl) throw new TypeError("every entry of gateways needs webTransportUrl and/or webSocketUrl");
    const copy = gatewayOf(g.webTransportUrl, g.webSocketUrl, g.serverCertificateHashes);
    if (g.node) copy.node = g.node;
    add(copy);
  }
  const endpointsUrls = (typeof options.endpointsUrl === "string" ? [options.endpointsUrl] : (options.endpointsUrl ?? [])).filter(
    (u) => u !== "",
  );
  // Gateways learned from /endpoints later may have the forced transport's URL.
  const learns = endpointsUrls.length > 0;
  if (transport === "webtransport" && !learns && !gateways.some((g) => g.webTransportUrl)) {
    throw new TypeError("transport 'webtransport' needs webTransportUrl");
  }
  if (transport === "websocket" && !learns && !gateways.some((g) => g.webSocketUrl)) {
    throw new TypeError("transport 'websocket' needs webSocketUrl");
  }
  if (gateways.length === 0 && !learns) {
    throw new TypeError("give webTransportUrl and/or webSocketUrl (or gateways, or endpointsUrl)");
  }
  return {
    transport,
    webTransportAvailable,
    gateways,
    endpointsUrls,
    webTransportTimeoutMs: options.webTransportTimeoutMs ?? 3000,
    webTransportRetryMs: options.webTransportRetryMs ?? 300_000,
    helloTimeoutMs: options.helloTimeoutMs ?? 10_000,
    requestTimeoutMs: options.requestTimeoutMs ?? 15_000,
    token: options.token ?? "",
    getToken: typeof options.getToken === "function",
    maxTokenRefusals: Math.max(1, options.maxTokenRefusals ?? 3),
    client: options.client ?? `signalgate-js/${SDK_VERSION}`,
    backoff: options.backoff ?? {},
    ackEveryFrames: Math.max(1, options.ackEveryFrames ?? 16),
    ackDelayMs: options.ackDelayMs ?? 500,
    maxQueuedFrames: Math.max(1, options.maxQueuedFrames ?? 256),
    closeGraceMs: CLOSE_GRACE_MS,
  };
}

function gatewayOf(
  webTransportUrl: string | undefined,
  webSocketUrl: string | undefined,
  hashes: GatewayEndpoint["serverCertificateHashes"],
): GatewayEndpoint {
  const g: GatewayEndpoint = {};
  if (webTransportUrl) g.webTransportUrl = webTransportUrl;
  if (webSocketUrl) g.webSocketUrl = webSocketUrl;
  if (webTransportUrl && hashes && hashes.length > 0) g.serverCertificateHashes = hashes;
  return g;
}

/**
 * The transports `g` offers here. Where WebTransport is its only way, it is tried even if the
 * API seems missing: the transportFailed event then says why, instead of a client that never
 * tries anything.
 */
export function gatewayTransports(
  g: GatewayEndpoint,
  config: Pick<CoreConfig, "transport" | "webTransportAvailable">,
): { webTransport: boolean; webSocket: boolean } {
  return {
    webTransport: !!g.webTransportUrl && (config.webTransportAvailable || config.transport === "webtransport" || !g.webSocketUrl),
    webSocket: !!g.webSocketUrl,
  };
}
