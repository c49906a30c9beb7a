/** Conversions between the wire types (generated) and the SDK's public, plain-JS shapes. */
import { create } from "@bufbuild/protobuf";
import {
  IceCandidateSchema,
  PresenceState,
  Reason,
  SdpType,
  SessionDescriptionSchema,
  Transport,
  type IceCandidate,
  type SessionDescription,
} from "./gen/signalgate/v1/signalgate_pb.js";
import type { TransportKind } from "./transport/types.js";

/** Why a peer's presence changed, as the gateway said: `Reason` in lower case. */
export type PeerReason = Lowercase<keyof typeof Reason>;

/** Presence of a peer in a room. `left` only appears in the SDK's own bookkeeping. */
export type PeerPresence = "online" | "unreachable";

export function reasonName(reason: Reason | number): PeerReason {
  const name = (Reason as unknown as Record<number, string | undefined>)[reason];
  return (name ?? "UNSPECIFIED").toLowerCase() as PeerReason;
}

export function presenceName(state: PresenceState): PeerPresence {
  // UNSPECIFIED is treated as online: the gateway only lists peers that are in the room.
  return state === PresenceState.UNREACHABLE ? "unreachable" : "online";
}

export function transportName(t: Transport): TransportKind | "unspecified" {
  switch (t) {
    case Transport.WEBSOCKET:
      return "websocket";
    case Transport.WEBTRANSPORT:
      return "webtransport";
    default:
      return "unspecified";
  }
}

const SDP_TO_WIRE: Record<RTCSdpType, SdpType> = {
  offer: SdpType.OFFER,
  answer: SdpType.ANSWER,
  pranswer: SdpType.PRANSWER,
  rollback: SdpType.ROLLBACK,
};

export function descriptionToWire(d: RTCSessionDescriptionInit): SessionDescription {
  const type = SDP_TO_WIRE[d.type];
  if (type === undefined) throw new TypeError(`unknown SDP type ${String(d.type)}`);
  return create(SessionDescriptionSchema, { type, sdp: d.sdp ?? "" });
}

export function descriptionFromWire(d: SessionDescription): RTCSessionDescriptionInit | undefined {
  switch (d.type) {
    case SdpType.OFFER:
      return { type: "offer", sdp: d.sdp };
    case SdpType.ANSWER:
      return { type: "answer", sdp: d.sdp };
    case SdpType.PRANSWER:
      return { type: "pranswer", sdp: d.sdp };
    case SdpType.ROLLBACK:
      return { type: "rollback", sdp: d.sdp };
    default:
      return undefined;
  }
}

export function candidateToWire(c: RTCIceCandidateInit): IceCandidate {
  const wire = create(IceCandidateSchema, { candidate: c.candidate ?? "" });
  if (c.sdpMid != null) wire.sdpMid = c.sdpMid;
  if (c.sdpMLineIndex != null) wire.sdpMLineIndex = c.sdpMLineIndex;
  if (c.usernameFragment != null) wire.usernameFragment = c.usernameFragment;
  return wire;
}

/** An empty `candidate` string means end-of-candidates (pass it to addIceCandidate as is). */
export function candidateFromWire(c: IceCandidate): RTCIceCandidateInit {
  const init: RTCIceCandidateInit = { candidate: c.candidate };
  if (c.sdpMid !== undefined) init.sdpMid = c.sdpMid;
  if (c.sdpMLineIndex !== undefined) init.sdpMLineIndex = c.sdpMLineIndex;
  if (c.usernameFragment !== undefined) init.usernameFragment = c.usernameFragment;
  return init;
}
