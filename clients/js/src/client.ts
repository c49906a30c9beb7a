/**
 * The signalgate session: connect (WebTransport first, WebSocket fallback), Hello/Welcome,
 * ordered frames with seq, coalesced Acks, liveness of the gateway, reconnect with jittered
 * back-off, resume (or a fresh session and automatic re-join when resume is refused),
 * request/reply correlation (ClientFrame.id <-> ServerFrame.in_reply_to), and moving a live
 * session to another transport while the page is hidden ("parking", see `startMove`).
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Backoff } from "./backoff.js";
import {
  candidateFromWire,
  candidateToWire,
  descriptionFromWire,
  descriptionToWire,
  presenceName,
  reasonName,
  transportName,
} from "./convert.js";
import { Emitter } from "./emitter.js";
import { errorCodeName, SignalgateError } from "./errors.js";
import {
  AckSchema,
  ClientFrameSchema,
  HelloSchema,
  JoinSchema,
  LeaveSchema,
  PingSchema,
  ServerFrameSchema,
  SignalSchema,
  type ClientFrame,
  type Error as WireError,
  type Peer,
  type ServerFrame,
  type Signal,
  type Welcome,
} from "./gen/signalgate/v1/signalgate_pb.js";
import { documentLifecycle, type LifecycleEvent, type PageLifecycle } from "./lifecycle.js";
import { Liveness } from "./liveness.js";
import { webSocketConnector } from "./transport/websocket.js";
import { webTransportAvailable, webTransportConnector } from "./transport/webtransport.js";
import type { CloseInfo, Connection, Connector, TransportKind } from "./transport/types.js";
import type {
  ClientState,
  DisconnectReason,
  JoinResult,
  PeerInfo,
  SignalgateClientOptions,
  SignalgateEvents,
  SignalPayload,
  TransportChangeReason,
} from "./types.js";

export const SDK_VERSION = "0.1.0";

/** Used until the first Welcome says otherwise. */
const DEFAULT_LIVENESS_TIMEOUT_MS = 10_000;
const DEFAULT_PING_INTERVAL_MS = 4_000;

/**
 * What the client takes from its environment. Everything has a browser default; tests pass
 * fake connectors and clocks.
 */
export interface ClientDeps {
  connectors: Partial<Record<TransportKind, Connector>>;
  webTransportAvailable: () => boolean;
  /** Monotonic milliseconds. Default `performance.now()`. */
  now: () => number;
  /** In [0, 1). Default `Math.random`. */
  random: () => number;
  /** Page visibility and freeze/resume. Default: this page's `document` (always visible without one). */
  lifecycle: PageLifecycle;
}

type Timer = ReturnType<typeof setTimeout>;

/** One connection attempt over one transport, from opening to its end. */
class Link {
  conn: Connection | undefined;
  phase: "opening" | "hello" | "open" | "dead" = "opening";
  helloId = 0;
  /** The Hello carried a resume token. */
  resuming = false;
  timer: Timer | undefined;
  /** A GoAway arrived on this connection. */
  goAway = false;
  readonly abort = new AbortController();

  constructor(
    readonly kind: TransportKind,
    readonly order: readonly TransportKind[],
    readonly index: number,
  ) {}
}

/** A live session moving to another connection (see `startMove`). */
interface Move {
  /** The new connection. */
  link: Link;
  /** The connection the session moves away from (`this.link` until the move ends). */
  from: Link;
  reason: TransportChangeReason;
  startedAt: number;
  /** The Ping on the old connection whose Pong proves the gateway has read all sent on it. */
  drainPingId: number | undefined;
  /** `last_seq` of the move's Hello, which the gateway takes as an Ack. */
  helloLastSeq: bigint;
  /** The old connection ended, or was given up, while the Hello was on its way. */
  fromLost: DisconnectReason | undefined;
}

interface Pending {
  id: number;
  kind: "join" | "leave";
  room: string;
  bytes: Uint8Array;
  /** The connection it was written to; undefined while queued. */
  sentOn: Link | undefined;
  /** An automatic re-join after a fresh session (not asked for by the application). */
  rejoin: boolean;
  timer: Timer;
  resolve(frame: ServerFrame): void;
  reject(err: SignalgateError): void;
}

interface Queued {
  bytes: Uint8Array;
  pending?: Pending;
  onSent?: () => void;
  onDropped?: (err: SignalgateError) => void;
}

export class SignalgateClient extends Emitter<SignalgateEvents> {
  private readonly opts: Required<
    Omit<SignalgateClientOptions, "webTransportUrl" | "webSocketUrl" | "serverCertificateHashes" | "backoff">
  > &
    Pick<SignalgateClientOptions, "webTransportUrl" | "webSocketUrl" | "serverCertificateHashes">;
  private readonly deps: ClientDeps;
  private readonly backoff: Backoff;

  private _state: ClientState = "idle";
  private link: Link | undefined;
  private _transport: TransportKind | undefined;
  private _peerId: string | undefined;
  private _sessionId: string | undefined;
  private resumeToken: string | undefined;
  private _lastSeq = 0n;
  private lastAcked = 0n;
  private unacked = 0;
  private attempt = 0;
  private maxFrameBytes = 0;
  private _rttMs: number | undefined;
  private readonly _rooms = new Set<string>();
  private rejoinRooms: string[] = [];
  /** Set between a refused resume and the fresh session's Welcome. */
  private lostSession: { previousPeerId: string } | undefined;

  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly joinsInFlight = new Map<string, Promise<JoinResult>>();
  private outbox: Queued[] = [];
  private readonly pings = new Map<number, number>();
  /** Until the end of a resume's replay. `moved`: the resume was a move (no `resumed` event). */
  private replay: { pingId: number; count: number; moved: boolean } | undefined;

  private readonly lifecycle: PageLifecycle;
  private unsubscribeLifecycle: (() => void) | undefined;
  private moving: Move | undefined;
  /** While set, requests and signals are queued instead of written (a move is draining). */
  private draining = false;
  /** The session is on WebSocket because the page was hidden: move back when visible. */
  private returnToWebTransport = false;
  /** Between `pagehide` and `pageshow`: the page is being unloaded (or cached); no moves. */
  private pageGone = false;
  /** Counts visibility changes; a move is tried at most once per change. */
  private visibilityEpoch = 0;
  private moveTriedInEpoch = -1;
  /** The pending reconnect waits for a GoAway's reconnect_after_ms (not skipped on resume). */
  private reconnectAfterGoAway = false;

  private liveness: Liveness | undefined;
  private livenessTimer: Timer | undefined;
  private livenessArmedFor = 0;
  private ackTimer: Timer | undefined;
  private reconnectTimer: Timer | undefined;
  private goAwayDelayMs: number | undefined;
  /** Connections given up while the gateway may still hear them: see `abandonLink`. */
  private abandoned: Connection[] = [];
  private connectWaiters: { resolve: () => void; reject: (e: SignalgateError) => void }[] = [];

  constructor(options: SignalgateClientOptions, deps: Partial<ClientDeps> = {}) {
    super();
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
    this.opts = {
      webTransportUrl: options.webTransportUrl,
      webSocketUrl: options.webSocketUrl,
      serverCertificateHashes: options.serverCertificateHashes,
      transport,
      webTransportTimeoutMs: options.webTransportTimeoutMs ?? 3000,
      helloTimeoutMs: options.helloTimeoutMs ?? 10_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 15_000,
      token: options.token ?? "",
      client: options.client ?? `signalgate-js/${SDK_VERSION}`,
      ackEveryFrames: Math.max(1, options.ackEveryFrames ?? 16),
      ackDelayMs: options.ackDelayMs ?? 500,
      maxQueuedFrames: options.maxQueuedFrames ?? 256,
      parkWhenHidden: options.parkWhenHidden ?? transport === "auto",
    };
    this.deps = {
      connectors: {
        webtransport: deps.connectors?.webtransport ?? webTransportConnector(),
        websocket: deps.connectors?.websocket ?? webSocketConnector(),
      },
      webTransportAvailable: deps.webTransportAvailable ?? webTransportAvailable,
      now: deps.now ?? (() => performance.now()),
      random: deps.random ?? Math.random,
      lifecycle: deps.lifecycle ?? documentLifecycle(),
    };
    this.lifecycle = this.deps.lifecycle;
    this.backoff = new Backoff(options.backoff, this.deps.random);
  }

  // ---------------------------------------------------------------------------------------
  // Public surface
  // ---------------------------------------------------------------------------------------

  get state(): ClientState {
    return this._state;
  }

  /** The transport of the current connection (undefined while not connected). */
  get transport(): TransportKind | undefined {
    return this._state === "connected" ? this._transport : undefined;
  }

  /** How other peers see this client; stable across resumes, new after `sessionLost`. */
  get peerId(): string | undefined {
    return this._peerId;
  }

  /** The gateway's id of the current connection (for its logs). */
  get sessionId(): string | undefined {
    return this._sessionId;
  }

  /** Rooms this session is in (as confirmed by the gateway). */
  get rooms(): ReadonlySet<string> {
    return this._rooms;
  }

  /** Highest ServerFrame.seq processed. */
  get lastSeq(): number {
    return Number(this._lastSeq);
  }

  /** Round-trip time of the last answered Ping, in ms. */
  get rttMs(): number | undefined {
    return this._rttMs;
  }

  /**
   * The session is on WebSocket only because the page is hidden (`parkWhenHidden`); it moves
   * back to WebTransport when the page is visible again.
   */
  get parked(): boolean {
    return this.transport === "websocket" && this.returnToWebTransport && this.lifecycle.hidden();
  }

  /**
   * Starts connecting (if not already) and resolves at the next Welcome. Failed attempts are
   * retried with back-off until it succeeds or `close()` is called (which rejects it).
   */
  connect(): Promise<void> {
    if (this._state === "closed") return Promise.reject(new SignalgateError("CLOSED", "client is closed"));
    if (this._state === "connected") return Promise.resolve();
    const promise = new Promise<void>((resolve, reject) => this.connectWaiters.push({ resolve, reject }));
    if (this._state === "idle") {
      this.setState("connecting");
      this.unsubscribeLifecycle = this.lifecycle.subscribe((event) => this.onLifecycle(event));
      this.beginAttempt();
    }
    return promise;
  }

  /** Joins `room`; resolves with the peers already in it. */
  join(room: string): Promise<JoinResult> {
    return this.joinRoom(room, false);
  }

  private joinRoom(room: string, rejoin: boolean): Promise<JoinResult> {
    // A join of the same room already on its way (e.g. the automatic re-join) answers both.
    const inFlight = this.joinsInFlight.get(room);
    if (inFlight) return inFlight;
    const promise = this.request("join", room, rejoin).then((frame) => joinedResult(frame));
    this.joinsInFlight.set(room, promise);
    const clear = () => {
      if (this.joinsInFlight.get(room) === promise) this.joinsInFlight.delete(room);
    };
    promise.then(clear, clear);
    return promise;
  }

  /** Leaves `room`; resolves when the gateway confirms. */
  async leave(room: string): Promise<void> {
    await this.request("leave", room, false);
  }

  /**
   * Signals carry no success reply: the promise resolves with the frame's id once the frame is
   * written to a connection (at once when connected; after the reconnect when queued). An
   * Error the gateway sends about it later is emitted as `error` with `inReplyTo` = that id.
   */
  sendDescription(room: string, to: string, description: RTCSessionDescriptionInit): Promise<number> {
    return this.signal(room, to, { case: "description", value: descriptionToWire(description) });
  }

  sendCandidate(room: string, to: string, candidate: RTCIceCandidateInit): Promise<number> {
    return this.signal(room, to, { case: "candidate", value: candidateToWire(candidate) });
  }

  sendData(room: string, to: string, data: Uint8Array): Promise<number> {
    return this.signal(room, to, { case: "data", value: data });
  }

  /** Closes cleanly (WebSocket 1000 / WebTransport close). No reconnect; cannot be reopened. */
  close(): void {
    if (this._state === "closed") return;
    const wasActive = this._state !== "idle";
    this.setState("closed");
    clearTimeout(this.reconnectTimer);
    this.stopConnectionTimers();
    this.stopLifecycle();
    const link = this.link;
    this.link = undefined;
    if (link) this.killLink(link, "client closed");
    // A connection the session is moving to may hold it already: closing it leaves as well.
    this.cancelMove("client closed");
    this.closeAbandoned("client closed");
    const err = new SignalgateError("CLOSED", "client closed");
    this.failAllPending(() => true, err);
    this.dropOutbox(err);
    this.rejectConnectWaiters(err);
    if (wasActive) this.emit("disconnected", { reason: "closed", willReconnect: false });
  }

  // ---------------------------------------------------------------------------------------
  // Connecting
  // ---------------------------------------------------------------------------------------

  private transportOrder(): TransportKind[] {
    switch (this.opts.transport) {
      case "webtransport":
        return ["webtransport"];
      case "websocket":
        return ["websocket"];
      default: {
        const order: TransportKind[] = [];
        if (this.opts.webTransportUrl && this.deps.webTransportAvailable()) order.push("webtransport");
        if (this.opts.webSocketUrl) order.push("websocket");
        // A hidden page may be frozen at any time (see startMove): connect where that is harmless.
        if (this.parkingEnabled() && this.lifecycle.hidden()) order.reverse();
        return order;
      }
    }
  }

  private beginAttempt(): void {
    this.reconnectTimer = undefined;
    this.tryTransport(this.transportOrder(), 0);
  }

  private tryTransport(order: readonly TransportKind[], index: number): void {
    if (this._state === "closed") return;
    const kind = order[index];
    if (kind === undefined) {
      // Every transport of this round failed.
      this.link = undefined;
      this.scheduleReconnect();
      return;
    }
    const link = new Link(kind, order, index);
    this.link = link;
    this.pings.clear();
    this.openLink(link, () => {
      link.timer = setTimeout(
        () => this.linkFailed(link, `no Welcome within ${this.opts.helloTimeoutMs} ms`),
        this.opts.helloTimeoutMs,
      );
      this.sendHello(link);
    });
  }

  /** The current attempt, or the connection a move is opening. */
  private isLive(link: Link): boolean {
    return this.link === link || this.moving?.link === link;
  }

  /** Opens `link`'s connection; `opened` runs once it can carry frames (phase "hello"). */
  private openLink(link: Link, opened: () => void): void {
    const kind = link.kind;
    const url = (kind === "webtransport" ? this.opts.webTransportUrl : this.opts.webSocketUrl) ?? "";
    const connector = this.deps.connectors[kind];
    const openTimeout = kind === "webtransport" ? this.opts.webTransportTimeoutMs : this.opts.helloTimeoutMs;
    link.timer = setTimeout(
      () => this.linkFailed(link, `${kind} did not open within ${openTimeout} ms`),
      openTimeout,
    );
    let opening: Promise<Connection>;
    try {
      if (!connector) throw new Error(`no connector for ${kind}`);
      opening = connector(
        url,
        {
          onFrame: (bytes) => this.onLinkFrame(link, bytes),
          onClose: (info) => this.onLinkClose(link, info),
        },
        {
          signal: link.abort.signal,
          ...(this.opts.serverCertificateHashes ? { serverCertificateHashes: this.opts.serverCertificateHashes } : {}),
        },
      );
    } catch (err) {
      opening = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    opening.then(
      (conn) => {
        if (!this.isLive(link) || link.phase !== "opening") {
          conn.close("obsolete attempt");
          return;
        }
        link.conn = conn;
        link.phase = "hello";
        clearTimeout(link.timer);
        opened();
      },
      (err: unknown) => this.linkFailed(link, err instanceof Error ? err.message : String(err)),
    );
  }

  /** An attempt failed before Welcome: try the next transport of this round. */
  private linkFailed(link: Link, why: string): void {
    if (this.moving?.link === link) {
      this.moveFailed(why);
      return;
    }
    if (this.link !== link || (link.phase !== "opening" && link.phase !== "hello")) return;
    // A resume Hello may have reached the gateway and moved the session onto this link.
    if (link.phase === "hello" && link.resuming) this.abandonLink(link);
    else this.killLink(link, "failed");
    this.emit("transportFailed", { transport: link.kind, error: why });
    this.tryTransport(link.order, link.index + 1);
  }

  private killLink(link: Link, reason: string): void {
    link.phase = "dead";
    clearTimeout(link.timer);
    link.abort.abort();
    link.conn?.close(reason);
  }

  /**
   * Gives up a link that carries (or may carry) the session, without closing it. Closing is
   * how a client tells the gateway that it is leaving (WebSocket close frame, FIN on the
   * WebTransport stream): the gateway then ends the session at once, peers see the peer LEFT
   * and the resume is refused. When only the gateway-to-client direction failed, what the
   * client sends still arrives, so a close would do exactly that. The link is ignored from
   * now on and closed after the next Welcome (the resume has moved the session away from it
   * by then), or by `close()`.
   */
  private abandonLink(link: Link): void {
    link.phase = "dead";
    clearTimeout(link.timer);
    link.abort.abort();
    if (!link.conn) return;
    this.abandoned.push(link.conn);
    // Bounded: the oldest goes first.
    while (this.abandoned.length > 4) this.abandoned.shift()?.close("abandoned");
  }

  private closeAbandoned(reason: string): void {
    const abandoned = this.abandoned;
    this.abandoned = [];
    for (const conn of abandoned) conn.close(reason);
  }

  private sendHello(link: Link): void {
    const hello = create(HelloSchema, { token: this.opts.token, client: this.opts.client });
    if (this.resumeToken !== undefined) {
      hello.resumeToken = this.resumeToken;
      hello.lastSeq = this._lastSeq;
      hello.attempt = BigInt(++this.attempt);
      link.resuming = true;
      // last_seq acknowledges everything up to it.
      this.lastAcked = this._lastSeq;
    }
    link.helloId = this.nextId++;
    link.conn?.send(encodeClientFrame(link.helloId, { case: "hello", value: hello }));
  }

  private scheduleReconnect(): void {
    if (this._state === "closed") return;
    let delay = this.backoff.next();
    this.reconnectAfterGoAway = this.goAwayDelayMs !== undefined;
    if (this.goAwayDelayMs !== undefined) {
      delay += this.goAwayDelayMs;
      this.goAwayDelayMs = undefined;
    }
    this.emit("reconnecting", { attempt: this.backoff.attempts, delayMs: delay });
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.beginAttempt(), delay);
  }

  // ---------------------------------------------------------------------------------------
  // Inbound
  // ---------------------------------------------------------------------------------------

  private onLinkClose(link: Link, info: CloseInfo): void {
    if (this.moving?.link === link) {
      this.moveFailed(`closed before Welcome: ${info.reason}`);
      return;
    }
    // Connections given up (abandoned, or moved away from: the gateway closes those with
    // 4001 SUPERSEDED) are no longer this.link: their end means nothing.
    if (this.link !== link) return;
    if (link.phase === "opening" || link.phase === "hello") {
      this.linkFailed(link, info.reason);
    } else if (link.phase === "open") {
      this.connectionLost(link.goAway ? "go_away" : info.protocolError ? "protocol_error" : "connection_lost");
    }
  }

  private onLinkFrame(link: Link, bytes: Uint8Array): void {
    if (!this.isLive(link) || link.phase === "dead" || link.phase === "opening") return;
    let frame: ServerFrame;
    try {
      frame = fromBinary(ServerFrameSchema, bytes);
    } catch {
      if (link.phase === "open") this.connectionLost("protocol_error");
      else this.linkFailed(link, "undecodable frame");
      return;
    }
    if (link.phase === "hello") {
      if (this.moving?.link === link) this.onMoveHandshakeFrame(link, frame);
      else this.onHandshakeFrame(link, frame);
      return;
    }
    this.liveness?.onInbound(this.deps.now());
    if (frame.seq === 0n) {
      this.dispatch(link, frame);
      return;
    }
    if (frame.seq <= this._lastSeq) return; // already processed (duplicate or replay overlap)
    this._lastSeq = frame.seq;
    if (this.replay) this.replay.count++;
    this.dispatch(link, frame);
    if (this.link === link && link.phase === "open") this.noteProcessed();
  }

  private onHandshakeFrame(link: Link, frame: ServerFrame): void {
    switch (frame.msg.case) {
      case "welcome":
        this.onWelcome(link, frame.msg.value);
        return;
      case "error": {
        const err = frame.msg.value;
        const code = errorCodeName(err.code);
        if ((code === "RESUME_EXPIRED" || code === "RESUME_GAP") && link.resuming) {
          // Start a fresh session at once, on the same transport.
          this.loseSession(code, err.message);
          this.killLink(link, "resume refused");
          this.tryTransport(link.order, link.index);
        } else if (code === "STALE_ATTEMPT" && link.resuming) {
          // A newer connection of this session holds it. This client never runs two attempts
          // at once, so that one belongs to another holder of the resume token: fighting it
          // would make the two supersede each other forever. Give up.
          this.emit("error", { code, message: err.message, inReplyTo: Number(frame.inReplyTo) });
          this.shutDown("superseded", new SignalgateError("SUPERSEDED", err.message));
        } else {
          this.emit("error", { code, message: err.message, inReplyTo: Number(frame.inReplyTo) });
          this.linkFailed(link, `${code}: ${err.message}`);
        }
        return;
      }
      default:
        // Nothing else is valid before Welcome; ignore it.
        return;
    }
  }

  private onWelcome(link: Link, w: Welcome, moved = false): void {
    clearTimeout(link.timer);
    link.phase = "open";
    this._transport = link.kind;
    this.backoff.reset();
    this.goAwayDelayMs = undefined;
    const resumed = w.resumed && link.resuming;
    if (link.resuming && !w.resumed) {
      // The gateway started a new session although we asked to resume: same as refused.
      this.loseSession("RESUME_EXPIRED", "the gateway started a new session");
    }
    this._peerId = w.peerId;
    this._sessionId = w.sessionId;
    this.resumeToken = w.resumeToken || undefined;
    this.maxFrameBytes = w.maxFrameBytes;
    this.startLiveness(w);
    this.setState("connected");
    this.closeAbandoned("replaced");
    if (!moved) {
      // On WebSocket although WebTransport comes first when visible: the page was hidden.
      this.returnToWebTransport =
        link.kind === "websocket" && link.order[0] === "websocket" && link.order.includes("webtransport");
    }

    if (resumed) {
      this._rooms.clear();
      for (const room of w.rooms) this._rooms.add(room);
      // The gateway replays everything after last_seq before anything new, so the Pong to a
      // Ping sent now marks the end of the replay.
      this.replay = { pingId: this.sendPing(), count: 0, moved: moved };
      this.flushOutbox();
      return;
    }

    this._lastSeq = 0n;
    this.lastAcked = 0n;
    this.unacked = 0;
    this.attempt = 0;
    const rejoin = this.lostSession ? this.rejoinRooms : [];
    this.lostSession = undefined;
    this.rejoinRooms = [];
    // Re-joins go out before queued frames, which may be signals into those rooms.
    for (const room of rejoin) this.rejoin(room);
    this.flushOutbox();
    this.emit("connected", { transport: link.kind, peerId: w.peerId, sessionId: w.sessionId });
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const w of waiters) w.resolve();
    this.reconsiderTransport();
  }

  /** The session is gone: forget it, and remember its rooms for the fresh session. */
  private loseSession(code: "RESUME_EXPIRED" | "RESUME_GAP", message: string): void {
    if (this.resumeToken === undefined) return;
    const previousPeerId = this._peerId ?? "";
    this.resumeToken = undefined;
    this.lostSession = { previousPeerId };
    const rooms = new Set([...this.rejoinRooms, ...this._rooms]);
    // An automatic re-join still unanswered (the fresh session was lost as well) stays wanted.
    for (const p of this.pending.values()) if (p.rejoin && p.sentOn !== undefined) rooms.add(p.room);
    this.rejoinRooms = [...rooms];
    this._rooms.clear();
    this.replay = undefined;
    // Requests written to the old session will never be answered.
    this.failAllPending(
      (p) => p.sentOn !== undefined,
      new SignalgateError("SESSION_LOST", "the session was lost before the gateway answered"),
    );
    this.emit("sessionLost", { previousPeerId, code, message });
  }

  private dispatch(link: Link, frame: ServerFrame): void {
    const msg = frame.msg;
    switch (msg.case) {
      case "joined": {
        this._rooms.add(msg.value.room);
        const p = this.takePending(frame.inReplyTo);
        p?.resolve(frame);
        this.emit("joined", {
          room: msg.value.room,
          peers: msg.value.peers.map(peerInfo),
          rejoined: p?.rejoin ?? false,
        });
        return;
      }
      case "left": {
        this._rooms.delete(msg.value.room);
        this.takePending(frame.inReplyTo)?.resolve(frame);
        return;
      }
      case "peerJoined": {
        const peer = msg.value.peer;
        if (!peer) return;
        this.emit("peerJoined", { room: msg.value.room, peer: peerInfo(peer) });
        return;
      }
      case "peerState": {
        const s = msg.value;
        this.emit("peerState", {
          room: s.room,
          peerId: s.peerId,
          state: presenceName(s.state),
          reason: reasonName(s.reason),
          silentForMs: Number(s.silentForMs),
          detectedBy: transportName(s.detectedBy),
        });
        return;
      }
      case "peerLeft": {
        this.emit("peerLeft", { room: msg.value.room, peerId: msg.value.peerId, reason: reasonName(msg.value.reason) });
        return;
      }
      case "signal": {
        const payload = signalPayload(msg.value);
        if (!payload) return;
        this.emit("signal", { room: msg.value.room, from: msg.value.from, ...payload });
        return;
      }
      case "pong": {
        let id = Number(frame.inReplyTo);
        if (!this.pings.has(id)) id = decodePingPayload(msg.value.payload);
        const sentAt = this.pings.get(id);
        if (sentAt !== undefined) {
          this.pings.delete(id);
          this._rttMs = this.deps.now() - sentAt;
        }
        if (this.replay && this.replay.pingId === id) this.finishReplay(link);
        if (this.moving && this.moving.drainPingId === id && this.moving.from === link) this.sendMoveHello();
        return;
      }
      case "error":
        this.onError(frame, msg.value);
        return;
      case "goAway": {
        link.goAway = true;
        this.goAwayDelayMs = msg.value.reconnectAfterMs;
        this.emit("goAway", { reason: reasonName(msg.value.reason), reconnectAfterMs: msg.value.reconnectAfterMs });
        return;
      }
      default:
        return; // a second Welcome, or a message newer than this SDK
    }
  }

  private onError(frame: ServerFrame, err: WireError): void {
    const inReplyTo = Number(frame.inReplyTo || err.inReplyTo);
    const code = errorCodeName(err.code);
    const p = this.takePending(BigInt(inReplyTo));
    if (p) {
      p.reject(new SignalgateError(code, err.message, inReplyTo));
    } else {
      this.emit("error", { code, message: err.message, inReplyTo });
    }
  }

  private finishReplay(link: Link): void {
    const replayed = this.replay?.count ?? 0;
    const moved = this.replay?.moved ?? false;
    this.replay = undefined;
    // Requests written to an earlier connection and still unanswered after the replay never
    // reached the gateway: send them again (same id).
    for (const p of this.pending.values()) {
      if (p.sentOn !== undefined && p.sentOn !== link) {
        p.sentOn = link;
        link.conn?.send(p.bytes);
      }
    }
    // A move is not a reconnect: `transportChanged` said it all.
    if (!moved) {
      this.emit("resumed", {
        transport: link.kind,
        peerId: this._peerId ?? "",
        sessionId: this._sessionId ?? "",
        replayed,
      });
    }
    this.reconsiderTransport();
  }

  // ---------------------------------------------------------------------------------------
  // Parking: moving a live session between transports while the page is hidden
  // ---------------------------------------------------------------------------------------

  /**
   * Browsers freeze hidden pages (background tabs), and Chromium then closes the page's
   * WebTransport sessions ("Page entered back/forward cache"), so the gateway must report the
   * peer as lost. A frozen page's WebSocket stays open, and the browser's network stack keeps
   * answering the gateway's probes. So while the page is hidden (its JavaScript still runs,
   * there is time to move; once frozen, nothing can be sent) the session moves to WebSocket,
   * and back to WebTransport when the page is visible again.
   */
  private parkingEnabled(): boolean {
    return (
      this.opts.parkWhenHidden &&
      this.opts.transport === "auto" &&
      !!this.opts.webTransportUrl &&
      !!this.opts.webSocketUrl &&
      this.deps.webTransportAvailable()
    );
  }

  private onLifecycle(event: LifecycleEvent): void {
    if (this._state === "closed") return;
    switch (event) {
      case "visibilitychange":
        this.visibilityEpoch++;
        this.reconsiderTransport();
        return;
      case "resume":
        this.checkAfterFreeze();
        return;
      case "freeze":
        // Too late to do anything: nothing sent now would leave before the page freezes.
        return;
      case "pagehide":
        // The page is closing, navigating away or entering the back/forward cache (and is
        // about to be frozen there): the `visibilitychange` to hidden that follows must not
        // open a WebSocket for a session about to end or be frozen. A move under way goes
        // on: cancelling it could close a connection that already holds the session.
        this.pageGone = true;
        return;
      case "pageshow":
        // Shown again (e.g. restored from the back/forward cache).
        this.pageGone = false;
        this.visibilityEpoch++;
        this.reconsiderTransport();
        return;
    }
  }

  private stopLifecycle(): void {
    this.unsubscribeLifecycle?.();
    this.unsubscribeLifecycle = undefined;
  }

  /**
   * The page was frozen and runs again: its timers ran late or not at all. Don't let a
   * reconnect back-off (not one asked for by GoAway) run out first; and prove the connection
   * alive with a Ping at once, so a dead one is noticed within the liveness timeout from now.
   */
  private checkAfterFreeze(): void {
    if (this._state === "reconnecting" && this.reconnectTimer !== undefined && !this.reconnectAfterGoAway) {
      clearTimeout(this.reconnectTimer);
      this.beginAttempt();
      return;
    }
    if (this._state === "connected" && !this.moving && this.link?.phase === "open") this.sendPing();
  }

  /**
   * Starts a move if the session is not on the transport the page's visibility asks for:
   * WebSocket while hidden; WebTransport when visible, if the session was parked. At most one
   * try per visibility change: a failed move (e.g. WebTransport blocked) leaves the session
   * where it is until the next change.
   */
  private reconsiderTransport(): void {
    if (!this.parkingEnabled() || this.pageGone) return;
    const link = this.link;
    if (this._state !== "connected" || this.moving || this.replay || !link || link.phase !== "open" || link.goAway) {
      return;
    }
    // Only a resume can hand a live session over.
    if (this.resumeToken === undefined) return;
    const hidden = this.lifecycle.hidden();
    const target: TransportKind | undefined = hidden
      ? "websocket"
      : this.returnToWebTransport
        ? "webtransport"
        : undefined;
    if (target === undefined || target === link.kind) return;
    if (this.moveTriedInEpoch === this.visibilityEpoch) return;
    this.moveTriedInEpoch = this.visibilityEpoch;
    this.startMove(link, target, hidden ? "hidden" : "visible");
  }

  /**
   * Moves the session from `from` to a new connection over `to`, as a resume that the gateway
   * lets take over the live session (Hello with resume_token, last_seq and attempt + 1; the
   * gateway closes the old connection with 4001 SUPERSEDED and tells the other peers nothing).
   *
   * 1. Open the new connection. Meanwhile the old one carries everything as usual.
   * 2. Drain: from now on requests and signals are queued. A Ping goes out on the old
   *    connection; the gateway reads a connection's frames in order, so its Pong proves that
   *    everything sent before it was processed (frames still in flight on the old connection
   *    when the gateway takes over would be dropped: the client->gateway direction has no
   *    replay).
   * 3. Hello on the new connection. Frames still arriving on the old one are processed (seq
   *    drops what the replay repeats); the old one's end is expected and ignored.
   * 4. Welcome (resumed): the new connection is the session's; the gateway replays every frame
   *    after last_seq, the queue is sent, `transportChanged` fires.
   * If the new connection fails, the session stays on the old one and the queue goes there.
   */
  private startMove(from: Link, to: TransportKind, reason: TransportChangeReason): void {
    const link = new Link(to, [to], 0);
    this.moving = {
      link,
      from,
      reason,
      startedAt: this.deps.now(),
      drainPingId: undefined,
      helloLastSeq: 0n,
      fromLost: undefined,
    };
    this.openLink(link, () => this.drainForMove());
  }

  private drainForMove(): void {
    const m = this.moving;
    if (!m) return;
    if (m.fromLost !== undefined) {
      this.sendMoveHello();
      return;
    }
    this.draining = true;
    m.drainPingId = this.sendPing();
    // Bounded: an old connection that does not answer within a ping interval is probably
    // dead, and its liveness deadline will say so; the Hello goes anyway.
    const wait = this.liveness?.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS;
    m.link.timer = setTimeout(() => this.sendMoveHello(), wait);
  }

  private sendMoveHello(): void {
    const m = this.moving;
    if (!m || m.link.phase !== "hello" || m.link.resuming) return;
    clearTimeout(m.link.timer);
    m.drainPingId = undefined;
    this.draining = true;
    m.helloLastSeq = this._lastSeq;
    this.sendHello(m.link);
    m.link.timer = setTimeout(
      () => this.moveFailed(`no Welcome within ${this.opts.helloTimeoutMs} ms`),
      this.opts.helloTimeoutMs,
    );
  }

  private onMoveHandshakeFrame(link: Link, frame: ServerFrame): void {
    switch (frame.msg.case) {
      case "welcome":
        this.completeMove(link, frame.msg.value);
        return;
      case "error": {
        const err = frame.msg.value;
        const code = errorCodeName(err.code);
        if (link.resuming && (code === "RESUME_EXPIRED" || code === "RESUME_GAP" || code === "STALE_ATTEMPT")) {
          // About the session, not this move: it is gone (the gateway ends it on RESUME_GAP)
          // or held by someone else. The new connection takes the old one's place, and the
          // ordinary rules apply (a fresh session, or stop).
          this.promoteMove(link);
          this.onHandshakeFrame(link, frame);
          return;
        }
        this.emit("error", { code, message: err.message, inReplyTo: Number(frame.inReplyTo) });
        this.moveFailed(`${code}: ${err.message}`);
        return;
      }
      default:
        return;
    }
  }

  /** The move's connection becomes `this.link`; the old one is given up (not closed). */
  private takeOverFrom(m: Move): void {
    this.moving = undefined;
    this.draining = false;
    if (this.link === m.from && m.from.phase !== "dead") this.abandonLink(m.from);
    this.stopConnectionTimers();
    this.replay = undefined;
    this.link = m.link;
    this.pings.clear();
  }

  private promoteMove(link: Link): void {
    const m = this.moving;
    if (!m || m.link !== link) return;
    this.takeOverFrom(m);
    this.setState("reconnecting");
  }

  private completeMove(link: Link, w: Welcome): void {
    const m = this.moving;
    if (!m || m.link !== link) return;
    this.takeOverFrom(m);
    // Acks written to the old connection after the Hello may never have been read.
    this.lastAcked = m.helloLastSeq;
    // The old connection is closed by onWelcome (abandoned ones are): harmless now that the
    // gateway has handed the session to this one; it has closed the old one itself.
    this.onWelcome(link, w, true);
    if (this._lastSeq > this.lastAcked) this.flushAck();
    if (link.phase !== "open") return;
    this.returnToWebTransport = link.kind === "websocket";
    this.emit("transportChanged", {
      from: m.from.kind,
      to: link.kind,
      reason: m.reason,
      tookMs: Math.max(0, Math.round(this.deps.now() - m.startedAt)),
    });
  }

  /** The move's connection failed: the session stays on the old one (unless that is gone too). */
  private moveFailed(why: string): void {
    const m = this.moving;
    if (!m) return;
    this.moving = undefined;
    this.draining = false;
    // After its Hello the new connection may hold the session: given up, never closed (see
    // abandonLink). If the gateway did hand it over, it closes the old one, which then
    // resumes the ordinary way.
    if (m.link.phase === "hello" && m.link.resuming) this.abandonLink(m.link);
    else this.killLink(m.link, "failed");
    this.emit("transportFailed", { transport: m.link.kind, error: why });
    if (this._state === "closed") return;
    if (m.fromLost !== undefined) {
      // The old connection is gone as well: an ordinary loss.
      this.replay = undefined;
      this.setState("reconnecting");
      this.emit("disconnected", { reason: m.fromLost, willReconnect: true });
      if (this._state === "reconnecting") this.scheduleReconnect();
      return;
    }
    this.flushOutbox();
  }

  /** close() / shutDown(): the move's connection is closed (a Hello may have moved the session there). */
  private cancelMove(reason: string): void {
    const m = this.moving;
    if (!m) return;
    this.moving = undefined;
    this.draining = false;
    this.killLink(m.link, reason);
  }

  /**
   * The old connection ended (or its liveness ran out) during a move. Before the Hello is
   * out, the move is dropped and the loss handled as usual. After it, this is expected: the
   * gateway closes the old connection as it hands the session over (4001 SUPERSEDED, possibly
   * before the Welcome arrives on the new one). Wait for the Welcome; `disconnected` only if
   * the move fails. Returns true when the move goes on.
   */
  private moveOutlivesLoss(from: Link, reason: DisconnectReason): boolean {
    const m = this.moving;
    if (!m || m.from !== from) return false;
    if (m.link.phase !== "hello") {
      this.cancelMove("old connection lost");
      return false;
    }
    m.fromLost = reason;
    this.abandonLink(from);
    this.stopConnectionTimers();
    // Still draining: there is nothing left to wait for.
    if (!m.link.resuming) this.sendMoveHello();
    return true;
  }

  // ---------------------------------------------------------------------------------------
  // Connection loss, liveness, acks
  // ---------------------------------------------------------------------------------------

  private connectionLost(reason: DisconnectReason): void {
    const link = this.link;
    if (!link || link.phase !== "open") return;
    if (this.moveOutlivesLoss(link, reason)) return;
    // Not closed: it may still reach the gateway (see abandonLink). A connection that has
    // really ended is not harmed by that.
    this.abandonLink(link);
    this.stopConnectionTimers();
    this.replay = undefined;
    this.setState("reconnecting");
    this.emit("disconnected", { reason, willReconnect: true });
    if (this.link === link && this._state === "reconnecting") this.scheduleReconnect();
  }

  /** Ends everything without a reconnect (STALE_ATTEMPT). */
  private shutDown(reason: DisconnectReason, err: SignalgateError): void {
    const link = this.link;
    this.link = undefined;
    if (link) this.killLink(link, reason);
    this.cancelMove(reason);
    this.stopLifecycle();
    this.closeAbandoned(reason);
    this.stopConnectionTimers();
    clearTimeout(this.reconnectTimer);
    const wasActive = this._state !== "idle";
    this.setState("closed");
    this.failAllPending(() => true, err);
    this.dropOutbox(err);
    this.rejectConnectWaiters(err);
    if (wasActive) this.emit("disconnected", { reason, willReconnect: false });
  }

  private stopConnectionTimers(): void {
    clearTimeout(this.livenessTimer);
    this.livenessTimer = undefined;
    this.liveness = undefined;
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    this.unacked = 0;
  }

  private startLiveness(w: Welcome): void {
    this.liveness = new Liveness(this.deps.now(), {
      livenessTimeoutMs: w.livenessTimeoutMs || DEFAULT_LIVENESS_TIMEOUT_MS,
      pingIntervalMs: w.pingIntervalMs || DEFAULT_PING_INTERVAL_MS,
    });
    this.armLiveness();
  }

  private armLiveness(): void {
    clearTimeout(this.livenessTimer);
    if (!this.liveness) return;
    this.livenessArmedFor = this.liveness.pollTimeout();
    const delay = Math.max(0, this.livenessArmedFor - this.deps.now());
    this.livenessTimer = setTimeout(() => this.onLivenessTimer(), delay);
  }

  private onLivenessTimer(): void {
    this.livenessTimer = undefined;
    if (!this.liveness) return;
    const action = this.liveness.handleTimeout(this.deps.now(), this.livenessArmedFor);
    switch (action.kind) {
      case "dead":
        this.connectionLost("liveness_timeout");
        return;
      case "ping":
      case "drift":
        this.sendPing();
        break;
      case "none":
        break;
    }
    this.armLiveness();
  }

  /** Sends a Ping; returns its id. The payload carries the id too, for gateways that answer
   * Pong without in_reply_to. */
  private sendPing(): number {
    const id = this.nextId++;
    const payload = new Uint8Array(8);
    new DataView(payload.buffer).setBigUint64(0, BigInt(id));
    this.pings.set(id, this.deps.now());
    this.writeNow(encodeClientFrame(id, { case: "ping", value: create(PingSchema, { payload }) }));
    return id;
  }

  /** A frame with seq was processed: Ack it, coalesced. */
  private noteProcessed(): void {
    this.unacked++;
    if (this.unacked >= this.opts.ackEveryFrames) {
      this.flushAck();
    } else if (this.ackTimer === undefined) {
      this.ackTimer = setTimeout(() => this.flushAck(), this.opts.ackDelayMs);
    }
  }

  private flushAck(): void {
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    this.unacked = 0;
    if (this._lastSeq <= this.lastAcked) return;
    if (this.writeNow(encodeClientFrame(0, { case: "ack", value: create(AckSchema, { seq: this._lastSeq }) }))) {
      this.lastAcked = this._lastSeq;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Outbound
  // ---------------------------------------------------------------------------------------

  /** Writes to the open connection; false when there is none. */
  private writeNow(bytes: Uint8Array): boolean {
    const link = this.link;
    if (!link || link.phase !== "open" || !link.conn) return false;
    link.conn.send(bytes);
    return true;
  }

  private assertUsable(): void {
    if (this._state === "closed") throw new SignalgateError("CLOSED", "client is closed");
    if (this._state === "idle") throw new SignalgateError("NOT_CONNECTED", "call connect() first");
  }

  private checkSize(bytes: Uint8Array): void {
    if (this.maxFrameBytes > 0 && bytes.length > this.maxFrameBytes) {
      throw new SignalgateError(
        "FRAME_TOO_LARGE",
        `frame of ${bytes.length} bytes exceeds the gateway's limit of ${this.maxFrameBytes}`,
      );
    }
  }

  /** Sends now, or queues until the next Welcome. */
  private transmit(entry: Queued): void {
    const link = this.link;
    if (!this.draining && link && link.phase === "open" && link.conn) {
      link.conn.send(entry.bytes);
      if (entry.pending) entry.pending.sentOn = link;
      entry.onSent?.();
      return;
    }
    if (this.outbox.length >= this.opts.maxQueuedFrames) {
      throw new SignalgateError("QUEUE_FULL", `more than ${this.opts.maxQueuedFrames} frames queued while reconnecting`);
    }
    this.outbox.push(entry);
  }

  private flushOutbox(): void {
    const queued = this.outbox;
    this.outbox = [];
    for (const entry of queued) this.transmit(entry);
  }

  private dropOutbox(err: SignalgateError): void {
    const queued = this.outbox;
    this.outbox = [];
    for (const entry of queued) entry.onDropped?.(err);
  }

  private request(kind: "join" | "leave", room: string, rejoin: boolean): Promise<ServerFrame> {
    return new Promise<ServerFrame>((resolve, reject) => {
      this.assertUsable();
      const id = this.nextId++;
      const bytes =
        kind === "join"
          ? encodeClientFrame(id, { case: "join", value: create(JoinSchema, { room }) })
          : encodeClientFrame(id, { case: "leave", value: create(LeaveSchema, { room }) });
      this.checkSize(bytes);
      const p: Pending = {
        id,
        kind,
        room,
        bytes,
        sentOn: undefined,
        rejoin,
        timer: setTimeout(() => {
          if (this.pending.get(id) !== p) return;
          this.pending.delete(id);
          this.outbox = this.outbox.filter((q) => q.pending !== p);
          reject(new SignalgateError("TIMEOUT", `no reply to ${kind} ${room} within ${this.opts.requestTimeoutMs} ms`));
        }, this.opts.requestTimeoutMs),
        resolve,
        reject,
      };
      this.pending.set(id, p);
      try {
        this.transmit({ bytes, pending: p });
      } catch (err) {
        clearTimeout(p.timer);
        this.pending.delete(id);
        throw err;
      }
    });
  }

  private rejoin(room: string): void {
    this.joinRoom(room, true).catch((err: unknown) => {
      // CLOSED: nobody wants it any more; SESSION_LOST: it is re-joined on the next session.
      if (err instanceof SignalgateError && err.code !== "CLOSED" && err.code !== "SESSION_LOST") {
        this.emit("error", { code: err.code, message: `re-join ${room}: ${err.detail}`, inReplyTo: err.inReplyTo });
      }
    });
  }

  private takePending(inReplyTo: bigint): Pending | undefined {
    if (inReplyTo === 0n) return undefined;
    const id = Number(inReplyTo);
    const p = this.pending.get(id);
    if (!p) return undefined;
    this.pending.delete(id);
    clearTimeout(p.timer);
    return p;
  }

  private failAllPending(which: (p: Pending) => boolean, err: SignalgateError): void {
    for (const [id, p] of [...this.pending]) {
      if (!which(p)) continue;
      this.pending.delete(id);
      clearTimeout(p.timer);
      this.outbox = this.outbox.filter((q) => q.pending !== p);
      p.reject(err);
    }
  }

  private rejectConnectWaiters(err: SignalgateError): void {
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const w of waiters) w.reject(err);
  }

  private signal(room: string, to: string, payload: Signal["payload"]): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.assertUsable();
      const id = this.nextId++;
      const bytes = encodeClientFrame(id, {
        case: "signal",
        value: create(SignalSchema, { room, to, payload }),
      });
      this.checkSize(bytes);
      this.transmit({ bytes, onSent: () => resolve(id), onDropped: reject });
    });
  }

  private setState(state: ClientState): void {
    this._state = state;
  }
}

function encodeClientFrame(id: number, msg: ClientFrame["msg"]): Uint8Array {
  return toBinary(ClientFrameSchema, create(ClientFrameSchema, { id: BigInt(id), msg }));
}

function decodePingPayload(payload: Uint8Array): number {
  if (payload.length !== 8) return 0;
  return Number(new DataView(payload.buffer, payload.byteOffset, 8).getBigUint64(0));
}

function peerInfo(p: Peer): PeerInfo {
  return { peerId: p.peerId, state: presenceName(p.state) };
}

function joinedResult(frame: ServerFrame): JoinResult {
  if (frame.msg.case !== "joined") throw new SignalgateError("UNSPECIFIED", "unexpected reply to join");
  return { room: frame.msg.value.room, peers: frame.msg.value.peers.map(peerInfo) };
}

function signalPayload(s: Signal): SignalPayload | undefined {
  switch (s.payload.case) {
    case "description": {
      const description = descriptionFromWire(s.payload.value);
      return description ? { description } : undefined;
    }
    case "candidate":
      return { candidate: candidateFromWire(s.payload.value) };
    case "data":
      return { data: s.payload.value };
    default:
      return undefined;
  }
}
