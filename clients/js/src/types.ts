/** Public types of the SDK: options, events, results. */
import type { BackoffOptions } from "./core/backoff.js";
import type { PeerPresence, PeerReason } from "./convert.js";
import type { SignalgateErrorCode } from "./errors.js";
import type { TransportKind, WebTransportHashInit } from "./transport/types.js";

export type { PeerPresence, PeerReason, TransportKind, WebTransportHashInit };

export type TransportPreference = "auto" | TransportKind;

/**
 * One gateway the client may connect to (cluster mode: one entry of the `gateways` array of
 * `GET /endpoints`, see `gatewaysFromEndpoints`). Each gateway has its own certificate: its
 * `serverCertificateHashes` pin WebTransport to it, and to no other.
 */
export interface GatewayEndpoint {
  /** The gateway's node name in its cluster (`gateways[].node`); identifies it across lists. */
  node?: string;
  /** e.g. `https://10.0.0.7:4433/wt`. */
  webTransportUrl?: string;
  /** e.g. `wss://10.0.0.7:4433/ws`. */
  webSocketUrl?: string;
  /** This gateway's own certificate hash(es), for WebTransport (`gateways[].cert_sha256`). */
  serverCertificateHashes?: WebTransportHashInit[];
}

export interface SignalgateClientOptions {
  /** e.g. `https://127.0.0.1:4433/wt`. Without it only WebSocket is used. */
  webTransportUrl?: string;
  /** e.g. `wss://gateway.example:4433/ws` (or `ws://` in development). */
  webSocketUrl?: string;
  /**
   * For self-signed development certificates (ECDSA P-256, validity <= 14 days). They pin the
   * gateway of `webTransportUrl` only; each entry of `gateways` carries its own.
   */
  serverCertificateHashes?: WebTransportHashInit[];
  /**
   * Cluster mode: more gateways (a session resumes on any of them). The gateway of
   * `webTransportUrl` / `webSocketUrl`, if given, is one more. The first connect picks one at
   * random; a connection round that fails on one gateway goes on at once to the next; a GoAway
   * (drain) or close 4009 (the gateway lost the cluster) moves to another one.
   */
  gateways?: GatewayEndpoint[];
  /**
   * Cluster mode: URL(s) of `GET /endpoints` (e.g. `/endpoints`: same origin, or answered with
   * CORS headers). The SDK fetches the list of gateways there when `connect()` is called, and
   * again whenever it leaves a gateway (a failed round, a GoAway, close 4009); each answer
   * replaces the list (`gatewaysUpdated`). Several URLs are asked in turn until one answers.
   * With no other gateway given, the first connection waits for the first answer.
   */
  endpointsUrl?: string | string[];
  /** `auto` (default): WebTransport first, WebSocket when it is missing, fails or is slow. */
  transport?: TransportPreference;
  /** How long WebTransport may take to open before WebSocket is tried. Default 3000. */
  webTransportTimeoutMs?: number;
  /**
   * `auto` mode: after WebTransport could not open (error or timeout) and WebSocket then
   * worked, connect WebSocket-first for this long (UDP is probably blocked here), instead of
   * paying `webTransportTimeoutMs` on every reconnect. A session welcomed over WebTransport
   * clears it. Default 300 000 (5 min).
   */
  webTransportRetryMs?: number;
  /** How long an opened connection may take to answer Hello with Welcome. Default 10 000. */
  helloTimeoutMs?: number;
  /** How long join()/leave() wait for the gateway's reply (Joined / Left). Default 15 000. */
  requestTimeoutMs?: number;
  /**
   * A token (JWT) for Hello.token when the gateway requires authentication. With `getToken`
   * as well, it goes only into the Hellos of the first connection (until the first Welcome or
   * a refusal), e.g. a token rendered into the page; `getToken` provides every later one.
   * Without either, Hello carries an empty token and the gateway decides. See "Tokens".
   */
  token?: string;
  /**
   * Fetches a fresh token from the application's backend. Called for every connection attempt
   * (in parallel with opening the transport; Hello waits for it) and for every in-band
   * refresh before the token expires. A rejection is reported as an `error` event with code
   * `GET_TOKEN_FAILED` and retried with back-off; it never closes the client.
   */
  getToken?: (context: TokenContext) => Promise<string>;
  /**
   * Hellos refused in a row for their token (TOKEN_* codes) before the client gives up:
   * `authFailed`, then `closed` (no more reconnects). Default 3.
   */
  maxTokenRefusals?: number;
  /** Sent in Hello.client, for the gateway's logs. Default `signalgate-js/<version>`. */
  client?: string;
  /** Reconnect back-off (full jitter). Defaults: initialMs 250, maxMs 10 000, multiplier 2. */
  backoff?: BackoffOptions;
  /** Ack at the latest after this many ordered frames. Default 16. */
  ackEveryFrames?: number;
  /** ... or this long after the first unacknowledged frame. Default 500. */
  ackDelayMs?: number;
  /**
   * Join/Leave/Signal frames kept at most: those the gateway has not acknowledged yet plus
   * those waiting for a connection. One more rejects with `QUEUE_FULL`. Default 256.
   */
  maxQueuedFrames?: number;
}

/** What `getToken` is called for. */
export interface TokenContext {
  /** `connect`: for the Hello of a connection attempt; `refresh`: for an in-band Refresh. */
  reason: "connect" | "refresh";
}

/**
 * `connecting`: no session yet; `reconnecting`: a session exists (or just was lost) and a new
 * connection is being made or waited for; `suspended`: the page is frozen or cached (Suspend
 * sent), it resumes when the page runs again; `closing`: Bye sent, waiting for the gateway
 * to close the connection.
 */
export type ClientState =
  | "idle"
  | "connecting"
  | "connected"
  | "reconnecting"
  | "suspended"
  | "closing"
  | "closed";

export interface PeerInfo {
  peerId: string;
  state: PeerPresence;
  /** From the peer's token (`name` claim); absent when empty (no authentication). */
  name?: string;
  /** From the peer's token (`metadata` claim, as the gateway passes it on); absent when empty. */
  metadata?: string;
}

export interface JoinResult {
  room: string;
  /** The other peers in the room when it was joined. */
  peers: PeerInfo[];
}

export type DisconnectReason =
  /** The connection broke (closed by the gateway or the network). */
  | "connection_lost"
  /** Nothing arrived from the gateway for liveness_timeout_ms. */
  | "liveness_timeout"
  /** The gateway announced a shutdown (GoAway). */
  | "go_away"
  /** The gateway sent bytes the SDK cannot read. */
  | "protocol_error"
  /**
   * Another connection took the session over (STALE_ATTEMPT, or close 4001: another page of
   * the same identity, or a copy of the resume token); the client closed instead of fighting.
   */
  | "superseded"
  /** The page is about to be frozen or cached: Suspend was sent; it resumes when it runs again. */
  | "suspended"
  /** `close()` was called, or the page is being unloaded: Bye was sent (when connected). */
  | "closed"
  /** The gateway closed the connection because the token expired (4006): resumed at once with a fresh one. */
  | "token_expired"
  /** The application's backend ended the session for good (Error DISCONNECTED, close 4007). */
  | "disconnected"
  /** Hello was refused for its token `maxTokenRefusals` times in a row (see `authFailed`). */
  | "auth_failed";

export interface SignalPayload {
  description?: RTCSessionDescriptionInit;
  candidate?: RTCIceCandidateInit;
  data?: Uint8Array;
}

export interface SignalgateEvents {
  /** A new session is established (first connect, or after `sessionLost`). */
  connected: { transport: TransportKind; peerId: string; connectionId: string };
  /**
   * The session was resumed on a new connection and the gateway's replay of what was missed
   * is complete: `replayed` frames (already delivered as their own events); `resent`: frames
   * of ours the gateway had not processed, sent again on the new connection.
   */
  resumed: { transport: TransportKind; peerId: string; connectionId: string; replayed: number; resent: number };
  /**
   * The old session could not be resumed: what was not acknowledged rejected with
   * `SESSION_LOST`; a fresh session follows (`connected`, then automatic re-joins).
   */
  sessionLost: { previousPeerId: string; code: "RESUME_EXPIRED" | "RESUME_GAP" | "IDENTITY_MISMATCH"; message: string };
  /** `message`: with `disconnected` and `auth_failed`, the gateway's explanation. */
  disconnected: { reason: DisconnectReason; willReconnect: boolean; message?: string };
  /**
   * The list of gateways changed: `GET /endpoints` (`endpointsUrl`) answered with another one.
   * The next connection rounds use it.
   */
  gatewaysUpdated: { gateways: GatewayEndpoint[] };
  /** One transport failed before Welcome (the next one of the round is tried, if any). */
  transportFailed: { transport: TransportKind; error: string };
  /** The next connection attempt starts in `delayMs` (attempt counts failures since success). */
  reconnecting: { attempt: number; delayMs: number };
  /** A Joined reply: from `join()` or from the automatic re-join after a fresh session. */
  joined: { room: string; peers: PeerInfo[]; rejoined: boolean };
  peerJoined: { room: string; peer: PeerInfo };
  peerState: {
    room: string;
    peerId: string;
    state: PeerPresence;
    reason: PeerReason;
    /** For `unreachable`: how long nothing had arrived from the peer. */
    silentForMs: number;
    detectedBy: TransportKind | "unspecified";
  };
  peerLeft: { room: string; peerId: string; reason: PeerReason };
  signal: { room: string; from: string } & SignalPayload;
  /** An Error frame that no pending promise took (e.g. about a signal, or unsolicited). */
  error: { code: SignalgateErrorCode; message: string; inReplyTo: number };
  /** The gateway is going away; the SDK reconnects at a random moment in [after, after + spread]. */
  goAway: { reason: PeerReason; reconnectAfterMs: number; spreadMs: number };
  /** The gateway accepted a new token (Refreshed): it is valid for `expiresInMs` from now. */
  tokenRefreshed: { expiresInMs: number };
  /**
   * Hello was refused for its token `maxTokenRefusals` times in a row (the last refusal's
   * code and message): the client is closed and does not reconnect. The app decides (log in
   * again, then a new client).
   */
  authFailed: { code: SignalgateErrorCode; message: string };
}
