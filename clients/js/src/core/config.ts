/** The client's options with every default applied, as the core reads them. */
import type { BackoffOptions } from "./backoff.js";
import type { SignalgateClientOptions, TransportPreference } from "../types.js";

export const SDK_VERSION = "0.1.0";

export interface CoreConfig {
  transport: TransportPreference;
  /** A WebTransport URL is given and this environment has WebTransport. */
  webTransport: boolean;
  /** A WebSocket URL is given. */
  webSocket: boolean;
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
  if (transport === "webtransport" && !options.webTransportUrl) {
    throw new TypeError("transport 'webtransport' needs webTransportUrl");
  }
  if (transport === "websocket" && !options.webSocketUrl) {
    throw new TypeError("transport 'websocket' needs webSocketUrl");
  }
  if (!options.webTransportUrl && !options.webSocketUrl) {
    throw new TypeError("give webTransportUrl and/or webSocketUrl");
  }
  return {
    transport,
    // Where WebTransport is the only way, it is tried even if the API seems missing: the
    // transportFailed event then says why, instead of a client that never tries anything.
    webTransport:
      !!options.webTransportUrl && (webTransportAvailable || transport === "webtransport" || !options.webSocketUrl),
    webSocket: !!options.webSocketUrl,
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
