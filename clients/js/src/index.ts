export { SignalgateClient, SDK_VERSION, type ClientDeps } from "./client.js";
export { SignalgateError, errorCodeName } from "./errors.js";
export type { ClientErrorCode, ServerErrorCode, SignalgateErrorCode } from "./errors.js";
export { Backoff, type BackoffOptions } from "./core/backoff.js";
export { gatewaysFromEndpoints, certificateHash } from "./core/endpoints.js";
export { Liveness, type LivenessAction, type LivenessConfig } from "./core/liveness.js";
export { documentLifecycle, type LifecycleEvent, type PageLifecycle } from "./lifecycle.js";
export { encodeFrame, FrameDecoder, FramingError, DEFAULT_MAX_FRAME_BYTES } from "./framing.js";
export { webSocketConnector, type WebSocketConstructor } from "./transport/websocket.js";
export { webTransportConnector, webTransportAvailable, type WebTransportConstructor } from "./transport/webtransport.js";
export type { CloseInfo, Connection, ConnectionHandlers, ConnectOptions, Connector } from "./transport/types.js";
export type {
  ClientState,
  DisconnectReason,
  GatewayEndpoint,
  JoinResult,
  PeerInfo,
  PeerPresence,
  PeerReason,
  SignalgateClientOptions,
  SignalgateEvents,
  SignalPayload,
  TokenContext,
  TransportKind,
  TransportPreference,
  WebTransportHashInit,
} from "./types.js";
