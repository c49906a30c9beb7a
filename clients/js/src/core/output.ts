/** What the core asks its driver to do. */
import type { SignalgateError } from "../errors.js";
import type { TransportKind } from "../transport/types.js";
import type { JoinResult, SignalgateEvents, WebTransportHashInit } from "../types.js";

export type CoreEvent = {
  [K in keyof SignalgateEvents]: { name: K; payload: SignalgateEvents[K] };
}[keyof SignalgateEvents];

export type Output =
  /**
   * Open a connection over `kind` to `url` (WebTransport: pinned to `serverCertificateHashes`,
   * the gateway's own, when given); report it as `link` (opened / openFailed / received /
   * closed).
   */
  | { type: "open"; link: number; kind: TransportKind; url: string; serverCertificateHashes?: WebTransportHashInit[] }
  /** Send one frame (protobuf bytes, unframed) on `link`. */
  | { type: "write"; link: number; bytes: Uint8Array }
  /** Close `link` (or give up opening it); nothing more is reported about it. */
  | { type: "close"; link: number; reason: string }
  | { type: "event"; event: CoreEvent }
  /**
   * Call the app's `getToken`; report the outcome with `tokenReady(now, ticket, token)` or
   * `tokenFailed(now, ticket, message)`. A ticket the core no longer waits for is ignored.
   */
  | { type: "getToken"; ticket: number; reason: "connect" | "refresh" }
  /**
   * Fetch the JSON at `url` (`GET /endpoints`); report it with `endpointsReady(now, ticket,
   * json)` or `endpointsFailed(now, ticket, message)`. A ticket the core no longer waits for
   * is ignored.
   */
  | { type: "fetchEndpoints"; ticket: number; url: string }
  /** App request `req` succeeded: connect (undefined), join (JoinResult), leave (undefined), signal (frame id). */
  | { type: "resolve"; req: number; value: JoinResult | number | undefined }
  | { type: "reject"; req: number; error: SignalgateError };
