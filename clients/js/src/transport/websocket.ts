import type { Connection, ConnectionHandlers, ConnectOptions, Connector } from "./types.js";

/** The part of the WebSocket constructor the adapter uses (injectable for tests). */
export type WebSocketConstructor = new (url: string) => WebSocket;

/**
 * WebSocket adapter: one binary message is one frame. A text message from the gateway is a
 * protocol error (the connection is closed).
 */
export function webSocketConnector(
  WebSocketImpl: WebSocketConstructor | undefined = globalThis.WebSocket,
): Connector {
  return (url: string, handlers: ConnectionHandlers, options: ConnectOptions) =>
    new Promise<Connection>((resolve, reject) => {
      if (!WebSocketImpl) {
        reject(new Error("WebSocket is not available"));
        return;
      }
      if (options.signal.aborted) {
        reject(new Error("aborted"));
        return;
      }
      let ws: WebSocket;
      try {
        ws = new WebSocketImpl(url);
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      ws.binaryType = "arraybuffer";
      let opened = false;
      let finished = false; // onClose delivered, close() called, or the attempt failed

      const finish = () => {
        finished = true;
        options.signal.removeEventListener("abort", onAbort);
        ws.onopen = null;
        ws.onmessage = null;
        ws.onerror = null;
        ws.onclose = null;
      };
      const onAbort = () => {
        if (opened || finished) return;
        finish();
        safeClose(ws, 1000, "aborted");
        reject(new Error("aborted"));
      };
      options.signal.addEventListener("abort", onAbort);

      const connection: Connection = {
        kind: "websocket",
        send(frame) {
          if (finished || ws.readyState !== 1 /* OPEN */) return;
          try {
            ws.send(frame);
          } catch {
            // A failing send means the socket is closing; its close event reports it.
          }
        },
        close(reason = "closed") {
          if (finished) return;
          finish();
          safeClose(ws, 1000, reason);
        },
      };

      ws.onopen = () => {
        if (finished) return;
        opened = true;
        options.signal.removeEventListener("abort", onAbort);
        resolve(connection);
      };
      ws.onmessage = (ev: MessageEvent) => {
        if (finished) return;
        const data: unknown = ev.data;
        if (data instanceof ArrayBuffer) {
          handlers.onFrame(new Uint8Array(data));
        } else if (ArrayBuffer.isView(data)) {
          handlers.onFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
        } else {
          finish();
          // Browsers only let a page send close code 1000 or 3000-4999.
          safeClose(ws, 1000, "text messages are not supported");
          handlers.onClose({ clean: false, reason: "text message from gateway", protocolError: true });
        }
      };
      ws.onerror = () => {
        // Always followed by a close event, which reports it.
      };
      ws.onclose = (ev: CloseEvent) => {
        if (finished) return;
        finish();
        if (!opened) {
          reject(new Error(`WebSocket closed before opening (code ${ev.code})`));
          return;
        }
        handlers.onClose({ clean: ev.wasClean, code: ev.code, reason: ev.reason || `close code ${ev.code}` });
      };
    });
}

function safeClose(ws: WebSocket, code: number, reason: string): void {
  try {
    // A reason over 123 bytes makes close() throw, and the socket would stay open.
    ws.close(code, new TextDecoder().decode(new TextEncoder().encode(reason).slice(0, 120)).replace(/\uFFFD+$/, ""));
  } catch {
    // Already closing.
  }
}
