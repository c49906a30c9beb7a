import { ErrorCode } from "./gen/signalgate/v1/signalgate_pb.js";

/** Codes the gateway sends (`ErrorCode` without its `ERROR_CODE_` prefix). */
export type ServerErrorCode = keyof typeof ErrorCode;

/** Codes the SDK itself produces. */
export type ClientErrorCode =
  /** `close()` was called (or the client was closed) before the request completed. */
  | "CLOSED"
  /** The request needs a connection and `connect()` was never called. */
  | "NOT_CONNECTED"
  /**
   * The session could not be resumed (RESUME_EXPIRED / RESUME_GAP) before the gateway
   * acknowledged this frame. It may or may not have been processed; it is never sent on the
   * new session (a new peer id), so resend it yourself if it still makes sense.
   */
  | "SESSION_LOST"
  /** join()/leave(): no Joined/Left within `requestTimeoutMs` (the frame may still be processed). */
  | "TIMEOUT"
  /** `maxQueuedFrames` frames are already kept (unacknowledged, or waiting for a connection). */
  | "QUEUE_FULL"
  /** Another connection of this session (a newer attempt) holds it now. */
  | "SUPERSEDED"
  /**
   * The `getToken` option threw, rejected, returned something other than a string, or did
   * not answer within `helloTimeoutMs` (an `error` event; the attempt is retried).
   */
  | "GET_TOKEN_FAILED"
  /**
   * Not one `endpointsUrl` answered with a usable list of gateways (an `error` event; the
   * current list stays in use, and the SDK asks again when it next leaves a gateway).
   */
  | "ENDPOINTS_FAILED";

export type SignalgateErrorCode = ServerErrorCode | ClientErrorCode;

/** The rejection of every SDK promise. */
export class SignalgateError extends Error {
  override readonly name = "SignalgateError";

  constructor(
    readonly code: SignalgateErrorCode,
    message: string,
    /** The ClientFrame id the gateway's Error answered (0 if none or client-side). */
    readonly inReplyTo = 0,
  ) {
    super(message ? `${code}: ${message}` : code);
  }

  /** The gateway's message, or the SDK's (without the code prefix). */
  get detail(): string {
    const prefix = `${this.code}: `;
    return this.message.startsWith(prefix) ? this.message.slice(prefix.length) : "";
  }
}

/** Name of a wire ErrorCode; codes newer than this SDK read as "UNSPECIFIED". */
export function errorCodeName(code: ErrorCode | number): ServerErrorCode {
  const name = (ErrorCode as unknown as Record<number, string | undefined>)[code];
  return (name ?? "UNSPECIFIED") as ServerErrorCode;
}
