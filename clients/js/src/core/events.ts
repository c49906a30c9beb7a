/** Server frames about peers and signals, as the SDK's public event payloads. */
import {
  candidateFromWire,
  descriptionFromWire,
  presenceName,
  reasonName,
  transportName,
} from "../convert.js";
import type { Joined, Peer, ServerFrame, Signal } from "../gen/signalgate/v1/signalgate_pb.js";
import type { JoinResult, PeerInfo, SignalPayload } from "../types.js";
import type { CoreEvent } from "./output.js";

export function peerInfo(p: Peer): PeerInfo {
  const info: PeerInfo = { peerId: p.peerId, state: presenceName(p.state) };
  // Only with authentication: anonymous peers keep the plain shape.
  if (p.name) info.name = p.name;
  if (p.metadata) info.metadata = p.metadata;
  return info;
}

export function joinResult(j: Joined): JoinResult {
  return { room: j.room, peers: j.peers.map(peerInfo) };
}

/** The event for a PeerJoined, PeerState, PeerLeft or Signal frame; undefined for others. */
export function peerEvent(frame: ServerFrame): CoreEvent | undefined {
  const msg = frame.msg;
  switch (msg.case) {
    case "peerJoined":
      return msg.value.peer ? { name: "peerJoined", payload: { room: msg.value.room, peer: peerInfo(msg.value.peer) } } : undefined;
    case "peerState": {
      const s = msg.value;
      return {
        name: "peerState",
        payload: {
          room: s.room,
          peerId: s.peerId,
          state: presenceName(s.state),
          reason: reasonName(s.reason),
          silentForMs: Number(s.silentForMs),
          detectedBy: transportName(s.detectedBy),
        },
      };
    }
    case "peerLeft":
      return { name: "peerLeft", payload: { room: msg.value.room, peerId: msg.value.peerId, reason: reasonName(msg.value.reason) } };
    case "signal": {
      const payload = signalPayload(msg.value);
      return payload ? { name: "signal", payload: { room: msg.value.room, from: msg.value.from, ...payload } } : undefined;
    }
    default:
      return undefined;
  }
}

function signalPayload(s: Signal): SignalPayload | undefined {
  switch (s.payload.case) {
    case "description": {
      const description = descriptionFromWire(s.payload.value);
      return description ? { description } : undefined;
    }
    case "candidate":
      return { candidate: candidateFromWire(s.payload.value) };
    case "data":
      return { data: s.payload.value };
    default:
      return undefined;
  }
}
