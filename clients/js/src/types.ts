/** Public types of the SDK: options, events, results. */
import type { BackoffOptions } from "./backoff.js";
import type { PeerPresence, PeerReason } from "./convert.js";
import type { SignalgateErrorCode } from "./errors.js";
import type { TransportKind, WebTransportHashInit } from "./transport/types.js";

export type { PeerPresence, PeerReason, TransportKind, WebTransportHashInit };

export type TransportPreference = "auto" | TransportKind;

export interface SignalgateClientOptions {
  /** e.g. `https://127.0.0.1:4433/wt`. Without it only WebSocket is used. */
  webTransportUrl?: string;
  /** e.g. `wss://gateway.example:4433/ws` (or `ws://` in development). */
  webSocketUrl?: string;
  /** For self-signed development certificates (ECDSA P-256, validity <= 14 days). */
  serverCertificateHashes?: WebTransportHashInit[];
  /** `auto` (default): WebTransport first, WebSocket when it is missing, fails or is slow. */
  transport?: TransportPreference;
  /**
   * `auto` mode only (ignored when a transport is forced): while the page is hidden, keep the
   * session on WebSocket, and move it back to WebTransport when the page is visible again.
   * Browsers freeze hidden pages, and Chromium closes a frozen page's WebTransport sessions,
   * which the gateway must report as lost; a frozen page's WebSocket stays open and its
   * network stack keeps answering the gateway's probes. Default `true` in `auto` mode.
   */
  parkWhenHidden?: boolean;
  /** How long WebTransport may take to open before WebSocket is tried. Default 3000. */
  webTransportTimeoutMs?: number;
  /** How long an opened connection may take to answer Hello with Welcome. Default 10 000. */
  helloTimeoutMs?: number;
  /** How long join()/leave() wait for the gateway's reply. Default 15 000. */
  requestTimeoutMs?: number;
  /** Sent in Hello.token (authentication; reserved). */
  token?: string;
  /** Sent in Hello.client, for the gateway's logs. Default `signalgate-js/<version>`. */
  client?: string;
  /** Reconnect back-off (full jitter). Defaults: initialMs 250, maxMs 10 000, multiplier 2. */
  backoff?: BackoffOptions;
  /** Ack at the latest after this many ordered frames. Default 16. */
  ackEveryFrames?: number;
  /** ... or this long after the first unacknowledged frame. Default 500. */
  ackDelayMs?: number;
  /** Requests queued while (re)connecting, at most. Default 256. */
  maxQueuedFrames?: number;
}

export type ClientState = "idle" | "connecting" | "connected" | "reconnecting" | "closed";

export interface PeerInfo {
  peerId: string;
  state: PeerPresence;
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
  /** A newer connection of this session took it over (STALE_ATTEMPT). */
  | "superseded"
  /** `close()` was called. */
  | "closed";

/** Why the session moved to another transport. */
export type TransportChangeReason =
  /** The page became hidden: the session moved to WebSocket ("parked"). */
  | "hidden"
  /** The page became visible again: the session moved back to WebTransport. */
  | "visible";

export interface SignalPayload {
  description?: RTCSessionDescriptionInit;
  candidate?: RTCIceCandidateInit;
  data?: Uint8Array;
}

export interface SignalgateEvents {
  /** A new session is established (first connect, or after `sessionLost`). */
  connected: { transport: TransportKind; peerId: string; sessionId: string };
  /**
   * The session was resumed on a new connection and the gateway's replay of what was missed
   * is complete (`replayed` frames, already delivered as their own events).
   */
  resumed: { transport: TransportKind; peerId: string; sessionId: string; replayed: number };
  /** The old session could not be resumed; a fresh one follows (`connected`, then re-joins). */
  sessionLost: { previousPeerId: string; code: "RESUME_EXPIRED" | "RESUME_GAP"; message: string };
  disconnected: { reason: DisconnectReason; willReconnect: boolean };
  /**
   * The session moved to another connection without being interrupted (see `parkWhenHidden`):
   * the gateway handed it over (same peer id, no presence change for the other peers, nothing
   * lost or repeated). `tookMs`: from the decision to the new connection's Welcome.
   */
  transportChanged: { from: TransportKind; to: TransportKind; reason: TransportChangeReason; tookMs: number };
  /**
   * One transport failed before Welcome (the next one of the round is tried, if any); or a
   * move to `transport` failed, and the session stays where it is.
   */
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
  goAway: { reason: PeerReason; reconnectAfterMs: number };
}
