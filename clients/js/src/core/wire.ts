/** Encoding of client frames and decoding of server frames (pure; protobuf-es). */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  ClientFrameSchema,
  ServerFrameSchema,
  type ClientFrame,
  type ServerFrame,
} from "../gen/signalgate/v1/signalgate_pb.js";

/** The messages the client numbers (ClientFrame.seq): its ordered, acknowledged stream. */
export type NumberedMsg = Extract<ClientFrame["msg"], { case: "join" | "leave" | "signal" }>;

export function encodeClientFrame(id: number, seq: number, msg: ClientFrame["msg"]): Uint8Array {
  return toBinary(ClientFrameSchema, create(ClientFrameSchema, { id: BigInt(id), seq: BigInt(seq), msg }));
}

/** Throws on bytes that are not a ServerFrame. */
export function decodeServerFrame(bytes: Uint8Array): ServerFrame {
  return fromBinary(ServerFrameSchema, bytes);
}

/**
 * A Ping's payload carries its frame id as well, so that a Pong can be matched even by a
 * gateway that leaves `in_reply_to` empty.
 */
export function pingPayload(id: number): Uint8Array {
  const payload = new Uint8Array(8);
  new DataView(payload.buffer).setBigUint64(0, BigInt(id));
  return payload;
}

export function pingIdOf(payload: Uint8Array): number {
  if (payload.length !== 8) return 0;
  return Number(new DataView(payload.buffer, payload.byteOffset, 8).getBigUint64(0));
}
