/**
 * Which transports a connection round tries, in which order, and what the client learned
 * about the network: when WebTransport could not even open (UDP blocked, or a middlebox that
 * eats QUIC) but WebSocket then worked, trying WebTransport first again would cost
 * `webTransportTimeoutMs` on every reconnect. So WebSocket goes first for `retryMs`; a session
 * welcomed over WebTransport forgets it.
 */
import type { TransportKind } from "../transport/types.js";
import type { CoreConfig } from "./config.js";

export class TransportChoice {
  private webSocketFirstUntil: number | undefined;

  constructor(private readonly config: Pick<CoreConfig, "transport" | "webTransportRetryMs">) {}

  /**
   * The transports of a round to a gateway that offers `offered` (see `gatewayTransports`).
   * The memory is about this network, so it applies to every gateway.
   */
  order(now: number, offered: { webTransport: boolean; webSocket: boolean }): TransportKind[] {
    switch (this.config.transport) {
      case "webtransport":
        return offered.webTransport ? ["webtransport"] : [];
      case "websocket":
        return offered.webSocket ? ["websocket"] : [];
      case "auto": {
        const order: TransportKind[] = [];
        if (offered.webTransport) order.push("webtransport");
        if (offered.webSocket) order.push("websocket");
        if (this.webSocketFirst(now)) order.reverse();
        return order;
      }
    }
  }

  /** WebSocket goes first for now (WebTransport recently failed to open here). */
  webSocketFirst(now: number): boolean {
    return this.webSocketFirstUntil !== undefined && now < this.webSocketFirstUntil;
  }

  /**
   * A Welcome arrived over `kind`; `webTransportOpenFailed`: in the same round, WebTransport
   * failed to open (error or timeout, not a refusal by the gateway).
   */
  welcomed(now: number, kind: TransportKind, webTransportOpenFailed: boolean): void {
    if (kind === "webtransport") {
      this.webSocketFirstUntil = undefined;
    } else if (webTransportOpenFailed && this.config.transport === "auto") {
      this.webSocketFirstUntil = now + this.config.webTransportRetryMs;
    }
  }
}
