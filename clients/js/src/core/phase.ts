/**
 * The one state of a client: where its connection and its session stand. Each variant carries
 * exactly the data that exists in it, so no flag can contradict another.
 *
 *   idle ──connect──▶ connecting ──opened──▶ handshaking ──Welcome──▶ connected
 *    │                   ▲   │   │ opened, getToken still busy  ▲         │
 *    │ no gateway        │   │   └──────▶ authorizing ──token───┘         │
 *    │ known yet         │   │ fails: next transport of the round; round   │
 *    ▼                   │   │ failed, gateway full / cut off: next gateway│
 *   discovering ──list──▶│   ▼ every gateway failed, getToken failed,      │ lost / liveness / GoAway
 *    │ /endpoints failed │     token refused                               │
 *    └──────────────▶ backingOff ◀────────────────────────────────────────┘
 *   connected ──close 4006 (token expired)──▶ connecting (at once, fresh token)
 *   freeze / pagehide(persisted) from any live phase ──▶ suspended ──resume / pageshow──▶ connecting
 *   close() when connected ──▶ closing (Bye sent) ──gateway closes / grace──▶ closed
 *   close() otherwise, pagehide (unload), STALE_ATTEMPT, superseded (4001), DISCONNECTED (4007),
 *   `maxTokenRefusals` token refusals in a row ──▶ closed
 */
import type { TransportKind } from "../transport/types.js";
import type { GatewayEndpoint } from "../types.js";
import type { Liveness } from "./liveness.js";
import type { TokenRefresh } from "./refresh.js";

/** One transport connection the core asked for (its id names it in inputs and outputs). */
export interface Link {
  readonly id: number;
  readonly kind: TransportKind;
  /** The gateway it goes to. */
  readonly gateway: GatewayEndpoint;
}

/**
 * A round of connection attempts to one gateway: each transport of `order` in turn, until one
 * is welcomed. A round that fails goes on to the next gateway (see `Gateways`).
 */
export interface Round {
  readonly gateway: GatewayEndpoint;
  readonly order: readonly TransportKind[];
  index: number;
  /** WebTransport failed to open in this round (error or timeout; not refused by the gateway). */
  webTransportOpenFailed: boolean;
}

/** The gateway's replay after a resumed Welcome, until `until` (Welcome.replay_until_seq). */
export interface Replay {
  readonly until: bigint;
  /** Frames processed so far in the replay. */
  count: number;
  /** Welcome.last_client_seq: its acknowledgement takes effect with the end of the replay. */
  readonly lastClientSeq: number;
  /** Acks that arrived during the replay, applied with its end. */
  deferredAck: number;
  readonly resent: number;
}

/**
 * The token for the Hello of one connection attempt: known at once (the `token` option, or
 * none), or asked of the app's `getToken` (output `getToken` with `ticket`) in parallel with
 * opening the transport.
 */
export type HelloToken = { readonly kind: "ready"; readonly value: string } | { readonly kind: "fetching"; readonly ticket: number };

export interface Connecting {
  readonly kind: "connecting";
  readonly link: Link;
  readonly round: Round;
  readonly deadline: number;
  token: HelloToken;
}

/** The transport is open; Hello waits for the app's `getToken` (ticket), until `deadline`. */
export interface Authorizing {
  readonly kind: "authorizing";
  readonly link: Link;
  readonly round: Round;
  readonly ticket: number;
  readonly deadline: number;
}

export interface Handshaking {
  readonly kind: "handshaking";
  readonly link: Link;
  readonly round: Round;
  /** The Hello carried a resume token. */
  readonly resuming: boolean;
  readonly deadline: number;
}

export interface Connected {
  readonly kind: "connected";
  readonly link: Link;
  readonly liveness: Liveness;
  /** When the connection counts as healthy (the back-off resets); undefined once it has. */
  healthyAt: number | undefined;
  replay: Replay | undefined;
  /** A GoAway arrived: when to reconnect once this connection ends. */
  goAwayAt: number | undefined;
  /** The token's in-band refresh; undefined without an expiry or without `getToken`. */
  readonly refresh: TokenRefresh | undefined;
}

/**
 * No gateway is known yet (only `endpointsUrl` was given): waiting for the first answer of
 * `GET /endpoints` (the core's `discovery`, which has its own deadline).
 */
export interface Discovering {
  readonly kind: "discovering";
}

export interface BackingOff {
  readonly kind: "backingOff";
  readonly at: number;
  /** Waiting for a GoAway's moment: the page's `resume` does not cut it short. */
  readonly afterGoAway: boolean;
}

export interface Suspended {
  readonly kind: "suspended";
  /** The connection Suspend was written to, until it ends (closed by us on resume). */
  detached: Link | undefined;
}

export interface Closing {
  readonly kind: "closing";
  readonly link: Link;
  readonly deadline: number;
}

export type Phase =
  | { readonly kind: "idle" }
  | Connecting
  | Authorizing
  | Handshaking
  | Connected
  | Discovering
  | BackingOff
  | Suspended
  | Closing
  | { readonly kind: "closed" };
