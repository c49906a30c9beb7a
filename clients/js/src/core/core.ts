/**
 * The client's sans-IO core: one state (`Phase`), pure transitions, no sockets, no timers, no
 * promises, no DOM. Like quinn-proto and str0m, it takes inputs with the caller's `now`
 * (monotonic milliseconds) and queues outputs:
 *
 *   inputs:  connect / join / leave / signal / close (app), lifecycle (page), opened /
 *            openFailed / received / closed (transport, per link), tokenReady / tokenFailed
 *            (the app's getToken, per ticket), endpointsReady / endpointsFailed (GET /endpoints,
 *            per ticket), handleTimeout (clock)
 *   outputs: pollOutput() → open / write / close a link, call getToken, fetch /endpoints, emit
 *            an event, resolve / reject an app request;  pollTimeout() → when to call
 *            handleTimeout next.
 *
 * The driver (client.ts) performs the outputs in order and never decides anything itself.
 */
import { create } from "@bufbuild/protobuf";
import { reasonName } from "../convert.js";
import { errorCodeName, SignalgateError } from "../errors.js";
import {
  AckSchema,
  ByeSchema,
  HelloSchema,
  JoinSchema,
  LeaveSchema,
  PingSchema,
  RefreshSchema,
  SignalSchema,
  SuspendSchema,
  type Error as WireError,
  type ServerFrame,
  type Signal,
  type Welcome,
} from "../gen/signalgate/v1/signalgate_pb.js";
import type { LifecycleEvent } from "../lifecycle.js";
import type { CloseInfo, TransportKind } from "../transport/types.js";
import type { ServerErrorCode } from "../errors.js";
import type { ClientState, DisconnectReason, GatewayEndpoint, JoinResult, SignalgateEvents } from "../types.js";
import { Backoff, spreadDelay } from "./backoff.js";
import { gatewayTransports, type CoreConfig } from "./config.js";
import { gatewaysFromEndpoints } from "./endpoints.js";
import { joinResult, peerEvent } from "./events.js";
import { InboundStream } from "./inbound.js";
import { Liveness } from "./liveness.js";
import { Outbox, type OutEntry } from "./outbox.js";
import { Gateways } from "./gateways.js";
import type { CoreEvent, Output } from "./output.js";
import type { Authorizing, Connected, Connecting, Handshaking, HelloToken, Link, Phase, Round } from "./phase.js";
import { TokenRefresh } from "./refresh.js";
import { Requests, type Waiter } from "./requests.js";
import { TransportChoice } from "./transport-choice.js";
import { encodeClientFrame, decodeServerFrame, pingIdOf, pingPayload, type NumberedMsg } from "./wire.js";

/** Used when a Welcome leaves them out. */
const DEFAULT_LIVENESS_TIMEOUT_MS = 10_000;
const DEFAULT_PING_INTERVAL_MS = 4_000;

/** Close codes the gateway uses (WebSocket close code = WebTransport session error code). */
export const CLOSE_SUPERSEDED = 4001;
export const CLOSE_TOKEN_EXPIRED = 4006;
export const CLOSE_DISCONNECTED = 4007;
export const CLOSE_GATEWAY_FULL = 4008;
/** Cluster mode: the gateway is cut off from the cluster (GoAway GATEWAY_LOST before it). */
export const CLOSE_GATEWAY_LOST = 4009;

/** A Hello refused for its token (the only codes that count towards `maxTokenRefusals`). */
function isTokenRefusal(code: ServerErrorCode): boolean {
  return code.startsWith("TOKEN_");
}

/** A `GET /endpoints` under way: the `tried`-th of the configured URLs, `url` its index. */
interface Discovery {
  readonly ticket: number;
  readonly url: number;
  readonly tried: number;
  readonly deadline: number;
  /** Why the URLs tried before it failed. */
  readonly errors: readonly string[];
}

/** What a resume needs; undefined when there is no session to resume. */
interface Session {
  readonly peerId: string;
  resumeToken: string;
  /** Hello.attempt of the last resume Hello (>= 1 once sent; strictly increasing). */
  attempt: number;
}

/** STORAGE_UNAVAILABLE refusals remembered, to recognise the second copy of each. */
const STORAGE_REFUSALS_KEPT = 1024;

export class ClientCore {
  private phase: Phase = { kind: "idle" };
  private readonly outputs: Output[] = [];
  private readonly backoff: Backoff;
  private readonly choice: TransportChoice;
  private readonly gatewayList: Gateways;
  private readonly inbound: InboundStream;
  private readonly outbox: Outbox;
  /**
   * Frames refused with STORAGE_UNAVAILABLE, newest last: a durable gateway sends that Error
   * twice (at once, and again in the stream, which survives a lost connection); the second is
   * no news.
   */
  private readonly storageRefused = new Set<number>();
  private readonly requests = new Requests();
  /** Ping id → when it was sent (for rttMs). */
  private readonly pings = new Map<number, number>();
  private readonly joinedRooms = new Set<string>();
  /** Rooms to join again on the fresh session that follows a lost one. */
  private readonly rejoinRooms = new Set<string>();
  private connectWaiters: number[] = [];
  private session: Session | undefined;
  /** A Welcome was ever received: later connection rounds are "reconnecting". */
  private hadSession = false;
  private peer: string | undefined;
  private connection: string | undefined;
  private maxFrameBytes = 0;
  private rtt: number | undefined;
  private nextLinkId = 1;
  private nextFrameId = 1;
  private nextReq = 1;
  private nextTicket = 1;
  /** Hellos refused for their token in a row (reset by a Welcome). */
  private tokenRefusals = 0;
  /** With `getToken`: the `token` option was used up (a Welcome, or a refusal). */
  private staticTokenSpent = false;
  /** Welcome.identity of the last Welcome. */
  private welcomedIdentity: string | undefined;
  /** When the session's token expires (from Welcome / Refreshed); undefined without one. */
  private tokenExpiry: number | undefined;
  /** The `GET /endpoints` under way, if any. */
  private discovery: Discovery | undefined;
  /** Which of `endpointsUrls` to ask first: the last one that answered. */
  private endpointsUrl = 0;
  private nextFetch = 1;

  constructor(
    private readonly config: CoreConfig,
    private readonly random: () => number = Math.random,
  ) {
    this.backoff = new Backoff(config.backoff, random);
    this.choice = new TransportChoice(config);
    this.gatewayList = new Gateways(config.gateways, random);
    this.inbound = new InboundStream(config.ackEveryFrames, config.ackDelayMs);
    this.outbox = new Outbox(config.maxQueuedFrames);
  }

  // ---------------------------------------------------------------------------------------
  // Reading
  // ---------------------------------------------------------------------------------------

  get state(): ClientState {
    switch (this.phase.kind) {
      case "connecting":
      case "authorizing":
      case "handshaking":
      case "discovering":
      case "backingOff":
        return this.hadSession ? "reconnecting" : "connecting";
      default:
        return this.phase.kind;
    }
  }

  /** The phase itself, for tests and debugging. */
  get phaseKind(): Phase["kind"] {
    return this.phase.kind;
  }

  get transport(): TransportKind | undefined {
    return this.phase.kind === "connected" ? this.phase.link.kind : undefined;
  }

  /** The gateway of the current connection (undefined while not connected). */
  get gateway(): GatewayEndpoint | undefined {
    return this.phase.kind === "connected" ? this.phase.link.gateway : undefined;
  }

  /** The gateways known: from the options, or the last answer of `GET /endpoints`. */
  get gateways(): readonly GatewayEndpoint[] {
    return this.gatewayList.all;
  }

  get peerId(): string | undefined {
    return this.peer;
  }

  get connectionId(): string | undefined {
    return this.connection;
  }

  get rooms(): ReadonlySet<string> {
    return this.joinedRooms;
  }

  get lastSeq(): number {
    return Number(this.inbound.lastSeq);
  }

  get rttMs(): number | undefined {
    return this.rtt;
  }

  /** Welcome.identity: the token's `sub` ('' without authentication; undefined before a Welcome). */
  get identity(): string | undefined {
    return this.welcomedIdentity;
  }

  /** When the session's token expires, on the caller's clock (undefined: no expiry known). */
  get tokenExpiresAt(): number | undefined {
    return this.tokenExpiry;
  }

  /** Join/Leave/Signal frames kept: not yet acknowledged, or waiting for a connection. */
  get unacknowledged(): number {
    return this.outbox.size;
  }

  pollOutput(): Output | undefined {
    return this.outputs.shift();
  }

  /** When `handleTimeout` next has work (undefined: nothing is timed). */
  pollTimeout(): number | undefined {
    let next = this.requests.nextDeadline();
    const consider = (t: number | undefined) => {
      if (t !== undefined && (next === undefined || t < next)) next = t;
    };
    consider(this.discovery?.deadline);
    const p = this.phase;
    switch (p.kind) {
      case "connecting":
      case "authorizing":
      case "handshaking":
      case "closing":
        consider(p.deadline);
        break;
      case "backingOff":
        consider(p.at);
        break;
      case "connected":
        consider(p.liveness.pollTimeout());
        consider(p.healthyAt);
        consider(p.refresh?.pollTimeout());
        consider(this.inbound.ackDue);
        break;
      default:
        break;
    }
    return next;
  }

  // ---------------------------------------------------------------------------------------
  // App inputs. Each returns the request number its resolve/reject output will carry.
  // ---------------------------------------------------------------------------------------

  connect(now: number): number {
    const req = this.nextReq++;
    switch (this.phase.kind) {
      case "closing":
      case "closed":
        this.reject(req, new SignalgateError("CLOSED", "client is closed"));
        break;
      case "connected":
        this.resolve(req, undefined);
        break;
      case "idle":
        this.connectWaiters.push(req);
        // The list of gateways is asked for at once; the first round does not wait for it
        // unless no gateway is known at all.
        this.discover(now);
        this.startRound(now);
        break;
      default:
        this.connectWaiters.push(req);
    }
    return req;
  }

  join(now: number, room: string): number {
    const req = this.nextReq++;
    if (!this.usable(req)) return req;
    const waiter = { req, deadline: now + this.config.requestTimeoutMs };
    // A join of the same room already on its way (e.g. the automatic re-join) answers both.
    const inFlight = this.requests.joinInFlight(room);
    if (inFlight) inFlight.waiters.push(waiter);
    else this.request("join", room, waiter);
    return req;
  }

  leave(now: number, room: string): number {
    const req = this.nextReq++;
    if (this.usable(req)) this.request("leave", room, { req, deadline: now + this.config.requestTimeoutMs });
    return req;
  }

  signal(_now: number, room: string, to: string, payload: Signal["payload"]): number {
    const req = this.nextReq++;
    if (!this.usable(req)) return req;
    const msg: NumberedMsg = { case: "signal", value: create(SignalSchema, { room, to, payload }) };
    const entry: OutEntry = { id: this.nextFrameId++, msg, req, seq: 0, bytes: undefined };
    if (!this.outbox.add(entry)) {
      this.reject(req, this.queueFull());
      return req;
    }
    this.flushOutbox();
    return req;
  }

  /**
   * Leaves for good: Bye when connected, then the gateway closes the connection (closing; the
   * client closes it after `closeGraceMs`). Without a session on a connection there is no one
   * to say Bye to: the session, if any, lingers UNREACHABLE until its resume window ends.
   */
  close(now: number): void {
    const p = this.phase;
    if (p.kind === "closing" || p.kind === "closed") return;
    if (p.kind === "connected") {
      this.write(p.link, encodeClientFrame(0, 0, { case: "bye", value: create(ByeSchema) }));
      this.detach();
      this.phase = { kind: "closing", link: p.link, deadline: now + this.config.closeGraceMs };
    } else {
      this.closeLinkOf(p, "client closed");
      this.phase = { kind: "closed" };
    }
    this.discovery = undefined;
    this.failEverything(new SignalgateError("CLOSED", "client closed"));
    if (p.kind !== "idle") this.emit("disconnected", { reason: "closed", willReconnect: false });
  }

  // ---------------------------------------------------------------------------------------
  // Page lifecycle
  // ---------------------------------------------------------------------------------------

  lifecycle(now: number, event: LifecycleEvent): void {
    switch (event.type) {
      case "freeze":
        this.suspend();
        return;
      case "pagehide":
        if (event.persisted) this.suspend();
        else this.unload(now);
        return;
      case "resume":
        this.wake(now);
        return;
      case "pageshow":
        if (event.persisted) this.wake(now);
        return;
    }
  }

  /**
   * The page is about to be frozen or cached. Suspend goes out now (it is still read by the
   * gateway before the browser closes the connection), and nothing is decided while frozen:
   * no reconnect, no liveness verdict, whatever happens to the connection.
   */
  private suspend(): void {
    const p = this.phase;
    switch (p.kind) {
      case "connected":
        this.write(p.link, encodeClientFrame(0, 0, { case: "suspend", value: create(SuspendSchema) }));
        this.detach();
        this.phase = { kind: "suspended", detached: p.link };
        this.emit("disconnected", { reason: "suspended", willReconnect: true });
        return;
      case "connecting":
      case "authorizing":
      case "handshaking":
        this.closeLink(p.link, "page suspended");
        this.phase = { kind: "suspended", detached: undefined };
        return;
      case "discovering":
      case "backingOff":
        this.phase = { kind: "suspended", detached: undefined };
        return;
      default:
        return;
    }
  }

  /** The page is unloaded for good: Bye, written right now, then the connection is closed. */
  private unload(now: number): void {
    const p = this.phase;
    if (p.kind === "idle" || p.kind === "closed") return;
    this.close(now);
    const q = this.phase;
    if (q.kind === "closing") {
      this.closeLink(q.link, "page unloaded");
      this.phase = { kind: "closed" };
    }
  }

  /** The page runs again: resume at once if suspended; prove a surviving connection with a Ping. */
  private wake(now: number): void {
    const p = this.phase;
    switch (p.kind) {
      case "suspended":
        if (p.detached) this.closeLink(p.detached, "replaced after suspend");
        this.startRound(now);
        return;
      case "connected":
        this.sendPing(now, p.link);
        return;
      case "backingOff":
        // Its timer ran late or not at all while frozen. A GoAway's moment still holds: the
        // whole point is that the gateway's clients do not all come back at once.
        if (!p.afterGoAway) this.startRound(now);
        return;
      default:
        return;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Transport inputs
  // ---------------------------------------------------------------------------------------

  opened(now: number, link: number): void {
    const p = this.phase;
    if (p.kind !== "connecting" || p.link.id !== link) {
      this.out({ type: "close", link, reason: "obsolete attempt" });
      return;
    }
    if (p.token.kind === "ready") {
      this.sendHello(now, p.link, p.round, p.token.value);
      return;
    }
    // The app's getToken is still busy: Hello waits for it (at most helloTimeoutMs).
    this.phase = {
      kind: "authorizing",
      link: p.link,
      round: p.round,
      ticket: p.token.ticket,
      deadline: now + this.config.helloTimeoutMs,
    };
  }

  openFailed(now: number, link: number, error: string): void {
    const p = this.phase;
    if (p.kind === "connecting" && p.link.id === link) this.attemptFailed(now, p, error);
  }

  received(now: number, link: number, bytes: Uint8Array): void {
    const p = this.phase;
    if ((p.kind !== "handshaking" && p.kind !== "connected") || p.link.id !== link) return;
    let frame: ServerFrame;
    try {
      frame = decodeServerFrame(bytes);
    } catch {
      if (p.kind === "handshaking") this.attemptFailed(now, p, "undecodable frame");
      else this.lose(now, p, "protocol_error");
      return;
    }
    if (p.kind === "handshaking") this.onHandshakeFrame(now, p, frame);
    else this.onSessionFrame(now, p, frame);
  }

  closed(now: number, link: number, info: CloseInfo): void {
    const p = this.phase;
    switch (p.kind) {
      case "connecting":
      case "authorizing":
      case "handshaking":
        if (p.link.id !== link) return;
        if (info.code === CLOSE_GATEWAY_FULL) this.gatewayRefused(now, p, "gateway full", `gateway full (${CLOSE_GATEWAY_FULL}): ${info.reason}`);
        else if (info.code === CLOSE_GATEWAY_LOST) this.gatewayRefused(now, p, "gateway lost", `gateway lost (${CLOSE_GATEWAY_LOST}): ${info.reason}`);
        else this.attemptFailed(now, p, `closed before Welcome: ${info.reason}`);
        return;
      case "connected":
        if (p.link.id !== link) return;
        if (info.code === CLOSE_TOKEN_EXPIRED) {
          this.tokenExpired(now, p);
          return;
        }
        if (info.code === CLOSE_SUPERSEDED) {
          // Another connection took the session over. This client never runs two, so it is
          // someone else: another page of the same identity (with tokens, the identity owns
          // its session) or a copy of the resume token. Taking it back would start a fight
          // that never ends, as with STALE_ATTEMPT.
          this.shutDown("superseded", new SignalgateError("SUPERSEDED", "another connection took this session over"));
          return;
        }
        if (info.code === CLOSE_DISCONNECTED) {
          // Normally the Error DISCONNECTED before it has already ended everything.
          this.shutDown("disconnected", new SignalgateError("DISCONNECTED", info.reason), info.reason);
          return;
        }
        // 4009: the gateway is cut off from its cluster (and said GoAway GATEWAY_LOST first):
        // the session continues on another gateway.
        this.lose(
          now,
          p,
          p.goAwayAt !== undefined ? "go_away" : info.protocolError ? "protocol_error" : "connection_lost",
          p.goAwayAt !== undefined || info.code === CLOSE_GATEWAY_LOST,
        );
        return;
      case "closing":
        if (p.link.id === link) this.phase = { kind: "closed" };
        return;
      case "suspended":
        // Expected (4005 after Suspend, or the browser closing a frozen page's connections).
        if (p.detached?.id === link) p.detached = undefined;
        return;
      default:
        return;
    }
  }

  // ---------------------------------------------------------------------------------------
  // The app's getToken (outputs `getToken` with a ticket)
  // ---------------------------------------------------------------------------------------

  tokenReady(now: number, ticket: number, token: string): void {
    const p = this.phase;
    switch (p.kind) {
      case "connecting":
        if (p.token.kind === "fetching" && p.token.ticket === ticket) p.token = { kind: "ready", value: token };
        return;
      case "authorizing":
        if (p.ticket === ticket) this.sendHello(now, p.link, p.round, token);
        return;
      case "connected": {
        const r = p.refresh;
        if (!r?.isTicket(ticket)) return;
        const id = this.nextFrameId++;
        this.write(p.link, encodeClientFrame(id, 0, { case: "refresh", value: create(RefreshSchema, { token }) }));
        r.sent(now, id);
        return;
      }
      default:
        return; // a ticket nobody waits for any more
    }
  }

  tokenFailed(now: number, ticket: number, message: string): void {
    const p = this.phase;
    switch (p.kind) {
      case "connecting":
        if (p.token.kind === "fetching" && p.token.ticket === ticket) this.helloTokenFailed(now, p, message);
        return;
      case "authorizing":
        if (p.ticket === ticket) this.helloTokenFailed(now, p, message);
        return;
      case "connected":
        if (!p.refresh?.isTicket(ticket)) return;
        this.emit("error", { code: "GET_TOKEN_FAILED", message, inReplyTo: 0 });
        p.refresh.failed(now);
        return;
      default:
        return;
    }
  }

  // ---------------------------------------------------------------------------------------
  // GET /endpoints (outputs `fetchEndpoints` with a ticket)
  // ---------------------------------------------------------------------------------------

  /** The JSON of `GET /endpoints`: its gateways replace the list (see `gatewaysFromEndpoints`). */
  endpointsReady(now: number, ticket: number, json: unknown): void {
    const d = this.discovery;
    if (!d || d.ticket !== ticket) return;
    const list = gatewaysFromEndpoints(json);
    if (list.length === 0) {
      this.endpointsFailed(now, ticket, "no gateway in the answer");
      return;
    }
    this.discovery = undefined;
    this.endpointsUrl = d.url;
    if (this.gatewayList.replace(list)) this.emit("gatewaysUpdated", { gateways: [...list] });
    if (this.phase.kind === "discovering") this.startRound(now);
  }

  endpointsFailed(now: number, ticket: number, message: string): void {
    const d = this.discovery;
    if (!d || d.ticket !== ticket) return;
    const urls = this.config.endpointsUrls;
    const errors = [...d.errors, `${urls[d.url] ?? "?"}: ${message}`];
    if (d.tried + 1 < urls.length) {
      this.fetchEndpoints(now, (d.url + 1) % urls.length, d.tried + 1, errors);
      return;
    }
    this.discovery = undefined;
    // A refresh that fails is no error while a list is in use (the gateway that served the
    // page may be the one draining): the list stays. Without one, nothing can connect.
    if (this.phase.kind !== "discovering") return;
    this.emit("error", { code: "ENDPOINTS_FAILED", message: errors.join("; "), inReplyTo: 0 });
    this.backOff(now, undefined);
  }

  /** Asks `GET /endpoints` for the list of gateways, unless it is asked already (or not configured). */
  private discover(now: number): void {
    if (this.config.endpointsUrls.length === 0 || this.discovery) return;
    this.fetchEndpoints(now, this.endpointsUrl, 0, []);
  }

  private fetchEndpoints(now: number, url: number, tried: number, errors: readonly string[]): void {
    const ticket = this.nextFetch++;
    this.discovery = { ticket, url, tried, deadline: now + this.config.helloTimeoutMs, errors };
    this.out({ type: "fetchEndpoints", ticket, url: this.config.endpointsUrls[url] ?? "" });
  }

  // ---------------------------------------------------------------------------------------
  // Clock
  // ---------------------------------------------------------------------------------------

  handleTimeout(now: number): void {
    const d = this.discovery;
    if (d && now >= d.deadline) this.endpointsFailed(now, d.ticket, `no answer within ${this.config.helloTimeoutMs} ms`);
    for (const { request, waiter } of this.requests.expire(now)) {
      this.reject(
        waiter.req,
        new SignalgateError("TIMEOUT", `no reply to ${request.kind} ${request.room} within ${this.config.requestTimeoutMs} ms`),
      );
      // Nobody waits for it any more: a frame not yet written is dropped (no seq used yet).
      if (request.waiters.length === 0 && !request.rejoin) this.outbox.dropQueued(request.id);
    }
    const p = this.phase;
    switch (p.kind) {
      case "connecting":
        if (now >= p.deadline) {
          const ms = p.link.kind === "webtransport" ? this.config.webTransportTimeoutMs : this.config.helloTimeoutMs;
          this.attemptFailed(now, p, `${p.link.kind} did not open within ${ms} ms`);
        }
        return;
      case "authorizing":
        if (now >= p.deadline) this.helloTokenFailed(now, p, `getToken did not answer within ${this.config.helloTimeoutMs} ms`);
        return;
      case "handshaking":
        if (now >= p.deadline) this.attemptFailed(now, p, `no Welcome within ${this.config.helloTimeoutMs} ms`);
        return;
      case "backingOff":
        if (now >= p.at) this.startRound(now);
        return;
      case "closing":
        if (now >= p.deadline) {
          this.closeLink(p.link, "bye");
          this.phase = { kind: "closed" };
        }
        return;
      case "connected":
        this.connectedTimeout(now, p);
        return;
      default:
        return;
    }
  }

  private connectedTimeout(now: number, p: Connected): void {
    const action = p.liveness.handleTimeout(now);
    if (action.kind === "dead") {
      this.lose(now, p, "liveness_timeout");
      return;
    }
    if (action.kind === "ping" || action.kind === "drift") this.sendPing(now, p.link);
    // Only a connection that stayed up for a whole liveness timeout proves the path good; a
    // Welcome alone does not (a gateway that welcomes and then drops would be retried in a
    // tight loop).
    if (p.healthyAt !== undefined && now >= p.healthyAt) {
      this.backoff.reset();
      p.healthyAt = undefined;
    }
    const due = this.inbound.ackDue;
    if (due !== undefined && now >= due) this.sendAck(p.link);
    const refresh = p.refresh?.handleTimeout(now);
    if (refresh?.kind === "fetch") {
      this.refreshNow(now, p);
    } else if (refresh?.kind === "late") {
      this.emit(
        "error",
        refresh.what === "getToken"
          ? { code: "GET_TOKEN_FAILED", message: `getToken did not answer within ${this.config.helloTimeoutMs} ms`, inReplyTo: 0 }
          : { code: "TIMEOUT", message: `no reply to Refresh within ${this.config.requestTimeoutMs} ms`, inReplyTo: 0 },
      );
    }
  }

  /** Asks the app for a token and Refreshes with it once it comes (tokenReady). */
  private refreshNow(now: number, c: Connected): void {
    c.refresh?.fetching(now, this.requestToken("refresh"));
  }

  // ---------------------------------------------------------------------------------------
  // Connecting
  // ---------------------------------------------------------------------------------------

  /** A round to the gateway whose turn it is; without any gateway known, waits for /endpoints. */
  private startRound(now: number): void {
    const gateway = this.gatewayList.current();
    if (gateway) {
      this.openLink(now, this.newRound(now, gateway));
      return;
    }
    this.discover(now);
    if (this.discovery) this.phase = { kind: "discovering" };
    else this.backOff(now, undefined); // unreachable: the options give a gateway or endpointsUrl
  }

  private newRound(now: number, gateway: GatewayEndpoint): Round {
    return { gateway, order: this.choice.order(now, gatewayTransports(gateway, this.config)), index: 0, webTransportOpenFailed: false };
  }

  /**
   * Opens the round's transport at `round.index`; past the last one, the round failed. The
   * token for its Hello is asked for at the same time (or `token`, carried over from a
   * transport that failed before its Hello went out).
   */
  private openLink(now: number, round: Round, token?: HelloToken): void {
    const kind = round.order[round.index];
    if (kind === undefined) {
      this.roundFailed(now, round, token);
      return;
    }
    const gateway = round.gateway;
    const link: Link = { id: this.nextLinkId++, kind, gateway };
    const hashes = kind === "webtransport" ? gateway.serverCertificateHashes : undefined;
    this.out({
      type: "open",
      link: link.id,
      kind,
      url: (kind === "webtransport" ? gateway.webTransportUrl : gateway.webSocketUrl) ?? "",
      ...(hashes && hashes.length > 0 ? { serverCertificateHashes: hashes } : {}),
    });
    const timeout = kind === "webtransport" ? this.config.webTransportTimeoutMs : this.config.helloTimeoutMs;
    this.phase = { kind: "connecting", link, round, deadline: now + timeout, token: token ?? this.helloToken() };
  }

  /**
   * The token for the next Hello: the `token` option (without `getToken`, or until it is used
   * up), else a fresh one from `getToken`: a Hello never carries a token kept from earlier.
   */
  private helloToken(): HelloToken {
    if (!this.config.getToken || (this.config.token !== "" && !this.staticTokenSpent)) {
      return { kind: "ready", value: this.config.token };
    }
    return { kind: "fetching", ticket: this.requestToken("connect") };
  }

  private requestToken(reason: "connect" | "refresh"): number {
    const ticket = this.nextTicket++;
    this.out({ type: "getToken", ticket, reason });
    return ticket;
  }

  /** This transport failed before Welcome: the next one of the round. */
  private attemptFailed(now: number, p: Connecting | Authorizing | Handshaking, why: string): void {
    this.closeLink(p.link, "failed");
    if (p.kind === "connecting" && p.link.kind === "webtransport") p.round.webTransportOpenFailed = true;
    this.emit("transportFailed", { transport: p.link.kind, error: why });
    p.round.index++;
    this.openLink(now, p.round, unsentToken(p));
  }

  /**
   * Every transport of the round failed (or its gateway refused): the next gateway at once,
   * carrying a token not yet sent; once every gateway has failed, back off. A gateway that
   * fails may mean the list is stale: it is asked for again.
   */
  private roundFailed(now: number, round: Round, token: HelloToken | undefined): void {
    this.discover(now);
    const next = this.gatewayList.roundFailed(round.gateway);
    if (next) this.openLink(now, this.newRound(now, next), token);
    else this.backOff(now, undefined);
  }

  /** getToken failed (or was too slow) for this attempt: an error event, and a retry after back-off. */
  private helloTokenFailed(now: number, p: Connecting | Authorizing, message: string): void {
    this.emit("error", { code: "GET_TOKEN_FAILED", message, inReplyTo: 0 });
    this.closeLink(p.link, "no token");
    this.backOff(now, undefined);
  }

  /**
   * The gateway itself refused: it holds as many sessions as it may (TOO_MANY_SESSIONS, close
   * 4008), or it is cut off from its cluster (CLUSTER_UNAVAILABLE, close 4009). The other
   * transport would reach the same gateway: the round failed, so the next gateway, or with
   * only this one a back-off (a load balancer may pick another).
   */
  private gatewayRefused(now: number, p: Connecting | Authorizing | Handshaking, close: string, why: string): void {
    this.closeLink(p.link, close);
    this.emit("transportFailed", { transport: p.link.kind, error: why });
    this.roundFailed(now, p.round, unsentToken(p));
  }

  /**
   * Hello refused for its token: a fresh one after back-off (getToken is called again), unless
   * that was the `maxTokenRefusals`-th refusal in a row: then the client gives up.
   */
  private tokenRefused(now: number, p: Handshaking, code: ServerErrorCode, message: string): void {
    this.staticTokenSpent = true;
    this.tokenRefusals++;
    if (this.tokenRefusals >= this.config.maxTokenRefusals) {
      this.emit("authFailed", { code, message });
      this.shutDown("auth_failed", new SignalgateError(code, message), message);
      return;
    }
    this.closeLink(p.link, "token refused");
    this.backOff(now, undefined);
  }

  private backOff(now: number, goAwayAt: number | undefined): void {
    const afterGoAway = goAwayAt !== undefined;
    const at = afterGoAway ? Math.max(now, goAwayAt) : now + this.backoff.next();
    this.phase = { kind: "backingOff", at, afterGoAway };
    this.emit("reconnecting", { attempt: this.backoff.attempts, delayMs: at - now });
  }

  private sendHello(now: number, link: Link, round: Round, token: string): void {
    const hello = create(HelloSchema, { token, client: this.config.client });
    const s = this.session;
    if (s) {
      hello.resumeToken = s.resumeToken;
      hello.lastSeq = this.inbound.lastSeq;
      hello.attempt = BigInt(++s.attempt);
      hello.ackedClientSeq = BigInt(this.outbox.acked);
      this.inbound.ackedByHello();
    }
    this.write(link, encodeClientFrame(this.nextFrameId++, 0, { case: "hello", value: hello }));
    this.phase = {
      kind: "handshaking",
      link,
      round,
      resuming: s !== undefined,
      deadline: now + this.config.helloTimeoutMs,
    };
  }

  private onHandshakeFrame(now: number, p: Handshaking, frame: ServerFrame): void {
    const msg = frame.msg;
    if (msg.case === "welcome") {
      this.onWelcome(now, p, msg.value);
      return;
    }
    if (msg.case !== "error") return; // nothing else is valid before Welcome
    const code = errorCodeName(msg.value.code);
    const message = msg.value.message;
    // IDENTITY_MISMATCH: the resume token belongs to a session of another identity (another
    // user logged in on this page): that session is not ours to continue.
    if (p.resuming && (code === "RESUME_EXPIRED" || code === "RESUME_GAP" || code === "IDENTITY_MISMATCH")) {
      this.loseSession(code, message);
      // A fresh session at once, on the same transport: this one works.
      this.closeLink(p.link, "resume refused");
      this.openLink(now, p.round);
      return;
    }
    this.emit("error", { code, message, inReplyTo: Number(frame.inReplyTo || msg.value.inReplyTo) });
    if (p.resuming && code === "STALE_ATTEMPT") {
      // A newer attempt holds the session. This client never runs two attempts at once, so
      // that one belongs to someone else with the token: fighting over it would make the two
      // supersede each other forever.
      this.shutDown("superseded", new SignalgateError("SUPERSEDED", message));
      return;
    }
    if (isTokenRefusal(code)) {
      this.tokenRefused(now, p, code, message);
      return;
    }
    if (code === "TOO_MANY_SESSIONS" || code === "CLUSTER_UNAVAILABLE") {
      this.gatewayRefused(now, p, code === "TOO_MANY_SESSIONS" ? "gateway full" : "gateway lost", `${code}: ${message}`);
      return;
    }
    this.attemptFailed(now, p, `${code}: ${message}`);
  }

  private onWelcome(now: number, p: Handshaking, w: Welcome): void {
    // With tokens the gateway may hand over another session of the same identity (our resume
    // token had expired, another tab of the user holds one): not ours, so not a resume.
    const resumed = p.resuming && w.resumed && w.peerId === this.session?.peerId;
    // Asked to resume (or had a session we could not ask for) and got another one: lost.
    if (!resumed && this.session) {
      this.loseSession("RESUME_EXPIRED", w.resumed ? "the gateway gave this identity's other session" : "the gateway started a new session");
    }
    this.choice.welcomed(now, p.link.kind, p.round.webTransportOpenFailed);
    this.gatewayList.welcomed();
    this.peer = w.peerId;
    this.connection = w.connectionId;
    this.maxFrameBytes = w.maxFrameBytes;
    this.welcomedIdentity = w.identity;
    this.tokenRefusals = 0;
    this.staticTokenSpent = this.config.getToken;
    const expiresInMs = Number(w.tokenExpiresInMs);
    this.tokenExpiry = expiresInMs > 0 ? now + expiresInMs : undefined;
    const liveness = new Liveness(now, {
      livenessTimeoutMs: w.livenessTimeoutMs || DEFAULT_LIVENESS_TIMEOUT_MS,
      pingIntervalMs: w.pingIntervalMs || DEFAULT_PING_INTERVAL_MS,
    });
    const c: Connected = {
      kind: "connected",
      link: p.link,
      liveness,
      healthyAt: now + liveness.livenessTimeoutMs,
      replay: undefined,
      goAwayAt: undefined,
      refresh:
        expiresInMs > 0 && this.config.getToken
          ? new TokenRefresh(
              now,
              expiresInMs,
              { getTokenMs: this.config.helloTimeoutMs, replyMs: this.config.requestTimeoutMs },
              this.random,
            )
          : undefined,
    };
    this.phase = c;
    this.hadSession = true;

    if (resumed && this.session) {
      if (w.resumeToken) this.session.resumeToken = w.resumeToken;
      this.joinedRooms.clear();
      for (const room of w.rooms) this.joinedRooms.add(room);
      // What the gateway did not process goes again, in order, before anything new.
      const lastClientSeq = Number(w.lastClientSeq);
      const resend = this.outbox.unprocessedAfter(lastClientSeq);
      for (const entry of resend) if (entry.bytes) this.write(c.link, entry.bytes);
      c.replay = { until: w.replayUntilSeq, count: 0, lastClientSeq, deferredAck: 0, resent: resend.length };
      this.flushOutbox();
      this.resolveConnectWaiters();
      if (this.inbound.lastSeq >= w.replayUntilSeq) this.finishReplay(c);
      return;
    }

    this.session = w.resumeToken ? { peerId: w.peerId, resumeToken: w.resumeToken, attempt: 0 } : undefined;
    this.inbound.reset();
    this.joinedRooms.clear();
    // Empty for a new session; a session of this identity handed over (see above) is in rooms
    // already, and its backlog follows as a replay from seq 1 on.
    for (const room of w.rooms) this.joinedRooms.add(room);
    // Re-joins go before anything queued, which may be signals into those rooms.
    const rejoins = [...this.rejoinRooms]
      .filter((room) => !this.joinedRooms.has(room))
      .map((room) => this.newRequest("join", room, true, []));
    this.rejoinRooms.clear();
    this.outbox.addFirst(rejoins);
    this.flushOutbox();
    this.emit("connected", { transport: c.link.kind, peerId: w.peerId, connectionId: w.connectionId });
    this.resolveConnectWaiters();
  }

  /**
   * The session cannot be resumed: nothing of ours that the gateway has not acknowledged may
   * go out on the next session (it would come from another peer id, out of its context), so
   * all of it rejects, and the rooms are remembered for the fresh session.
   */
  private loseSession(code: "RESUME_EXPIRED" | "RESUME_GAP" | "IDENTITY_MISMATCH", message: string): void {
    const s = this.session;
    if (!s) return;
    this.session = undefined;
    const { leaving, rejoining } = this.requests.pendingRooms();
    for (const room of [...this.joinedRooms, ...rejoining]) if (!leaving.has(room)) this.rejoinRooms.add(room);
    this.joinedRooms.clear();
    this.failFrames(new SignalgateError("SESSION_LOST", `the session was lost (${code}) before the gateway acknowledged this`));
    this.emit("sessionLost", { previousPeerId: s.peerId, code, message });
  }

  // ---------------------------------------------------------------------------------------
  // Connected: the session's frames
  // ---------------------------------------------------------------------------------------

  private onSessionFrame(now: number, c: Connected, frame: ServerFrame): void {
    c.liveness.onInbound(now);
    if (frame.seq === 0n) {
      this.onConnectionFrame(now, c, frame);
      return;
    }
    if (!this.inbound.accept(frame.seq, now)) return; // a duplicate (replay overlap)
    if (c.replay) c.replay.count++;
    this.onStreamFrame(now, c, frame);
    if (this.phase !== c) return;
    if (this.inbound.ackNow) this.sendAck(c.link);
    if (c.replay && this.inbound.lastSeq >= c.replay.until) this.finishReplay(c);
  }

  /** seq 0: about this connection (Pong, Ack, GoAway, some Errors); never replayed. */
  private onConnectionFrame(now: number, c: Connected, frame: ServerFrame): void {
    const msg = frame.msg;
    switch (msg.case) {
      case "pong": {
        let id = Number(frame.inReplyTo);
        if (!this.pings.has(id)) id = pingIdOf(msg.value.payload);
        const sentAt = this.pings.get(id);
        if (sentAt !== undefined) {
          this.pings.delete(id);
          this.rtt = now - sentAt;
        }
        return;
      }
      case "ack": {
        const seq = Number(msg.value.seq);
        // An Error about a frame it covers may still be in the replay: wait for its end.
        if (c.replay) c.replay.deferredAck = Math.max(c.replay.deferredAck, seq);
        else this.applyAck(seq);
        return;
      }
      case "goAway": {
        const g = msg.value;
        c.goAwayAt = now + spreadDelay(g.reconnectAfterMs, g.spreadMs, this.random);
        this.emit("goAway", { reason: reasonName(g.reason), reconnectAfterMs: g.reconnectAfterMs, spreadMs: g.spreadMs });
        // Whatever the reason (a drain, a gateway cut off from its cluster), the next
        // connection goes to another gateway: ask for the list now (it leaves draining ones out).
        this.discover(now);
        return;
      }
      case "welcome":
        return;
      default:
        this.onStreamFrame(now, c, frame);
    }
  }

  private onStreamFrame(now: number, c: Connected, frame: ServerFrame): void {
    const msg = frame.msg;
    switch (msg.case) {
      case "joined": {
        const request = this.requests.take(Number(frame.inReplyTo));
        const result = joinResult(msg.value);
        this.joinedRooms.add(result.room);
        for (const w of request?.waiters ?? []) this.resolve(w.req, result);
        this.emit("joined", { ...result, rejoined: request?.rejoin ?? false });
        return;
      }
      case "left": {
        const request = this.requests.take(Number(frame.inReplyTo));
        this.joinedRooms.delete(msg.value.room);
        for (const w of request?.waiters ?? []) this.resolve(w.req, undefined);
        return;
      }
      case "error":
        this.onError(now, c, frame, msg.value);
        return;
      case "refreshed": {
        const r = c.refresh;
        const expiresInMs = Number(msg.value.tokenExpiresInMs);
        // Only the reply to the Refresh under way: a replayed one answered an older connection,
        // whose token the resume Hello has replaced since.
        if (!r?.isReply(Number(frame.inReplyTo))) return;
        r.renewed(now, expiresInMs);
        this.tokenExpiry = now + expiresInMs;
        this.emit("tokenRefreshed", { expiresInMs });
        return;
      }
      default: {
        const event = peerEvent(frame);
        if (event) this.out({ type: "event", event });
      }
    }
  }

  /** An Error about one of our frames rejects whoever waits for it; any other is an event. */
  private onError(now: number, c: Connected, frame: ServerFrame, err: WireError): void {
    const id = Number(frame.inReplyTo || err.inReplyTo);
    const code = errorCodeName(err.code);
    if (code === "DISCONNECTED") {
      // The application's backend ended the session for good (the gateway closes with 4007).
      this.emit("error", { code, message: err.message, inReplyTo: id });
      this.shutDown("disconnected", new SignalgateError(code, err.message), err.message);
      return;
    }
    if (id && c.refresh?.isReply(id)) {
      // The new token was refused; the current one stays in force until it expires.
      this.emit("error", { code, message: err.message, inReplyTo: id });
      c.refresh.failed(now);
      return;
    }
    if (code === "TOKEN_EXPIRED" && !id) {
      // The gateway's warning: the token expired, a grace runs before it closes (4006).
      // One replayed after a resume is old news: that Hello carried a fresh token.
      this.emit("error", { code, message: err.message, inReplyTo: 0 });
      if (!c.replay && c.refresh?.warn(now)) this.refreshNow(now, c);
      return;
    }
    if (code === "STORAGE_UNAVAILABLE" && id) {
      if (this.storageRefused.has(id)) return;
      this.storageRefused.add(id);
      if (this.storageRefused.size > STORAGE_REFUSALS_KEPT) {
        const oldest = this.storageRefused.values().next().value;
        if (oldest !== undefined) this.storageRefused.delete(oldest);
      }
    }
    const error = new SignalgateError(code, err.message, id);
    let taken = false;
    const entry = id ? this.outbox.refuse(id) : undefined;
    if (entry?.req !== undefined) {
      this.reject(entry.req, error);
      taken = true;
    }
    const request = id ? this.requests.take(id) : undefined;
    for (const w of request?.waiters ?? []) {
      this.reject(w.req, error);
      taken = true;
    }
    if (taken) return;
    const message = request?.rejoin ? `re-join ${request.room}: ${err.message}` : err.message;
    this.emit("error", { code, message, inReplyTo: id });
  }

  private applyAck(seq: number): void {
    for (const entry of this.outbox.ack(seq)) if (entry.req !== undefined) this.resolve(entry.req, entry.id);
  }

  private finishReplay(c: Connected): void {
    const r = c.replay;
    if (!r) return;
    c.replay = undefined;
    this.applyAck(Math.max(r.lastClientSeq, r.deferredAck));
    this.emit("resumed", {
      transport: c.link.kind,
      peerId: this.peer ?? "",
      connectionId: this.connection ?? "",
      replayed: r.count,
      resent: r.resent,
    });
  }

  /**
   * The connection is gone (not the session): reconnect and resume, to the same gateway
   * unless it sent the client away (`sentAway`: GoAway, close 4009), then to another one.
   */
  private lose(now: number, c: Connected, reason: DisconnectReason, sentAway = false): void {
    // Closing is no longer leaving (only Bye is), so a connection given up is simply closed.
    this.closeLink(c.link, reason);
    this.detach();
    if (sentAway) {
      this.gatewayList.sentAway(c.link.gateway);
      this.discover(now);
    }
    this.emit("disconnected", { reason, willReconnect: true });
    this.backOff(now, c.goAwayAt);
  }

  /**
   * The gateway closed the connection because the token expired without refresh (4006): the
   * session is still there, resumable with a fresh token, so reconnect at once.
   */
  private tokenExpired(now: number, c: Connected): void {
    this.closeLink(c.link, "token expired");
    this.detach();
    this.emit("disconnected", { reason: "token_expired", willReconnect: true });
    this.startRound(now);
  }

  /** Ends everything without a reconnect (STALE_ATTEMPT, DISCONNECTED, token refusals). */
  private shutDown(reason: DisconnectReason, err: SignalgateError, message?: string): void {
    this.closeLinkOf(this.phase, reason);
    this.phase = { kind: "closed" };
    this.discovery = undefined;
    this.failEverything(err);
    this.emit("disconnected", message === undefined ? { reason, willReconnect: false } : { reason, willReconnect: false, message });
  }

  // ---------------------------------------------------------------------------------------
  // Outbound
  // ---------------------------------------------------------------------------------------

  private usable(req: number): boolean {
    const kind = this.phase.kind;
    if (kind === "closing" || kind === "closed") {
      this.reject(req, new SignalgateError("CLOSED", "client is closed"));
      return false;
    }
    if (kind === "idle") {
      this.reject(req, new SignalgateError("NOT_CONNECTED", "call connect() first"));
      return false;
    }
    return true;
  }

  private request(kind: "join" | "leave", room: string, waiter: Waiter): void {
    const entry = this.newRequest(kind, room, false, [waiter]);
    if (!this.outbox.add(entry)) {
      this.requests.take(entry.id);
      this.reject(waiter.req, this.queueFull());
      return;
    }
    this.flushOutbox();
  }

  private newRequest(kind: "join" | "leave", room: string, rejoin: boolean, waiters: Waiter[]): OutEntry {
    const id = this.nextFrameId++;
    const msg: NumberedMsg =
      kind === "join"
        ? { case: "join", value: create(JoinSchema, { room }) }
        : { case: "leave", value: create(LeaveSchema, { room }) };
    this.requests.add({ id, kind, room, rejoin, waiters });
    return { id, msg, req: undefined, seq: 0, bytes: undefined };
  }

  /** Numbers and writes what is queued, if there is a session on a connection. */
  private flushOutbox(): void {
    const p = this.phase;
    if (p.kind !== "connected") return;
    const { send, tooLarge } = this.outbox.number(this.maxFrameBytes);
    for (const entry of tooLarge) {
      this.failEntry(
        entry,
        new SignalgateError("FRAME_TOO_LARGE", `frame exceeds the gateway's limit of ${this.maxFrameBytes} bytes`, entry.id),
      );
    }
    for (const entry of send) if (entry.bytes) this.write(p.link, entry.bytes);
  }

  private failEntry(entry: OutEntry, err: SignalgateError): void {
    if (entry.req !== undefined) this.reject(entry.req, err);
    for (const w of this.requests.take(entry.id)?.waiters ?? []) this.reject(w.req, err);
  }

  /** Every frame kept and every request waiting rejects with `err`. */
  private failFrames(err: SignalgateError): void {
    for (const entry of this.outbox.drain()) if (entry.req !== undefined) this.reject(entry.req, err);
    for (const request of this.requests.drain()) for (const w of request.waiters) this.reject(w.req, err);
  }

  private failEverything(err: SignalgateError): void {
    this.failFrames(err);
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const req of waiters) this.reject(req, err);
  }

  private resolveConnectWaiters(): void {
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const req of waiters) this.resolve(req, undefined);
  }

  private sendPing(now: number, link: Link): void {
    const id = this.nextFrameId++;
    this.pings.set(id, now);
    this.write(link, encodeClientFrame(id, 0, { case: "ping", value: create(PingSchema, { payload: pingPayload(id) }) }));
  }

  private sendAck(link: Link): void {
    const seq = this.inbound.takeAck();
    if (seq !== undefined) this.write(link, encodeClientFrame(0, 0, { case: "ack", value: create(AckSchema, { seq }) }));
  }

  /** The connection stops carrying the session (lost, suspended, closing). */
  private detach(): void {
    this.inbound.pause();
    this.pings.clear();
  }

  private closeLinkOf(p: Phase, reason: string): void {
    switch (p.kind) {
      case "connecting":
      case "authorizing":
      case "handshaking":
      case "connected":
      case "closing":
        this.closeLink(p.link, reason);
        return;
      case "suspended":
        if (p.detached) this.closeLink(p.detached, reason);
        return;
      default:
        return;
    }
  }

  private queueFull(): SignalgateError {
    return new SignalgateError("QUEUE_FULL", `${this.config.maxQueuedFrames} frames are already waiting for the gateway`);
  }

  // ---------------------------------------------------------------------------------------
  // Outputs
  // ---------------------------------------------------------------------------------------

  private out(o: Output): void {
    this.outputs.push(o);
  }

  private write(link: Link, bytes: Uint8Array): void {
    this.out({ type: "write", link: link.id, bytes });
  }

  private closeLink(link: Link, reason: string): void {
    this.out({ type: "close", link: link.id, reason });
  }

  private emit<K extends keyof SignalgateEvents>(name: K, payload: SignalgateEvents[K]): void {
    this.out({ type: "event", event: { name, payload } as CoreEvent });
  }

  private resolve(req: number, value: JoinResult | number | undefined): void {
    this.out({ type: "resolve", req, value });
  }

  private reject(req: number, error: SignalgateError): void {
    this.out({ type: "reject", req, error });
  }
}

/** The token of an attempt that was not sent in a Hello yet: it serves the next attempt. */
function unsentToken(p: Connecting | Authorizing | Handshaking): HelloToken | undefined {
  return p.kind === "connecting" ? p.token : p.kind === "authorizing" ? { kind: "fetching", ticket: p.ticket } : undefined;
}
