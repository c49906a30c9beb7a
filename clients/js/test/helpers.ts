/** A scriptable fake gateway behind fake transports: no sockets, no browser. */
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { vi } from "vitest";
import { SignalgateClient, type ClientDeps } from "../src/client.js";
import {
  ClientFrameSchema,
  ServerFrameSchema,
  WelcomeSchema,
  type ClientFrame,
} from "../src/gen/signalgate/v1/signalgate_pb.js";
import type { LifecycleEvent, PageLifecycle } from "../src/lifecycle.js";
import type { CloseInfo, Connection, ConnectionHandlers, ConnectOptions, TransportKind } from "../src/transport/types.js";
import type { SignalgateClientOptions, SignalgateEvents } from "../src/types.js";

export type ServerFrameInit = MessageInitShape<typeof ServerFrameSchema>;

/** The gateway's end of one connection. */
export class FakeConn implements Connection {
  readonly sent: ClientFrame[] = [];
  closedByClient: string | undefined;

  constructor(
    readonly kind: TransportKind,
    private readonly handlers: ConnectionHandlers,
  ) {}

  send(frame: Uint8Array): void {
    this.sent.push(fromBinary(ClientFrameSchema, frame));
  }

  close(reason = "closed"): void {
    this.closedByClient = reason;
  }

  /** Gateway → client. */
  deliver(frame: ServerFrameInit): void {
    this.handlers.onFrame(toBinary(ServerFrameSchema, create(ServerFrameSchema, frame)));
  }

  deliverRaw(bytes: Uint8Array): void {
    this.handlers.onFrame(bytes);
  }

  /** The connection breaks (or the gateway closes it). */
  drop(info: Partial<CloseInfo> = {}): void {
    this.handlers.onClose({ clean: false, reason: "reset", ...info });
  }

  /** Client frames of one kind, in order. */
  sentOf<K extends NonNullable<ClientFrame["msg"]["case"]>>(
    kind: K,
  ): (ClientFrame & { msg: Extract<ClientFrame["msg"], { case: K }> })[] {
    return this.sent.filter((f) => f.msg.case === kind) as never;
  }

  hello() {
    const h = this.sentOf("hello")[0];
    if (!h) throw new Error("no Hello sent");
    return { id: h.id, ...h.msg.value };
  }

  ack(seq: number): void {
    this.deliver({ msg: { case: "ack", value: { seq: BigInt(seq) } } });
  }

  /** Answers the Hello with a Welcome. */
  welcome(init: MessageInitShape<typeof WelcomeSchema> = {}): void {
    const h = this.sentOf("hello")[0];
    if (!h) throw new Error("no Hello to answer");
    this.deliver({
      seq: 0n,
      inReplyTo: h.id,
      msg: {
        case: "welcome",
        value: create(WelcomeSchema, {
          connectionId: "c-1",
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
}

/** One call of a connector: the test decides whether and when it opens. */
export class Attempt {
  conn: FakeConn | undefined;
  settled = false;

  constructor(
    readonly kind: TransportKind,
    readonly url: string,
    readonly options: ConnectOptions,
    private readonly handlers: ConnectionHandlers,
    private readonly res: (c: Connection) => void,
    private readonly rej: (e: Error) => void,
  ) {}

  open(): FakeConn {
    this.conn = new FakeConn(this.kind, this.handlers);
    this.settled = true;
    this.res(this.conn);
    return this.conn;
  }

  fail(message = "Opening handshake failed"): void {
    this.settled = true;
    this.rej(new Error(message));
  }
}

export class FakeNetwork {
  readonly attempts: Attempt[] = [];

  connector(kind: TransportKind) {
    return (url: string, handlers: ConnectionHandlers, options: ConnectOptions) =>
      new Promise<Connection>((res, rej) => {
        this.attempts.push(new Attempt(kind, url, options, handlers, res, rej));
      });
  }

  last(): Attempt {
    const a = this.attempts[this.attempts.length - 1];
    if (!a) throw new Error("no connection attempt yet");
    return a;
  }

  kinds(): TransportKind[] {
    return this.attempts.map((a) => a.kind);
  }
}

/** A page lifecycle the test drives. */
export class FakeLifecycle implements PageLifecycle {
  private readonly listeners = new Set<(event: LifecycleEvent) => void>();

  subscribe(listener: (event: LifecycleEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get subscribers(): number {
    return this.listeners.size;
  }

  fire(event: LifecycleEvent): void {
    for (const l of [...this.listeners]) l(event);
  }
}

export interface Harness {
  client: SignalgateClient;
  net: FakeNetwork;
  page: FakeLifecycle;
  events: { type: keyof SignalgateEvents; payload: unknown }[];
  of<K extends keyof SignalgateEvents>(type: K): SignalgateEvents[K][];
  /** Lets promises settle and runs timers due within `ms`. */
  tick(ms?: number): Promise<void>;
  /** Runs timers one by one until the client starts a new connection attempt. */
  nextAttempt(): Promise<void>;
  /** Connects over the first transport tried and answers Welcome. */
  connected(welcome?: MessageInitShape<typeof WelcomeSchema>): Promise<FakeConn>;
  setNowOffset(ms: number): void;
}

const EVENT_TYPES: (keyof SignalgateEvents)[] = [
  "connected",
  "resumed",
  "sessionLost",
  "disconnected",
  "gatewaysUpdated",
  "transportFailed",
  "reconnecting",
  "joined",
  "peerJoined",
  "peerState",
  "peerLeft",
  "signal",
  "error",
  "goAway",
  "tokenRefreshed",
  "authFailed",
];

export function harness(
  options: Partial<SignalgateClientOptions> = {},
  deps: Partial<ClientDeps> & { wtAvailable?: boolean } = {},
): Harness {
  const page = new FakeLifecycle();
  const net = new FakeNetwork();
  let offset = 0;
  const client = new SignalgateClient(
    {
      webTransportUrl: "https://127.0.0.1:4433/wt",
      webSocketUrl: "ws://127.0.0.1:4480/ws",
      ...options,
    },
    {
      webTransportAvailable: () => deps.wtAvailable ?? true,
      now: () => Date.now() + offset,
      random: () => 0.5,
      lifecycle: page,
      ...deps,
      // A test replaces one connector; the other stays the fake network's.
      connectors: { webtransport: net.connector("webtransport"), websocket: net.connector("websocket"), ...deps.connectors },
    },
  );
  const events: Harness["events"] = [];
  for (const type of EVENT_TYPES) client.on(type, (payload) => events.push({ type, payload }));
  const h: Harness = {
    client,
    net,
    page,
    events,
    of: (type) => events.filter((e) => e.type === type).map((e) => e.payload) as never,
    tick: async (ms = 0) => {
      await vi.advanceTimersByTimeAsync(ms);
    },
    nextAttempt: async () => {
      const before = net.attempts.length;
      for (let i = 0; i < 100 && net.attempts.length === before; i++) await vi.advanceTimersToNextTimerAsync();
      if (net.attempts.length === before) throw new Error("no new connection attempt");
    },
    connected: async (welcome) => {
      const p = client.connect();
      await h.tick();
      const conn = net.last().open();
      await h.tick();
      conn.welcome(welcome);
      await p;
      return conn;
    },
    setNowOffset: (ms) => {
      offset = ms;
    },
  };
  return h;
}

let seqCounter = 0;
/** A PeerJoined frame with the given seq (a handy ordered frame). */
export function peerJoined(seq: number, peerId = `p${++seqCounter}`, room = "demo"): ServerFrameInit {
  return {
    seq: BigInt(seq),
    msg: { case: "peerJoined", value: { room, peer: { peerId, state: 1 } } },
  };
}
