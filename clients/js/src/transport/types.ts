/**
 * What the client needs from a transport: open it, send one frame, get frames and a close
 * back. Frames here are the bare protobuf bytes of one ClientFrame / ServerFrame; each
 * adapter adds or removes its own framing (none for WebSocket, a varint prefix on the
 * WebTransport stream).
 */

export type TransportKind = "webtransport" | "websocket";

export interface CloseInfo {
  /** True when the peer closed with a close handshake (WebSocket close frame, WT CLOSE). */
  clean: boolean;
  /** WebSocket close code or WebTransport close code, when there is one. */
  code?: number;
  reason: string;
  /** The adapter itself closed the connection because of bad input (e.g. a framing error). */
  protocolError?: boolean;
}

export interface ConnectionHandlers {
  /** One complete frame from the gateway. */
  onFrame(frame: Uint8Array): void;
  /** The connection ended without `close()` having been called. Called at most once. */
  onClose(info: CloseInfo): void;
}

export interface Connection {
  readonly kind: TransportKind;
  /** Sends one frame. Errors surface as `onClose`, never as a throw. */
  send(frame: Uint8Array): void;
  /**
   * Closes the connection after what was sent before it (a Bye or Suspend written just before
   * must still arrive). A close says nothing about the session: only a Bye frame leaves.
   * `onClose` is not called after it.
   */
  close(reason?: string): void;
}

export interface WebTransportHashInit {
  algorithm: "sha-256";
  value: BufferSource;
}

export interface ConnectOptions {
  /** Aborting gives up on an attempt that has not opened yet (its promise rejects). */
  signal: AbortSignal;
  serverCertificateHashes?: WebTransportHashInit[];
  /** Largest inbound frame accepted before the connection is treated as broken. */
  maxFrameBytes?: number;
}

/**
 * Opens a connection. Resolves once it can carry frames (WebSocket: `open`; WebTransport:
 * `ready` and the bidirectional stream created). `handlers` are wired before it resolves.
 */
export type Connector = (
  url: string,
  handlers: ConnectionHandlers,
  options: ConnectOptions,
) => Promise<Connection>;
