/**
 * Drives the sans-IO core directly: a fake clock, and a scriptable gateway end for every link
 * the core opens. No timers, no promises, no sockets.
 */
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { resolveConfig } from "../../src/core/config.js";
import { ClientCore } from "../../src/core/core.js";
import type { CoreEvent } from "../../src/core/output.js";
import type { SignalgateError } from "../../src/errors.js";
import {
  ClientFrameSchema,
  ErrorCode,
  ServerFrameSchema,
  WelcomeSchema,
  type ClientFrame,
} from "../../src/gen/signalgate/v1/signalgate_pb.js";
import type { LifecycleEvent } from "../../src/lifecycle.js";
import type { CloseInfo, TransportKind, WebTransportHashInit } from "../../src/transport/types.js";
import type { SignalgateClientOptions, SignalgateEvents } from "../../src/types.js";

export type ServerFrameInit = MessageInitShape<typeof ServerFrameSchema>;
export type WelcomeInit = MessageInitShape<typeof WelcomeSchema>;
type Case = NonNullable<ClientFrame["msg"]["case"]>;

export type Result =
  | { state: "pending" }
  | { state: "resolved"; value: unknown }
  | { state: "rejected"; error: SignalgateError };

/** The gateway's end of one link the core opened. */
export class Gw {
  readonly sent: ClientFrame[] = [];
  /** The reason of the core's `close` output, once it closed this link. */
  closedBy: string | undefined;

  constructor(
    private readonly h: CoreHarness,
    readonly id: number,
    readonly kind: TransportKind,
    /** Where the core asked to connect, and the certificate hashes it pinned (WebTransport). */
    readonly url: string,
    readonly hashes: WebTransportHashInit[] | undefined,
  ) {}

  open(): this {
    this.h.input((now) => this.h.core.opened(now, this.id));
    return this;
  }

  fail(message = "Opening handshake failed"): void {
    this.h.input((now) => this.h.core.openFailed(now, this.id, message));
  }

  deliver(frame: ServerFrameInit): void {
    this.deliverRaw(toBinary(ServerFrameSchema, create(ServerFrameSchema, frame)));
  }

  deliverRaw(bytes: Uint8Array): void {
    this.h.input((now) => this.h.core.received(now, this.id, bytes));
  }

  /** The connection ends (the gateway closed it, or the network broke). */
  drop(info: Partial<CloseInfo> = {}): void {
    this.h.input((now) => this.h.core.closed(now, this.id, { clean: false, reason: "reset", ...info }));
  }

  sentOf<K extends Case>(kind: K): (ClientFrame & { msg: Extract<ClientFrame["msg"], { case: K }> })[] {
    return this.sent.filter((f) => f.msg.case === kind) as never;
  }

  /** What was sent, as `case:seq` (numbered frames) or `case` (others). */
  trace(): string[] {
    return this.sent.map((f) => (f.seq > 0n ? `${f.msg.case}:${f.seq}` : String(f.msg.case)));
  }

  /** Texts of data signals sent, in order. */
  texts(): string[] {
    return this.sentOf("signal").map((f) =>
      f.msg.value.payload.case === "data" ? new TextDecoder().decode(f.msg.value.payload.value) : "?",
    );
  }

  hello() {
    const h = this.sentOf("hello")[0];
    if (!h) throw new Error(`no Hello on link ${this.id}`);
    return { id: h.id, ...h.msg.value };
  }

  welcome(init: WelcomeInit = {}): void {
    this.deliver({
      inReplyTo: this.hello().id,
      msg: {
        case: "welcome",
        value: create(WelcomeSchema, {
          connectionId: `c-${this.id}`,
          peerId: "peer-a",
          resumeToken: "tok-1",
          livenessTimeoutMs: 10_000,
          pingIntervalMs: 4_000,
          resumeWindowMs: 30_000,
          maxFrameBytes: 65_536,
          ...init,
        }),
      },
    });
  }

  /** Welcome{resumed} continuing the session; `lastClientSeq` defaults to nothing processed. */
  resumed(init: WelcomeInit = {}): void {
    const last = this.hello().lastSeq;
    this.welcome({ resumed: true, replayUntilSeq: last, ...init });
  }

  ack(seq: number): void {
    this.deliver({ msg: { case: "ack", value: { seq: BigInt(seq) } } });
  }

  error(code: ErrorCode, inReplyTo: bigint | number, seq = 0, message = "nope"): void {
    const id = BigInt(inReplyTo);
    this.deliver({ seq: BigInt(seq), inReplyTo: id, msg: { case: "error", value: { code, message, inReplyTo: id } } });
  }

  /** A PeerJoined with `seq` (a handy ordered frame). */
  peerJoined(seq: number, peerId = `p${seq}`, room = "demo"): void {
    this.deliver({ seq: BigInt(seq), msg: { case: "peerJoined", value: { room, peer: { peerId, state: 1 } } } });
  }

  joined(seq: number, room: string, peers: { peerId: string; state: number; name?: string; metadata?: string }[] = []): void {
    const join = this.sentOf("join").filter((j) => j.msg.value.room === room).at(-1);
    if (!join) throw new Error(`no Join for ${room} on link ${this.id}`);
    this.deliver({ seq: BigInt(seq), inReplyTo: join.id, msg: { case: "joined", value: { room, peers } } });
  }

  /** Refreshed in reply to the last Refresh (or to `inReplyTo`), on the session's stream. */
  refreshed(expiresInMs: number, seq: number, inReplyTo?: bigint): void {
    const r = this.sentOf("refresh").at(-1);
    if (!r && inReplyTo === undefined) throw new Error(`no Refresh on link ${this.id}`);
    this.deliver({
      seq: BigInt(seq),
      inReplyTo: inReplyTo ?? r!.id,
      msg: { case: "refreshed", value: { tokenExpiresInMs: BigInt(expiresInMs) } },
    });
  }

  /** The gateway's warning: an unsolicited Error TOKEN_EXPIRED on the session's stream. */
  tokenExpiredWarning(seq: number): void {
    this.error(ErrorCode.TOKEN_EXPIRED, 0, seq, "the session's token expired; send Refresh with a new token within 10s");
  }

  pong(): void {
    const p = this.sentOf("ping").at(-1);
    if (!p) throw new Error("no Ping sent");
    this.deliver({ inReplyTo: p.id, msg: { case: "pong", value: { payload: p.msg.value.payload } } });
  }
}

export class CoreHarness {
  now = 1_000;
  readonly core: ClientCore;
  readonly links: Gw[] = [];
  readonly events: CoreEvent[] = [];
  /** The core's `getToken` outputs, in order. */
  readonly tokenRequests: { ticket: number; reason: "connect" | "refresh" }[] = [];
  /** The core's `fetchEndpoints` outputs, in order. */
  readonly endpointRequests: { ticket: number; url: string }[] = [];
  private readonly results = new Map<number, Result>();

  constructor(options: Partial<SignalgateClientOptions> = {}, env: { random?: () => number; webTransport?: boolean } = {}) {
    const config = resolveConfig(
      { webTransportUrl: "https://gw/wt", webSocketUrl: "wss://gw/ws", ...options },
      env.webTransport ?? true,
    );
    this.core = new ClientCore(config, env.random ?? (() => 0.5));
  }

  input(feed: (now: number) => void): void {
    feed(this.now);
    this.drain();
  }

  private drain(): void {
    for (let o = this.core.pollOutput(); o; o = this.core.pollOutput()) {
      switch (o.type) {
        case "open":
          this.links.push(new Gw(this, o.link, o.kind, o.url, o.serverCertificateHashes));
          break;
        case "write":
          this.gw(o.link).sent.push(fromBinary(ClientFrameSchema, o.bytes));
          break;
        case "close":
          this.gw(o.link).closedBy ??= o.reason;
          break;
        case "event":
          this.events.push(o.event);
          break;
        case "getToken":
          this.tokenRequests.push({ ticket: o.ticket, reason: o.reason });
          break;
        case "fetchEndpoints":
          this.endpointRequests.push({ ticket: o.ticket, url: o.url });
          break;
        case "resolve":
          this.results.set(o.req, { state: "resolved", value: o.value });
          break;
        case "reject":
          this.results.set(o.req, { state: "rejected", error: o.error });
          break;
      }
    }
  }

  private gw(id: number): Gw {
    const g = this.links.find((l) => l.id === id);
    if (!g) throw new Error(`output for unknown link ${id}`);
    return g;
  }

  /** Moves the clock forward, calling handleTimeout at every deadline on the way. */
  advance(ms: number): void {
    const end = this.now + ms;
    for (let i = 0; ; i++) {
      if (i > 10_000) throw new Error("handleTimeout makes no progress");
      const t = this.core.pollTimeout();
      if (t === undefined || t > end) break;
      this.now = Math.max(this.now, t);
      this.input((now) => this.core.handleTimeout(now));
    }
    this.now = end;
  }

  /** Advances until the core opens a new link (at most `limitMs`). */
  untilNewLink(limitMs = 120_000): Gw {
    const before = this.links.length;
    for (let waited = 0; this.links.length === before; waited += 10) {
      if (waited > limitMs) throw new Error("no new link opened");
      this.advance(10);
    }
    return this.link();
  }

  link(): Gw {
    const g = this.links.at(-1);
    if (!g) throw new Error("no link opened yet");
    return g;
  }

  of<K extends keyof SignalgateEvents>(name: K): SignalgateEvents[K][] {
    return this.events.filter((e) => e.name === name).map((e) => e.payload) as SignalgateEvents[K][];
  }

  names(): string[] {
    return this.events.map((e) => e.name);
  }

  result(req: number): Result {
    return this.results.get(req) ?? { state: "pending" };
  }

  /** The code a request rejected with (undefined: not rejected). */
  rejection(req: number): string | undefined {
    const r = this.result(req);
    return r.state === "rejected" ? r.error.code : undefined;
  }

  // --- the app's getToken -----------------------------------------------------------------

  private ticket(ticket: number | undefined): number {
    const t = ticket ?? this.tokenRequests.at(-1)?.ticket;
    if (t === undefined) throw new Error("getToken was never called");
    return t;
  }

  /** getToken resolves (the last call, or `ticket`). */
  giveToken(token: string, ticket?: number): void {
    const t = this.ticket(ticket);
    this.input((now) => this.core.tokenReady(now, t, token));
  }

  /** getToken rejects (the last call, or `ticket`). */
  failToken(message = "backend down", ticket?: number): void {
    const t = this.ticket(ticket);
    this.input((now) => this.core.tokenFailed(now, t, message));
  }

  // --- GET /endpoints ---------------------------------------------------------------------

  private fetchTicket(ticket: number | undefined): number {
    const t = ticket ?? this.endpointRequests.at(-1)?.ticket;
    if (t === undefined) throw new Error("/endpoints was never fetched");
    return t;
  }

  /** The last (or `ticket`'s) fetch of /endpoints answers `json`. */
  answerEndpoints(json: unknown, ticket?: number): void {
    const t = this.fetchTicket(ticket);
    this.input((now) => this.core.endpointsReady(now, t, json));
  }

  /** The last (or `ticket`'s) fetch of /endpoints fails. */
  failEndpoints(message = "HTTP 502", ticket?: number): void {
    const t = this.fetchTicket(ticket);
    this.input((now) => this.core.endpointsFailed(now, t, message));
  }

  // --- app inputs -------------------------------------------------------------------------

  connect(): number {
    let req = 0;
    this.input((now) => (req = this.core.connect(now)));
    return req;
  }

  join(room: string): number {
    let req = 0;
    this.input((now) => (req = this.core.join(now, room)));
    return req;
  }

  leave(room: string): number {
    let req = 0;
    this.input((now) => (req = this.core.leave(now, room)));
    return req;
  }

  send(text: string, to = "peer-b", room = "demo"): number {
    let req = 0;
    this.input((now) => (req = this.core.signal(now, room, to, { case: "data", value: new TextEncoder().encode(text) })));
    return req;
  }

  close(): void {
    this.input((now) => this.core.close(now));
  }

  page(event: LifecycleEvent): void {
    this.input((now) => this.core.lifecycle(now, event));
  }

  /** connect(), the first transport opens, Welcome: the session's link. */
  connected(welcome: WelcomeInit = {}): Gw {
    this.connect();
    const gw = this.link().open();
    gw.welcome(welcome);
    return gw;
  }

  /** `old` is lost; the next link opens after the back-off and gets a resumed Welcome. */
  resume(old: Gw, welcome: WelcomeInit = {}): Gw {
    old.drop();
    const gw = this.untilNewLink().open();
    gw.resumed(welcome);
    return gw;
  }
}

export { ErrorCode };
