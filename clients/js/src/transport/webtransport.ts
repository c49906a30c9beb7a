import { encodeFrame, FrameDecoder, FramingError } from "../framing.js";
import type { CloseInfo, Connection, ConnectionHandlers, ConnectOptions, Connector } from "./types.js";

/**
 * After `close()` has ended the stream, how long its last frames get to be delivered before
 * the session is closed anyway.
 */
export const CLOSE_GRACE_MS = 1000;

/** The part of the WebTransport constructor the adapter uses (injectable for tests). */
export type WebTransportConstructor = new (url: string, options?: WebTransportOptions) => WebTransport;

/** True when this environment has a WebTransport implementation. */
export function webTransportAvailable(): boolean {
  return typeof WebTransport !== "undefined";
}

/**
 * WebTransport adapter: after `ready`, the client opens ONE bidirectional stream; frames on it
 * (both directions) are varint-length-delimited.
 */
export function webTransportConnector(
  WebTransportImpl: WebTransportConstructor | undefined = typeof WebTransport === "undefined"
    ? undefined
    : WebTransport,
): Connector {
  return async (url: string, handlers: ConnectionHandlers, options: ConnectOptions): Promise<Connection> => {
    if (!WebTransportImpl) throw new Error("WebTransport is not available");
    if (options.signal.aborted) throw new Error("aborted");
    const wtOptions: WebTransportOptions = {};
    if (options.serverCertificateHashes && options.serverCertificateHashes.length > 0) {
      wtOptions.serverCertificateHashes = options.serverCertificateHashes;
    }
    const wt = new WebTransportImpl(url, wtOptions);
    // `closed` rejects when the session fails; never leave that rejection unhandled.
    wt.closed.catch(() => undefined);
    const onAbort = () => safeClose(wt, "aborted");
    options.signal.addEventListener("abort", onAbort);

    let stream: WebTransportBidirectionalStream;
    try {
      await wt.ready;
      if (options.signal.aborted) throw new Error("aborted");
      stream = await wt.createBidirectionalStream();
      if (options.signal.aborted) throw new Error("aborted");
    } catch (err) {
      safeClose(wt, "failed");
      throw err instanceof Error ? err : new Error(String(err));
    } finally {
      options.signal.removeEventListener("abort", onAbort);
    }

    const writer = stream.writable.getWriter();
    const reader = stream.readable.getReader();
    const decoder = new FrameDecoder(options.maxFrameBytes);
    let finished = false;

    const end = (info: CloseInfo) => {
      if (finished) return;
      finished = true;
      safeClose(wt, info.reason);
      reader.cancel().catch(() => undefined);
      handlers.onClose(info);
    };

    void (async () => {
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (finished) return;
          if (done) {
            end({ clean: true, reason: "stream ended" });
            return;
          }
          let frames: Uint8Array[];
          try {
            frames = decoder.push(value instanceof Uint8Array ? value : new Uint8Array(value as ArrayBuffer));
          } catch (err) {
            if (err instanceof FramingError) {
              end({ clean: false, reason: err.message, protocolError: true });
              return;
            }
            throw err;
          }
          for (const frame of frames) {
            if (finished) return;
            handlers.onFrame(frame);
          }
        }
      } catch (err) {
        end({ clean: false, reason: `read failed: ${describe(err)}` });
      }
    })();

    wt.closed.then(
      (info) => end({ clean: true, code: info.closeCode, reason: info.reason || "session closed" }),
      (err: unknown) => end({ clean: false, reason: describe(err) }),
    );

    return {
      kind: "webtransport",
      send(frame) {
        if (finished) return;
        writer.write(encodeFrame(frame)).catch((err: unknown) => {
          end({ clean: false, reason: `write failed: ${describe(err)}` });
        });
      },
      close(reason = "closed") {
        if (finished) return;
        finished = true;
        // Closing the session resets its streams, which can discard a frame written just
        // before (the Bye of a page being unloaded). So end the stream after the pending
        // writes first, and close the session once that is done (or the gateway has closed
        // it, or the grace time is over).
        const fallback = setTimeout(() => done(), CLOSE_GRACE_MS);
        const done = () => {
          clearTimeout(fallback);
          reader.cancel().catch(() => undefined);
          safeClose(wt, reason);
        };
        writer.close().then(done, done);
        wt.closed.then(done, done);
      },
    };
  };
}

function safeClose(wt: WebTransport, reason: string): void {
  try {
    wt.close({ closeCode: 0, reason });
  } catch {
    // Already closed or closing.
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
