/**
 * SignalgateClient: the driver around the sans-IO core (core/core.ts). It owns what the core
 * must not: the transports (transport/*), one timer, the promises of the public API and the
 * page lifecycle. Every input goes to the core with `now`; then the core's outputs are
 * performed in order and the timer is armed for the core's next deadline. No decision is made
 * here.
 */
import { candidateToWire, descriptionToWire } from "./convert.js";
import { resolveConfig } from "./core/config.js";
import { ClientCore } from "./core/core.js";
import type { Output } from "./core/output.js";
import { Emitter } from "./emitter.js";
import type { SignalgateError } from "./errors.js";
import type { Signal } from "./gen/signalgate/v1/signalgate_pb.js";
import { documentLifecycle, type PageLifecycle } from "./lifecycle.js";
import { webSocketConnector } from "./transport/websocket.js";
import { webTransportAvailable, webTransportConnector } from "./transport/webtransport.js";
import type { Connection, Connector, TransportKind, WebTransportHashInit } from "./transport/types.js";
import type { ClientState, GatewayEndpoint, JoinResult, SignalgateClientOptions, SignalgateEvents, TokenContext } from "./types.js";

export { SDK_VERSION } from "./core/config.js";

/**
 * What the client takes from its environment. Everything has a browser default; tests pass
 * fake connectors, clocks and page lifecycles.
 */
export interface ClientDeps {
  connectors: Partial<Record<TransportKind, Connector>>;
  webTransportAvailable: () => boolean;
  /** Monotonic milliseconds. Default `performance.now()`. */
  now: () => number;
  /** In [0, 1). Default `Math.random`. */
  random: () => number;
  /** freeze / resume / pagehide / pageshow. Default: this page's `document` and `window`. */
  lifecycle: PageLifecycle;
  /**
   * `GET url` as JSON, for `endpointsUrl`. Default: `fetch(url, {cache: 'no-store'})`, an
   * HTTP status other than 2xx being a failure.
   */
  fetchJson: (url: string) => Promise<unknown>;
}

/** One link the core asked for: its connection once open, and whether the core is done with it. */
interface Slot {
  readonly abort: AbortController;
  conn: Connection | undefined;
  done: boolean;
}

interface Waiting {
  resolve(value: unknown): void;
  reject(error: SignalgateError): void;
}

export class SignalgateClient extends Emitter<SignalgateEvents> {
  private readonly core: ClientCore;
  private readonly deps: ClientDeps;
  private readonly getToken: ((context: TokenContext) => Promise<string>) | undefined;
  private readonly slots = new Map<number, Slot>();
  private readonly waiting = new Map<number, Waiting>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt: number | undefined;
  private flushing = false;
  private unsubscribeLifecycle: (() => void) | undefined;

  constructor(options: SignalgateClientOptions, deps: Partial<ClientDeps> = {}) {
    super();
    this.deps = {
      connectors: {
        webtransport: deps.connectors?.webtransport ?? webTransportConnector(),
        websocket: deps.connectors?.websocket ?? webSocketConnector(),
      },
      webTransportAvailable: deps.webTransportAvailable ?? webTransportAvailable,
      now: deps.now ?? (() => performance.now()),
      random: deps.random ?? Math.random,
      lifecycle: deps.lifecycle ?? documentLifecycle(),
      fetchJson: deps.fetchJson ?? fetchJson,
    };
    this.core = new ClientCore(resolveConfig(options, this.deps.webTransportAvailable()), this.deps.random);
    this.getToken = options.getToken;
  }

  // ---------------------------------------------------------------------------------------
  // Public surface
  // ---------------------------------------------------------------------------------------

  get state(): ClientState {
    return this.core.state;
  }

  /** The transport of the current connection (undefined while not connected). */
  get transport(): TransportKind | undefined {
    return this.core.transport;
  }

  /** The gateway of the current connection (undefined while not connected). */
  get gateway(): GatewayEndpoint | undefined {
    return this.core.gateway;
  }

  /**
   * The gateways this client may connect to: from the options, replaced by every answer of
   * `GET /endpoints` (`endpointsUrl`).
   */
  get gateways(): readonly GatewayEndpoint[] {
    return this.core.gateways;
  }

  /** How other peers see this client; stable across resumes, new after `sessionLost`. */
  get peerId(): string | undefined {
    return this.core.peerId;
  }

  /** The gateway's id of the current connection (for its logs); new on every connection. */
  get connectionId(): string | undefined {
    return this.core.connectionId;
  }

  /** Rooms this session is in (as confirmed by the gateway). */
  get rooms(): ReadonlySet<string> {
    return this.core.rooms;
  }

  /** Highest ServerFrame.seq processed. */
  get lastSeq(): number {
    return this.core.lastSeq;
  }

  /** Round-trip time of the last answered Ping, in ms. */
  get rttMs(): number | undefined {
    return this.core.rttMs;
  }

  /** Join/Leave/Signal frames not yet acknowledged by the gateway, or waiting for a connection. */
  get unacknowledged(): number {
    return this.core.unacknowledged;
  }

  /**
   * Who the gateway says this client is: the token's `sub` (Welcome.identity). '' without
   * authentication; undefined before the first Welcome.
   */
  get identity(): string | undefined {
    return this.core.identity;
  }

  /**
   * How long the session's token is still valid, in ms, as the gateway last said (Welcome or
   * Refreshed; 0 once expired). Undefined when the gateway gave no expiry (no authentication).
   */
  get tokenExpiresInMs(): number | undefined {
    const at = this.core.tokenExpiresAt;
    return at === undefined ? undefined : Math.max(0, at - this.deps.now());
  }

  /**
   * Starts connecting (if not already) and resolves at the next Welcome. Failed attempts are
   * retried with back-off until one succeeds; only `close()` rejects it.
   */
  connect(): Promise<void> {
    if (this.core.state === "idle" && !this.unsubscribeLifecycle) {
      this.unsubscribeLifecycle = this.deps.lifecycle.subscribe((event) =>
        this.input((now) => this.core.lifecycle(now, event)),
      );
    }
    return this.call<void>((now) => this.core.connect(now));
  }

  /** Joins `room`; resolves with the peers already in it (on the gateway's Joined). */
  join(room: string): Promise<JoinResult> {
    return this.call<JoinResult>((now) => this.core.join(now, room));
  }

  /** Leaves `room`; resolves on the gateway's Left. */
  leave(room: string): Promise<void> {
    return this.call<void>((now) => this.core.leave(now, room));
  }

  /**
   * Resolves with the frame's id once the gateway has acknowledged it (processed: relayed,
   * or held for an unreachable recipient); rejects with the gateway's Error about it.
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

  /** Leaves for good (Bye); no reconnect; a closed client cannot be reopened. */
  close(): void {
    this.input((now) => this.core.close(now));
  }

  // ---------------------------------------------------------------------------------------
  // Driving the core
  // ---------------------------------------------------------------------------------------

  private signal(room: string, to: string, payload: Signal["payload"]): Promise<number> {
    return this.call<number>((now) => this.core.signal(now, room, to, payload));
  }

  /** Feeds an app request to the core; its promise exists before any output can settle it. */
  private call<T>(input: (now: number) => number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const req = input(this.deps.now());
      this.waiting.set(req, { resolve: resolve as (value: unknown) => void, reject });
      this.flush();
    });
  }

  private input(feed: (now: number) => void): void {
    feed(this.deps.now());
    this.flush();
  }

  /**
   * Performs the core's outputs in order. A listener that calls the client re-enters here:
   * its outputs join the same queue and this loop performs them, so order is kept.
   */
  private flush(): void {
    if (this.flushing) return;
    this.flushing = true;
    try {
      for (let o = this.core.pollOutput(); o; o = this.core.pollOutput()) this.perform(o);
    } finally {
      this.flushing = false;
    }
    if (this.core.state === "closed") {
      this.unsubscribeLifecycle?.();
      this.unsubscribeLifecycle = undefined;
    }
    this.arm();
  }

  private perform(o: Output): void {
    switch (o.type) {
      case "open":
        this.open(o.link, o.kind, o.url, o.serverCertificateHashes);
        return;
      case "write":
        this.slots.get(o.link)?.conn?.send(o.bytes);
        return;
      case "close": {
        const slot = this.slots.get(o.link);
        if (!slot) return;
        this.slots.delete(o.link);
        slot.done = true;
        slot.abort.abort();
        slot.conn?.close(o.reason);
        return;
      }
      case "event":
        this.emit(o.event.name, o.event.payload as never);
        return;
      case "getToken":
        this.fetchToken(o.ticket, o.reason);
        return;
      case "fetchEndpoints":
        this.fetchEndpoints(o.ticket, o.url);
        return;
      case "resolve":
        this.settle(o.req)?.resolve(o.value);
        return;
      case "reject":
        this.settle(o.req)?.reject(o.error);
        return;
    }
  }

  private settle(req: number): Waiting | undefined {
    const w = this.waiting.get(req);
    this.waiting.delete(req);
    return w;
  }

  private open(link: number, kind: TransportKind, url: string, certificateHashes: WebTransportHashInit[] | undefined): void {
    const slot: Slot = { abort: new AbortController(), conn: undefined, done: false };
    this.slots.set(link, slot);
    const forget = () => {
      slot.done = true;
      this.slots.delete(link);
    };
    let opening: Promise<Connection>;
    try {
      const connector = this.deps.connectors[kind];
      if (!connector) throw new Error(`no connector for ${kind}`);
      opening = connector(
        url,
        {
          onFrame: (bytes) => {
            if (!slot.done) this.input((now) => this.core.received(now, link, bytes));
          },
          onClose: (info) => {
            if (slot.done) return;
            forget();
            this.input((now) => this.core.closed(now, link, info));
          },
        },
        { signal: slot.abort.signal, ...(certificateHashes ? { serverCertificateHashes: certificateHashes } : {}) },
      );
    } catch (err) {
      opening = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    opening.then(
      (conn) => {
        if (slot.done) {
          conn.close("obsolete attempt");
          return;
        }
        slot.conn = conn;
        this.input((now) => this.core.opened(now, link));
      },
      (err: unknown) => {
        if (slot.done) return;
        forget();
        this.input((now) => this.core.openFailed(now, link, err instanceof Error ? err.message : String(err)));
      },
    );
  }

  /**
   * Calls the app's getToken and reports the outcome to the core (later, never inside the
   * flush). A throw, a rejection or a non-string is a failure, never an exception here.
   */
  private fetchToken(ticket: number, reason: TokenContext["reason"]): void {
    let pending: Promise<unknown>;
    try {
      const get = this.getToken;
      if (!get) throw new Error("no getToken option");
      pending = Promise.resolve(get({ reason }));
    } catch (err) {
      pending = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    pending.then(
      (token) => {
        if (typeof token === "string") this.input((now) => this.core.tokenReady(now, ticket, token));
        else this.input((now) => this.core.tokenFailed(now, ticket, `getToken returned ${typeof token}, not a string`));
      },
      (err: unknown) => {
        const message = err instanceof Error ? err.message : String(err);
        this.input((now) => this.core.tokenFailed(now, ticket, `getToken failed: ${message}`));
      },
    );
  }

  /**
   * Fetches `GET /endpoints` and reports the JSON (or the failure) to the core, later, never
   * inside the flush. The core gives up on an answer that takes too long.
   */
  private fetchEndpoints(ticket: number, url: string): void {
    let pending: Promise<unknown>;
    try {
      pending = Promise.resolve(this.deps.fetchJson(url));
    } catch (err) {
      pending = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    pending.then(
      (json) => this.input((now) => this.core.endpointsReady(now, ticket, json)),
      (err: unknown) => {
        const message = err instanceof Error ? err.message : String(err);
        this.input((now) => this.core.endpointsFailed(now, ticket, message));
      },
    );
  }

  /** One timer, for the core's next deadline. */
  private arm(): void {
    const at = this.core.pollTimeout();
    if (at === this.timerAt && (at === undefined || this.timer !== undefined)) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = at;
    if (at === undefined) return;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.timerAt = undefined;
        this.input((now) => this.core.handleTimeout(now));
      },
      Math.max(0, at - this.deps.now()),
    );
  }
}

/** The default `fetchJson`: GET with the browser's `fetch`, bypassing its cache. */
async function fetchJson(url: string): Promise<unknown> {
  const res = await fetch(url, { cache: "no-store" });
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return res.json();
}
