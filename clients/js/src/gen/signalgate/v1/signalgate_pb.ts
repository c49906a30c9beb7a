// The signalgate wire contract: the only thing clients and the gateway share.
//
// Framing
//   WebSocket:    one binary message carries exactly one frame. Text messages are refused.
//   WebTransport: the client opens ONE bidirectional stream right after the session is
//                 established; frames on it, in both directions, are prefixed by their length
//                 as a protobuf varint (prost `encode_length_delimited`, protobuf-es
//                 `sizeDelimitedEncode`). A second stream is refused.
//
// Leaving, losing, suspending
//   Only a frame says that a client leaves: Bye. The gateway ends the session at once (peers
//   see PeerLeft, reason BYE) and closes the connection (code 1000). Whatever happens to a
//   transport says nothing about the user's intent — browsers close a frozen or cached page's
//   connections themselves — so a WebSocket Close frame (any code), a WebTransport session
//   closed with or without a FIN on the control stream, a TCP FIN or RST and a liveness timeout
//   all leave the session resumable: peers see PeerState UNREACHABLE with the reason, and
//   PeerLeft (RESUME_WINDOW_EXPIRED) only when the resume window runs out without a resume.
//   A client that closes without Bye therefore lingers as UNREACHABLE for the resume window.
//   Bye is idempotent: the gateway forgets the connection with the first one and reads nothing
//   more from it.
//   Suspend: the client's page is about to be frozen or put in the back/forward cache. The
//   gateway detaches the session at once (peers see UNREACHABLE, reason SUSPENDED), holds what
//   is sent to it, and closes the connection (4005); the client resumes when it runs again.
//
// Conversation
//   1. The client sends Hello first. Anything else before Hello gets Error HELLO_REQUIRED.
//      The gateway answers Welcome (with `in_reply_to` = the Hello's id).
//   2. Join / Leave rooms, Signal peers in those rooms, Ping the gateway, Ack what was read.
//   3. Peers' presence arrives as PeerJoined, PeerState (ONLINE <-> UNREACHABLE), PeerLeft.
//   4. Bye to leave for good (or Suspend before the page is frozen).
//
// Gateway -> client delivery: seq, Ack, resume
//   Every ServerFrame that belongs to the session's ordered stream carries `seq` = 1, 2, 3 ...
//   (per session, never reused, continued across resumes). Frames about this one connection
//   (Welcome, Pong, Ack, GoAway, and Errors sent before Welcome) carry seq = 0 and are never
//   replayed. A client remembers the highest seq it processed, Acks it now and then (so the
//   gateway can forget what is acknowledged), and after a reconnect sends
//   Hello{resume_token, last_seq}: the gateway answers Welcome{resumed: true} and then replays
//   every frame with seq > last_seq, in order, up to Welcome.replay_until_seq, before anything
//   new. What the gateway held for the session while it was unreachable is part of that replay.
//   Presence news held for an unreachable session is coalesced per (room, peer): the replay
//   brings each peer's latest state, in the place of its first change (a peer that joined and
//   left meanwhile is not mentioned), never a log of every flap. The replay is paced by what
//   the connection drains.
//
// Client -> gateway delivery: ClientFrame.seq
//   Join, Leave and Signal may be numbered: ClientFrame.seq = 1, 2, 3 ... per session (continued
//   across resumes; a new session starts again at 1). The gateway processes numbered frames
//   exactly once and in order: one whose seq is not above the last processed is a duplicate
//   and is skipped; one that skips a number is refused (INVALID_ARGUMENT) and not processed.
//   It acknowledges with a ServerFrame Ack{seq} (seq 0, coalesced): every numbered frame up to
//   `seq` was processed — accepted (a relayed signal is delivered, or held for an unreachable
//   recipient), or refused with an Error (in_reply_to = its id) that the client receives
//   before that Ack. Welcome.last_client_seq says the same to a resuming client, with the same
//   ordering promise once the replay up to Welcome.replay_until_seq is read: resend every
//   numbered frame after it, in order, on the new connection. Frames that arrive on a
//   connection after a newer one took the session over are not processed; numbering is what
//   makes resending them safe. seq = 0: not numbered (processed at most once, never
//   acknowledged); Hello, Ping, Ack, Bye and Suspend are never numbered.
//   A signal the gateway accepted for a recipient that later leaves for good (PeerLeft) is
//   discarded with the recipient's session.
//
// Moving a live session to a new connection
//   Hello{resume_token, last_seq, attempt} on the new connection takes the session over at
//   once (the old connection is closed with 4001, superseded; peers see nothing). Resend the
//   numbered frames after Welcome.last_client_seq on the new connection.
// Authentication (when the gateway is configured with keys; otherwise anyone may join any
//   room and Hello.token is ignored)
//   Hello.token is a JWT: `sub` (the identity) and `exp` are required; `nbf`, `iat`, `aud`,
//   `iss` are checked when present or configured; `rooms` (array of room names, a trailing `*`
//   grants every room with that prefix), `signal` (bool, default true: may send signals),
//   `device` (optional: one session per identity and device), `name` and `metadata` (what
//   peers see in Joined and PeerJoined; never chosen by the client outside the token). A
//   refused token gets an Error with a TOKEN_* code and nothing else happens. Before `exp` the
//   client sends Refresh{token} (same identity) and gets Refreshed; a session whose token
//   expired without refresh is closed (4006) after a grace period, and stays resumable with a
//   fresh token.
//   With tokens, the identity owns its session: a Hello for the same identity (and device) as
//   a live or unreachable session takes that session over at once — with or without a resume
//   token — and a resume token of another identity's session is refused.
//
// Close codes (WebSocket close code = WebTransport session error code), when the gateway
//   closes: 1000 after Bye, 1001 shutdown, 1008 protocol error, 4001 superseded by a newer
//   connection of the session, 4002 slow consumer, 4003 no Hello in time, 4004 liveness
//   timeout, 4005 suspended (after Suspend), 4006 token expired, 4007 disconnected by the
//   application's backend (the Error before the close says why), 4008 the gateway is at its
//   session limit, 4009 the gateway is cut off from its cluster (reconnect to another one).
//
// Cluster mode: GoAway with reason SERVER_SHUTDOWN and reconnect_after_ms 0 is a drain (the
// session is handed to another gateway: reconnect now, to another gateway if the client knows
// several, resuming); reason GATEWAY_LOST says this gateway is cut off.

// @generated by protoc-gen-es v2.17.0 with parameter "target=ts,import_extension=js"
// @generated from file signalgate/v1/signalgate.proto (package signalgate.v1, syntax proto3)
/* eslint-disable */

import type { GenEnum, GenFile, GenMessage } from "@bufbuild/protobuf/codegenv2";
import { enumDesc, fileDesc, messageDesc } from "@bufbuild/protobuf/codegenv2";
import type { Message } from "@bufbuild/protobuf";

/**
 * Describes the file signalgate/v1/signalgate.proto.
 */
export const file_signalgate_v1_signalgate: GenFile = /*@__PURE__*/
  fileDesc("Ch5zaWduYWxnYXRlL3YxL3NpZ25hbGdhdGUucHJvdG8SDXNpZ25hbGdhdGUudjEiigMKC0NsaWVudEZyYW1lEgoKAmlkGAEgASgEEgsKA3NlcRgKIAEoBBIlCgVoZWxsbxgCIAEoCzIULnNpZ25hbGdhdGUudjEuSGVsbG9IABIjCgRqb2luGAMgASgLMhMuc2lnbmFsZ2F0ZS52MS5Kb2luSAASJQoFbGVhdmUYBCABKAsyFC5zaWduYWxnYXRlLnYxLkxlYXZlSAASJwoGc2lnbmFsGAUgASgLMhUuc2lnbmFsZ2F0ZS52MS5TaWduYWxIABIjCgRwaW5nGAYgASgLMhMuc2lnbmFsZ2F0ZS52MS5QaW5nSAASIQoDYWNrGAcgASgLMhIuc2lnbmFsZ2F0ZS52MS5BY2tIABIhCgNieWUYCCABKAsyEi5zaWduYWxnYXRlLnYxLkJ5ZUgAEikKB3N1c3BlbmQYCSABKAsyFi5zaWduYWxnYXRlLnYxLlN1c3BlbmRIABIpCgdyZWZyZXNoGAsgASgLMhYuc2lnbmFsZ2F0ZS52MS5SZWZyZXNoSABCBQoDbXNnInkKBUhlbGxvEg0KBXRva2VuGAEgASgJEhQKDHJlc3VtZV90b2tlbhgCIAEoCRIQCghsYXN0X3NlcRgDIAEoBBIPCgdhdHRlbXB0GAQgASgEEg4KBmNsaWVudBgFIAEoCRIYChBhY2tlZF9jbGllbnRfc2VxGAYgASgEIhQKBEpvaW4SDAoEcm9vbRgBIAEoCSIVCgVMZWF2ZRIMCgRyb29tGAEgASgJIrcBCgZTaWduYWwSDAoEcm9vbRgBIAEoCRIKCgJ0bxgCIAEoCRIMCgRmcm9tGAMgASgJEjgKC2Rlc2NyaXB0aW9uGAQgASgLMiEuc2lnbmFsZ2F0ZS52MS5TZXNzaW9uRGVzY3JpcHRpb25IABIwCgljYW5kaWRhdGUYBSABKAsyGy5zaWduYWxnYXRlLnYxLkljZUNhbmRpZGF0ZUgAEg4KBGRhdGEYBiABKAxIAEIJCgdwYXlsb2FkIkcKElNlc3Npb25EZXNjcmlwdGlvbhIkCgR0eXBlGAEgASgOMhYuc2lnbmFsZ2F0ZS52MS5TZHBUeXBlEgsKA3NkcBgCIAEoCSKtAQoMSWNlQ2FuZGlkYXRlEhEKCWNhbmRpZGF0ZRgBIAEoCRIUCgdzZHBfbWlkGAIgASgJSACIAQESHQoQc2RwX21fbGluZV9pbmRleBgDIAEoDUgBiAEBEh4KEXVzZXJuYW1lX2ZyYWdtZW50GAQgASgJSAKIAQFCCgoIX3NkcF9taWRCEwoRX3NkcF9tX2xpbmVfaW5kZXhCFAoSX3VzZXJuYW1lX2ZyYWdtZW50IhcKBFBpbmcSDwoHcGF5bG9hZBgBIAEoDCISCgNBY2sSCwoDc2VxGAEgASgEIgUKA0J5ZSIYCgdSZWZyZXNoEg0KBXRva2VuGAEgASgJIgkKB1N1c3BlbmQisAQKC1NlcnZlckZyYW1lEgsKA3NlcRgBIAEoBBITCgtpbl9yZXBseV90bxgCIAEoBBIpCgd3ZWxjb21lGAMgASgLMhYuc2lnbmFsZ2F0ZS52MS5XZWxjb21lSAASJwoGam9pbmVkGAQgASgLMhUuc2lnbmFsZ2F0ZS52MS5Kb2luZWRIABIwCgtwZWVyX2pvaW5lZBgFIAEoCzIZLnNpZ25hbGdhdGUudjEuUGVlckpvaW5lZEgAEi4KCnBlZXJfc3RhdGUYBiABKAsyGC5zaWduYWxnYXRlLnYxLlBlZXJTdGF0ZUgAEiwKCXBlZXJfbGVmdBgHIAEoCzIXLnNpZ25hbGdhdGUudjEuUGVlckxlZnRIABInCgZzaWduYWwYCCABKAsyFS5zaWduYWxnYXRlLnYxLlNpZ25hbEgAEiMKBHBvbmcYCSABKAsyEy5zaWduYWxnYXRlLnYxLlBvbmdIABIlCgVlcnJvchgKIAEoCzIULnNpZ25hbGdhdGUudjEuRXJyb3JIABIoCgdnb19hd2F5GAsgASgLMhUuc2lnbmFsZ2F0ZS52MS5Hb0F3YXlIABIjCgRsZWZ0GAwgASgLMhMuc2lnbmFsZ2F0ZS52MS5MZWZ0SAASIQoDYWNrGA0gASgLMhIuc2lnbmFsZ2F0ZS52MS5BY2tIABItCglyZWZyZXNoZWQYDiABKAsyGC5zaWduYWxnYXRlLnYxLlJlZnJlc2hlZEgAQgUKA21zZyKzAgoHV2VsY29tZRIVCg1jb25uZWN0aW9uX2lkGAEgASgJEg8KB3BlZXJfaWQYAiABKAkSFAoMcmVzdW1lX3Rva2VuGAMgASgJEhsKE2xpdmVuZXNzX3RpbWVvdXRfbXMYBCABKA0SGAoQcGluZ19pbnRlcnZhbF9tcxgFIAEoDRIPCgdyZXN1bWVkGAYgASgIEhgKEHJlc3VtZV93aW5kb3dfbXMYByABKA0SDQoFcm9vbXMYCCADKAkSFwoPbWF4X2ZyYW1lX2J5dGVzGAkgASgNEhcKD2xhc3RfY2xpZW50X3NlcRgKIAEoBBIYChByZXBsYXlfdW50aWxfc2VxGAsgASgEEhAKCGlkZW50aXR5GAwgASgJEhsKE3Rva2VuX2V4cGlyZXNfaW5fbXMYDSABKAQiKAoJUmVmcmVzaGVkEhsKE3Rva2VuX2V4cGlyZXNfaW5fbXMYASABKAQiZAoEUGVlchIPCgdwZWVyX2lkGAEgASgJEisKBXN0YXRlGAIgASgOMhwuc2lnbmFsZ2F0ZS52MS5QcmVzZW5jZVN0YXRlEgwKBG5hbWUYAyABKAkSEAoIbWV0YWRhdGEYBCABKAkiOgoGSm9pbmVkEgwKBHJvb20YASABKAkSIgoFcGVlcnMYAiADKAsyEy5zaWduYWxnYXRlLnYxLlBlZXIiFAoETGVmdBIMCgRyb29tGAEgASgJIj0KClBlZXJKb2luZWQSDAoEcm9vbRgBIAEoCRIhCgRwZWVyGAIgASgLMhMuc2lnbmFsZ2F0ZS52MS5QZWVyIsQBCglQZWVyU3RhdGUSDAoEcm9vbRgBIAEoCRIPCgdwZWVyX2lkGAIgASgJEisKBXN0YXRlGAMgASgOMhwuc2lnbmFsZ2F0ZS52MS5QcmVzZW5jZVN0YXRlEiUKBnJlYXNvbhgEIAEoDjIVLnNpZ25hbGdhdGUudjEuUmVhc29uEhUKDXNpbGVudF9mb3JfbXMYBSABKAQSLQoLZGV0ZWN0ZWRfYnkYBiABKA4yGC5zaWduYWxnYXRlLnYxLlRyYW5zcG9ydCJQCghQZWVyTGVmdBIMCgRyb29tGAEgASgJEg8KB3BlZXJfaWQYAiABKAkSJQoGcmVhc29uGAMgASgOMhUuc2lnbmFsZ2F0ZS52MS5SZWFzb24iFwoEUG9uZxIPCgdwYXlsb2FkGAEgASgMIlUKBUVycm9yEiYKBGNvZGUYASABKA4yGC5zaWduYWxnYXRlLnYxLkVycm9yQ29kZRIPCgdtZXNzYWdlGAIgASgJEhMKC2luX3JlcGx5X3RvGAMgASgEIl4KBkdvQXdheRIlCgZyZWFzb24YASABKA4yFS5zaWduYWxnYXRlLnYxLlJlYXNvbhIaChJyZWNvbm5lY3RfYWZ0ZXJfbXMYAiABKA0SEQoJc3ByZWFkX21zGAMgASgNKnoKB1NkcFR5cGUSGAoUU0RQX1RZUEVfVU5TUEVDSUZJRUQQABISCg5TRFBfVFlQRV9PRkZFUhABEhMKD1NEUF9UWVBFX0FOU1dFUhACEhUKEVNEUF9UWVBFX1BSQU5TV0VSEAMSFQoRU0RQX1RZUEVfUk9MTEJBQ0sQBCpqCg1QcmVzZW5jZVN0YXRlEh4KGlBSRVNFTkNFX1NUQVRFX1VOU1BFQ0lGSUVEEAASGQoVUFJFU0VOQ0VfU1RBVEVfT05MSU5FEAESHgoaUFJFU0VOQ0VfU1RBVEVfVU5SRUFDSEFCTEUQAipbCglUcmFuc3BvcnQSGQoVVFJBTlNQT1JUX1VOU1BFQ0lGSUVEEAASFwoTVFJBTlNQT1JUX1dFQlNPQ0tFVBABEhoKFlRSQU5TUE9SVF9XRUJUUkFOU1BPUlQQAirjAwoGUmVhc29uEhYKElJFQVNPTl9VTlNQRUNJRklFRBAAEhsKF1JFQVNPTl9MSVZFTkVTU19USU1FT1VUEAESGgoWUkVBU09OX0NPTk5FQ1RJT05fTE9TVBACEhgKFFJFQVNPTl9DTElFTlRfQ0xPU0VEEAMSFAoQUkVBU09OX0xFRlRfUk9PTRAEEiAKHFJFQVNPTl9SRVNVTUVfV0lORE9XX0VYUElSRUQQBRIVChFSRUFTT05fU1VQRVJTRURFRBAGEhgKFFJFQVNPTl9TTE9XX0NPTlNVTUVSEAcSGQoVUkVBU09OX1BST1RPQ09MX0VSUk9SEAgSGgoWUkVBU09OX1NFUlZFUl9TSFVURE9XThAJEhIKDlJFQVNPTl9SRVNVTUVEEAoSGAoUUkVBU09OX0hFTExPX1RJTUVPVVQQCxIOCgpSRUFTT05fQllFEAwSFAoQUkVBU09OX1NVU1BFTkRFRBANEhUKEVJFQVNPTl9SRVNVTUVfR0FQEA4SGAoUUkVBU09OX1RPS0VOX0VYUElSRUQQDxIXChNSRUFTT05fRElTQ09OTkVDVEVEEBASFwoTUkVBU09OX0dBVEVXQVlfRlVMTBAREhcKE1JFQVNPTl9HQVRFV0FZX0xPU1QQEiqJCQoJRXJyb3JDb2RlEhoKFkVSUk9SX0NPREVfVU5TUEVDSUZJRUQQABIeChpFUlJPUl9DT0RFX01BTEZPUk1FRF9GUkFNRRABEh4KGkVSUk9SX0NPREVfRlJBTUVfVE9PX0xBUkdFEAISIAocRVJST1JfQ09ERV9VTlNVUFBPUlRFRF9GUkFNRRADEh0KGUVSUk9SX0NPREVfSEVMTE9fUkVRVUlSRUQQBBIfChtFUlJPUl9DT0RFX0FMUkVBRFlfV0VMQ09NRUQQBRIfChtFUlJPUl9DT0RFX0lOVkFMSURfQVJHVU1FTlQQBhIbChdFUlJPUl9DT0RFX1VOS05PV05fUk9PTRAHEhkKFUVSUk9SX0NPREVfTk9UX0pPSU5FRBAIEh8KG0VSUk9SX0NPREVfUEVFUl9OT1RfSU5fUk9PTRAJEhgKFEVSUk9SX0NPREVfUk9PTV9GVUxMEAoSHQoZRVJST1JfQ09ERV9UT09fTUFOWV9ST09NUxALEhsKF0VSUk9SX0NPREVfUkFURV9MSU1JVEVEEAwSJAogRVJST1JfQ09ERV9SRUNJUElFTlRfQlVGRkVSX0ZVTEwQDRIdChlFUlJPUl9DT0RFX1JFU1VNRV9FWFBJUkVEEA4SGQoVRVJST1JfQ09ERV9SRVNVTUVfR0FQEA8SHAoYRVJST1JfQ09ERV9TVEFMRV9BVFRFTVBUEBASHQoZRVJST1JfQ09ERV9BTFJFQURZX0pPSU5FRBAREhwKGEVSUk9SX0NPREVfU0hVVFRJTkdfRE9XThASEhYKEkVSUk9SX0NPREVfQ0xPU0lORxATEhwKGEVSUk9SX0NPREVfVE9LRU5fTUlTU0lORxAUEh4KGkVSUk9SX0NPREVfVE9LRU5fTUFMRk9STUVEEBUSIgoeRVJST1JfQ09ERV9UT0tFTl9CQURfU0lHTkFUVVJFEBYSHAoYRVJST1JfQ09ERV9UT0tFTl9FWFBJUkVEEBcSIgoeRVJST1JfQ09ERV9UT0tFTl9OT1RfWUVUX1ZBTElEEBgSIwofRVJST1JfQ09ERV9UT0tFTl9XUk9OR19BVURJRU5DRRAZEiEKHUVSUk9SX0NPREVfVE9LRU5fV1JPTkdfSVNTVUVSEBoSHAoYRVJST1JfQ09ERV9UT0tFTl9SRVZPS0VEEBsSHwobRVJST1JfQ09ERV9ST09NX05PVF9HUkFOVEVEEBwSIQodRVJST1JfQ09ERV9TSUdOQUxfTk9UX0dSQU5URUQQHRIgChxFUlJPUl9DT0RFX0lERU5USVRZX01JU01BVENIEB4SIAocRVJST1JfQ09ERV9UT09fTUFOWV9TRVNTSU9OUxAfEhsKF0VSUk9SX0NPREVfRElTQ09OTkVDVEVEECASJAogRVJST1JfQ09ERV9SRUNJUElFTlRfVU5BVkFJTEFCTEUQIRIiCh5FUlJPUl9DT0RFX0NMVVNURVJfVU5BVkFJTEFCTEUQIhIiCh5FUlJPUl9DT0RFX1NUT1JBR0VfVU5BVkFJTEFCTEUQI2IGcHJvdG8z");

/**
 * @generated from message signalgate.v1.ClientFrame
 */
export type ClientFrame = Message<"signalgate.v1.ClientFrame"> & {
  /**
   * Chosen by the client (any value; 0 means "no reply correlation wanted"). Replies and
   * errors caused by this frame echo it in ServerFrame.in_reply_to.
   *
   * @generated from field: uint64 id = 1;
   */
  id: bigint;

  /**
   * Position in the client's ordered stream (Join, Leave, Signal; see the header); 0 = not
   * numbered.
   *
   * @generated from field: uint64 seq = 10;
   */
  seq: bigint;

  /**
   * @generated from oneof signalgate.v1.ClientFrame.msg
   */
  msg: {
    /**
     * @generated from field: signalgate.v1.Hello hello = 2;
     */
    value: Hello;
    case: "hello";
  } | {
    /**
     * @generated from field: signalgate.v1.Join join = 3;
     */
    value: Join;
    case: "join";
  } | {
    /**
     * @generated from field: signalgate.v1.Leave leave = 4;
     */
    value: Leave;
    case: "leave";
  } | {
    /**
     * @generated from field: signalgate.v1.Signal signal = 5;
     */
    value: Signal;
    case: "signal";
  } | {
    /**
     * @generated from field: signalgate.v1.Ping ping = 6;
     */
    value: Ping;
    case: "ping";
  } | {
    /**
     * @generated from field: signalgate.v1.Ack ack = 7;
     */
    value: Ack;
    case: "ack";
  } | {
    /**
     * @generated from field: signalgate.v1.Bye bye = 8;
     */
    value: Bye;
    case: "bye";
  } | {
    /**
     * @generated from field: signalgate.v1.Suspend suspend = 9;
     */
    value: Suspend;
    case: "suspend";
  } | {
    /**
     * @generated from field: signalgate.v1.Refresh refresh = 11;
     */
    value: Refresh;
    case: "refresh";
  } | { case: undefined; value?: undefined };
};

/**
 * Describes the message signalgate.v1.ClientFrame.
 * Use `create(ClientFrameSchema)` to create a new message.
 */
export const ClientFrameSchema: GenMessage<ClientFrame> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 0);

/**
 * @generated from message signalgate.v1.Hello
 */
export type Hello = Message<"signalgate.v1.Hello"> & {
  /**
   * A JWT when the gateway requires authentication (see the header); ignored otherwise.
   *
   * @generated from field: string token = 1;
   */
  token: string;

  /**
   * From an earlier Welcome: asks to resume that session instead of starting a new one.
   *
   * @generated from field: string resume_token = 2;
   */
  resumeToken: string;

  /**
   * With resume_token: the highest ServerFrame.seq the client has processed.
   *
   * @generated from field: uint64 last_seq = 3;
   */
  lastSeq: bigint;

  /**
   * With resume_token: a number (>= 1) the client increases on every connection attempt of
   * one session. A Hello whose attempt is not above the highest attempt the session has seen
   * is refused (STALE_ATTEMPT), so a slow, stale connect can never take the session away from
   * a newer connection of the same client. 0 with a resume token is refused (INVALID_ARGUMENT).
   *
   * @generated from field: uint64 attempt = 4;
   */
  attempt: bigint;

  /**
   * Free text for logs, e.g. "signalgate-js/0.1.0".
   *
   * @generated from field: string client = 5;
   */
  client: string;

  /**
   * With resume_token: the highest ClientFrame.seq the gateway acknowledged to this client
   * (Ack, Welcome.last_client_seq). A durable gateway acknowledges a signal once its
   * recipient's log stored it, before the sender's own log says so; a session recovered
   * from its log after a crash continues from here rather than from an older stored point.
   *
   * @generated from field: uint64 acked_client_seq = 6;
   */
  ackedClientSeq: bigint;
};

/**
 * Describes the message signalgate.v1.Hello.
 * Use `create(HelloSchema)` to create a new message.
 */
export const HelloSchema: GenMessage<Hello> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 1);

/**
 * @generated from message signalgate.v1.Join
 */
export type Join = Message<"signalgate.v1.Join"> & {
  /**
   * 1..=64 bytes of [A-Za-z0-9._:-].
   *
   * @generated from field: string room = 1;
   */
  room: string;
};

/**
 * Describes the message signalgate.v1.Join.
 * Use `create(JoinSchema)` to create a new message.
 */
export const JoinSchema: GenMessage<Join> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 2);

/**
 * @generated from message signalgate.v1.Leave
 */
export type Leave = Message<"signalgate.v1.Leave"> & {
  /**
   * @generated from field: string room = 1;
   */
  room: string;
};

/**
 * Describes the message signalgate.v1.Leave.
 * Use `create(LeaveSchema)` to create a new message.
 */
export const LeaveSchema: GenMessage<Leave> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 3);

/**
 * @generated from message signalgate.v1.Signal
 */
export type Signal = Message<"signalgate.v1.Signal"> & {
  /**
   * @generated from field: string room = 1;
   */
  room: string;

  /**
   * Peer id of the recipient (who must be in `room`).
   *
   * @generated from field: string to = 2;
   */
  to: string;

  /**
   * Set by the gateway to the sender's peer id. Whatever a client puts here is ignored.
   *
   * @generated from field: string from = 3;
   */
  from: string;

  /**
   * @generated from oneof signalgate.v1.Signal.payload
   */
  payload: {
    /**
     * @generated from field: signalgate.v1.SessionDescription description = 4;
     */
    value: SessionDescription;
    case: "description";
  } | {
    /**
     * @generated from field: signalgate.v1.IceCandidate candidate = 5;
     */
    value: IceCandidate;
    case: "candidate";
  } | {
    /**
     * Application bytes, relayed untouched.
     *
     * @generated from field: bytes data = 6;
     */
    value: Uint8Array;
    case: "data";
  } | { case: undefined; value?: undefined };
};

/**
 * Describes the message signalgate.v1.Signal.
 * Use `create(SignalSchema)` to create a new message.
 */
export const SignalSchema: GenMessage<Signal> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 4);

/**
 * @generated from message signalgate.v1.SessionDescription
 */
export type SessionDescription = Message<"signalgate.v1.SessionDescription"> & {
  /**
   * @generated from field: signalgate.v1.SdpType type = 1;
   */
  type: SdpType;

  /**
   * @generated from field: string sdp = 2;
   */
  sdp: string;
};

/**
 * Describes the message signalgate.v1.SessionDescription.
 * Use `create(SessionDescriptionSchema)` to create a new message.
 */
export const SessionDescriptionSchema: GenMessage<SessionDescription> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 5);

/**
 * RTCIceCandidateInit. An empty `candidate` means end-of-candidates.
 *
 * @generated from message signalgate.v1.IceCandidate
 */
export type IceCandidate = Message<"signalgate.v1.IceCandidate"> & {
  /**
   * @generated from field: string candidate = 1;
   */
  candidate: string;

  /**
   * @generated from field: optional string sdp_mid = 2;
   */
  sdpMid?: string | undefined;

  /**
   * @generated from field: optional uint32 sdp_m_line_index = 3;
   */
  sdpMLineIndex?: number | undefined;

  /**
   * @generated from field: optional string username_fragment = 4;
   */
  usernameFragment?: string | undefined;
};

/**
 * Describes the message signalgate.v1.IceCandidate.
 * Use `create(IceCandidateSchema)` to create a new message.
 */
export const IceCandidateSchema: GenMessage<IceCandidate> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 6);

/**
 * Checks that the gateway is alive; answered by Pong with the same payload.
 *
 * @generated from message signalgate.v1.Ping
 */
export type Ping = Message<"signalgate.v1.Ping"> & {
  /**
   * @generated from field: bytes payload = 1;
   */
  payload: Uint8Array;
};

/**
 * Describes the message signalgate.v1.Ping.
 * Use `create(PingSchema)` to create a new message.
 */
export const PingSchema: GenMessage<Ping> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 7);

/**
 * From the client: "I have processed every ServerFrame up to and including seq."
 * From the gateway: "I have processed every numbered ClientFrame up to and including seq."
 *
 * @generated from message signalgate.v1.Ack
 */
export type Ack = Message<"signalgate.v1.Ack"> & {
  /**
   * @generated from field: uint64 seq = 1;
   */
  seq: bigint;
};

/**
 * Describes the message signalgate.v1.Ack.
 * Use `create(AckSchema)` to create a new message.
 */
export const AckSchema: GenMessage<Ack> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 8);

/**
 * "I am leaving for good": the gateway ends the session (peers see PeerLeft, reason BYE) and
 * closes the connection with code 1000. Before Hello it is refused (HELLO_REQUIRED).
 *
 * @generated from message signalgate.v1.Bye
 */
export type Bye = Message<"signalgate.v1.Bye"> & {
};

/**
 * Describes the message signalgate.v1.Bye.
 * Use `create(ByeSchema)` to create a new message.
 */
export const ByeSchema: GenMessage<Bye> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 9);

/**
 * A new token for the session's identity, before the current one expires. Answered by
 * Refreshed, or an Error (TOKEN_*, IDENTITY_MISMATCH) that leaves the current token in force.
 *
 * @generated from message signalgate.v1.Refresh
 */
export type Refresh = Message<"signalgate.v1.Refresh"> & {
  /**
   * @generated from field: string token = 1;
   */
  token: string;
};

/**
 * Describes the message signalgate.v1.Refresh.
 * Use `create(RefreshSchema)` to create a new message.
 */
export const RefreshSchema: GenMessage<Refresh> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 10);

/**
 * "My page is about to be frozen or cached; I will resume": the gateway detaches the session
 * (peers see PeerState UNREACHABLE, reason SUSPENDED), holds what is sent to it for the resume
 * window, and closes the connection with code 4005. Before Hello it is refused
 * (HELLO_REQUIRED).
 *
 * @generated from message signalgate.v1.Suspend
 */
export type Suspend = Message<"signalgate.v1.Suspend"> & {
};

/**
 * Describes the message signalgate.v1.Suspend.
 * Use `create(SuspendSchema)` to create a new message.
 */
export const SuspendSchema: GenMessage<Suspend> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 11);

/**
 * @generated from message signalgate.v1.ServerFrame
 */
export type ServerFrame = Message<"signalgate.v1.ServerFrame"> & {
  /**
   * Position in the session's ordered stream (see the header); 0 = not part of it.
   *
   * @generated from field: uint64 seq = 1;
   */
  seq: bigint;

  /**
   * The ClientFrame.id this frame answers; 0 when it answers nothing.
   *
   * @generated from field: uint64 in_reply_to = 2;
   */
  inReplyTo: bigint;

  /**
   * @generated from oneof signalgate.v1.ServerFrame.msg
   */
  msg: {
    /**
     * @generated from field: signalgate.v1.Welcome welcome = 3;
     */
    value: Welcome;
    case: "welcome";
  } | {
    /**
     * @generated from field: signalgate.v1.Joined joined = 4;
     */
    value: Joined;
    case: "joined";
  } | {
    /**
     * @generated from field: signalgate.v1.PeerJoined peer_joined = 5;
     */
    value: PeerJoined;
    case: "peerJoined";
  } | {
    /**
     * @generated from field: signalgate.v1.PeerState peer_state = 6;
     */
    value: PeerState;
    case: "peerState";
  } | {
    /**
     * @generated from field: signalgate.v1.PeerLeft peer_left = 7;
     */
    value: PeerLeft;
    case: "peerLeft";
  } | {
    /**
     * @generated from field: signalgate.v1.Signal signal = 8;
     */
    value: Signal;
    case: "signal";
  } | {
    /**
     * @generated from field: signalgate.v1.Pong pong = 9;
     */
    value: Pong;
    case: "pong";
  } | {
    /**
     * @generated from field: signalgate.v1.Error error = 10;
     */
    value: Error;
    case: "error";
  } | {
    /**
     * @generated from field: signalgate.v1.GoAway go_away = 11;
     */
    value: GoAway;
    case: "goAway";
  } | {
    /**
     * @generated from field: signalgate.v1.Left left = 12;
     */
    value: Left;
    case: "left";
  } | {
    /**
     * Numbered client frames processed (see the header). seq = 0.
     *
     * @generated from field: signalgate.v1.Ack ack = 13;
     */
    value: Ack;
    case: "ack";
  } | {
    /**
     * @generated from field: signalgate.v1.Refreshed refreshed = 14;
     */
    value: Refreshed;
    case: "refreshed";
  } | { case: undefined; value?: undefined };
};

/**
 * Describes the message signalgate.v1.ServerFrame.
 * Use `create(ServerFrameSchema)` to create a new message.
 */
export const ServerFrameSchema: GenMessage<ServerFrame> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 12);

/**
 * @generated from message signalgate.v1.Welcome
 */
export type Welcome = Message<"signalgate.v1.Welcome"> & {
  /**
   * Identifies this connection in the gateway's logs; new on every connection.
   *
   * @generated from field: string connection_id = 1;
   */
  connectionId: string;

  /**
   * How other peers see this client; the same across resumes.
   *
   * @generated from field: string peer_id = 2;
   */
  peerId: string;

  /**
   * Keep it secret: whoever holds it can take this session over.
   *
   * @generated from field: string resume_token = 3;
   */
  resumeToken: string;

  /**
   * @generated from field: uint32 liveness_timeout_ms = 4;
   */
  livenessTimeoutMs: number;

  /**
   * @generated from field: uint32 ping_interval_ms = 5;
   */
  pingIntervalMs: number;

  /**
   * True when this Welcome continues an earlier session (replay follows).
   *
   * @generated from field: bool resumed = 6;
   */
  resumed: boolean;

  /**
   * How long the session may be resumed after its connection is lost.
   *
   * @generated from field: uint32 resume_window_ms = 7;
   */
  resumeWindowMs: number;

  /**
   * Rooms the session is in (non-empty after a resume).
   *
   * @generated from field: repeated string rooms = 8;
   */
  rooms: string[];

  /**
   * Largest frame the gateway accepts, in bytes.
   *
   * @generated from field: uint32 max_frame_bytes = 9;
   */
  maxFrameBytes: number;

  /**
   * Every numbered ClientFrame up to this seq was processed (0 for a new session): after a
   * resume, resend the numbered frames after it.
   *
   * @generated from field: uint64 last_client_seq = 10;
   */
  lastClientSeq: bigint;

  /**
   * The replay that follows a resumed Welcome ends with the frame of this seq (equal to
   * Hello.last_seq when there is nothing to replay; 0 for a new session).
   *
   * @generated from field: uint64 replay_until_seq = 11;
   */
  replayUntilSeq: bigint;

  /**
   * With tokens: the identity (`sub`) the session belongs to, and how long its token is
   * valid from now (refresh before then); empty / 0 without authentication.
   *
   * @generated from field: string identity = 12;
   */
  identity: string;

  /**
   * @generated from field: uint64 token_expires_in_ms = 13;
   */
  tokenExpiresInMs: bigint;
};

/**
 * Describes the message signalgate.v1.Welcome.
 * Use `create(WelcomeSchema)` to create a new message.
 */
export const WelcomeSchema: GenMessage<Welcome> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 13);

/**
 * Reply to Refresh: the new token is in force.
 *
 * @generated from message signalgate.v1.Refreshed
 */
export type Refreshed = Message<"signalgate.v1.Refreshed"> & {
  /**
   * @generated from field: uint64 token_expires_in_ms = 1;
   */
  tokenExpiresInMs: bigint;
};

/**
 * Describes the message signalgate.v1.Refreshed.
 * Use `create(RefreshedSchema)` to create a new message.
 */
export const RefreshedSchema: GenMessage<Refreshed> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 14);

/**
 * @generated from message signalgate.v1.Peer
 */
export type Peer = Message<"signalgate.v1.Peer"> & {
  /**
   * @generated from field: string peer_id = 1;
   */
  peerId: string;

  /**
   * @generated from field: signalgate.v1.PresenceState state = 2;
   */
  state: PresenceState;

  /**
   * From the peer's token (`name`, `metadata` claims); empty without authentication.
   *
   * @generated from field: string name = 3;
   */
  name: string;

  /**
   * @generated from field: string metadata = 4;
   */
  metadata: string;
};

/**
 * Describes the message signalgate.v1.Peer.
 * Use `create(PeerSchema)` to create a new message.
 */
export const PeerSchema: GenMessage<Peer> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 15);

/**
 * Reply to Join: the room and who else is in it.
 *
 * @generated from message signalgate.v1.Joined
 */
export type Joined = Message<"signalgate.v1.Joined"> & {
  /**
   * @generated from field: string room = 1;
   */
  room: string;

  /**
   * @generated from field: repeated signalgate.v1.Peer peers = 2;
   */
  peers: Peer[];
};

/**
 * Describes the message signalgate.v1.Joined.
 * Use `create(JoinedSchema)` to create a new message.
 */
export const JoinedSchema: GenMessage<Joined> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 16);

/**
 * Reply to Leave.
 *
 * @generated from message signalgate.v1.Left
 */
export type Left = Message<"signalgate.v1.Left"> & {
  /**
   * @generated from field: string room = 1;
   */
  room: string;
};

/**
 * Describes the message signalgate.v1.Left.
 * Use `create(LeftSchema)` to create a new message.
 */
export const LeftSchema: GenMessage<Left> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 17);

/**
 * @generated from message signalgate.v1.PeerJoined
 */
export type PeerJoined = Message<"signalgate.v1.PeerJoined"> & {
  /**
   * @generated from field: string room = 1;
   */
  room: string;

  /**
   * @generated from field: signalgate.v1.Peer peer = 2;
   */
  peer?: Peer | undefined;
};

/**
 * Describes the message signalgate.v1.PeerJoined.
 * Use `create(PeerJoinedSchema)` to create a new message.
 */
export const PeerJoinedSchema: GenMessage<PeerJoined> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 18);

/**
 * @generated from message signalgate.v1.PeerState
 */
export type PeerState = Message<"signalgate.v1.PeerState"> & {
  /**
   * @generated from field: string room = 1;
   */
  room: string;

  /**
   * @generated from field: string peer_id = 2;
   */
  peerId: string;

  /**
   * @generated from field: signalgate.v1.PresenceState state = 3;
   */
  state: PresenceState;

  /**
   * @generated from field: signalgate.v1.Reason reason = 4;
   */
  reason: Reason;

  /**
   * For UNREACHABLE: how long nothing had arrived from the peer when it was declared so.
   *
   * @generated from field: uint64 silent_for_ms = 5;
   */
  silentForMs: bigint;

  /**
   * Which transport noticed the change.
   *
   * @generated from field: signalgate.v1.Transport detected_by = 6;
   */
  detectedBy: Transport;
};

/**
 * Describes the message signalgate.v1.PeerState.
 * Use `create(PeerStateSchema)` to create a new message.
 */
export const PeerStateSchema: GenMessage<PeerState> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 19);

/**
 * @generated from message signalgate.v1.PeerLeft
 */
export type PeerLeft = Message<"signalgate.v1.PeerLeft"> & {
  /**
   * @generated from field: string room = 1;
   */
  room: string;

  /**
   * @generated from field: string peer_id = 2;
   */
  peerId: string;

  /**
   * @generated from field: signalgate.v1.Reason reason = 3;
   */
  reason: Reason;
};

/**
 * Describes the message signalgate.v1.PeerLeft.
 * Use `create(PeerLeftSchema)` to create a new message.
 */
export const PeerLeftSchema: GenMessage<PeerLeft> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 20);

/**
 * @generated from message signalgate.v1.Pong
 */
export type Pong = Message<"signalgate.v1.Pong"> & {
  /**
   * @generated from field: bytes payload = 1;
   */
  payload: Uint8Array;
};

/**
 * Describes the message signalgate.v1.Pong.
 * Use `create(PongSchema)` to create a new message.
 */
export const PongSchema: GenMessage<Pong> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 21);

/**
 * @generated from message signalgate.v1.Error
 */
export type Error = Message<"signalgate.v1.Error"> & {
  /**
   * @generated from field: signalgate.v1.ErrorCode code = 1;
   */
  code: ErrorCode;

  /**
   * @generated from field: string message = 2;
   */
  message: string;

  /**
   * The ClientFrame.id that caused it (same as ServerFrame.in_reply_to), 0 if none.
   *
   * @generated from field: uint64 in_reply_to = 3;
   */
  inReplyTo: bigint;
};

/**
 * Describes the message signalgate.v1.Error.
 * Use `create(ErrorSchema)` to create a new message.
 */
export const ErrorSchema: GenMessage<Error> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 22);

/**
 * The gateway is going away (shutdown): reconnect (resuming the session where the gateway
 * can keep it) at a random moment in [reconnect_after_ms, reconnect_after_ms + spread_ms],
 * so that its clients do not all come back at once.
 *
 * @generated from message signalgate.v1.GoAway
 */
export type GoAway = Message<"signalgate.v1.GoAway"> & {
  /**
   * @generated from field: signalgate.v1.Reason reason = 1;
   */
  reason: Reason;

  /**
   * @generated from field: uint32 reconnect_after_ms = 2;
   */
  reconnectAfterMs: number;

  /**
   * @generated from field: uint32 spread_ms = 3;
   */
  spreadMs: number;
};

/**
 * Describes the message signalgate.v1.GoAway.
 * Use `create(GoAwaySchema)` to create a new message.
 */
export const GoAwaySchema: GenMessage<GoAway> = /*@__PURE__*/
  messageDesc(file_signalgate_v1_signalgate, 23);

/**
 * @generated from enum signalgate.v1.SdpType
 */
export enum SdpType {
  /**
   * @generated from enum value: SDP_TYPE_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * @generated from enum value: SDP_TYPE_OFFER = 1;
   */
  OFFER = 1,

  /**
   * @generated from enum value: SDP_TYPE_ANSWER = 2;
   */
  ANSWER = 2,

  /**
   * @generated from enum value: SDP_TYPE_PRANSWER = 3;
   */
  PRANSWER = 3,

  /**
   * @generated from enum value: SDP_TYPE_ROLLBACK = 4;
   */
  ROLLBACK = 4,
}

/**
 * Describes the enum signalgate.v1.SdpType.
 */
export const SdpTypeSchema: GenEnum<SdpType> = /*@__PURE__*/
  enumDesc(file_signalgate_v1_signalgate, 0);

/**
 * @generated from enum signalgate.v1.PresenceState
 */
export enum PresenceState {
  /**
   * @generated from enum value: PRESENCE_STATE_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * @generated from enum value: PRESENCE_STATE_ONLINE = 1;
   */
  ONLINE = 1,

  /**
   * Not connected (liveness lost, connection closed, or suspended by its browser); the peer
   * may still resume within the resume window. PeerState.reason says why.
   *
   * @generated from enum value: PRESENCE_STATE_UNREACHABLE = 2;
   */
  UNREACHABLE = 2,
}

/**
 * Describes the enum signalgate.v1.PresenceState.
 */
export const PresenceStateSchema: GenEnum<PresenceState> = /*@__PURE__*/
  enumDesc(file_signalgate_v1_signalgate, 1);

/**
 * @generated from enum signalgate.v1.Transport
 */
export enum Transport {
  /**
   * @generated from enum value: TRANSPORT_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * @generated from enum value: TRANSPORT_WEBSOCKET = 1;
   */
  WEBSOCKET = 1,

  /**
   * @generated from enum value: TRANSPORT_WEBTRANSPORT = 2;
   */
  WEBTRANSPORT = 2,
}

/**
 * Describes the enum signalgate.v1.Transport.
 */
export const TransportSchema: GenEnum<Transport> = /*@__PURE__*/
  enumDesc(file_signalgate_v1_signalgate, 2);

/**
 * Why a peer's presence changed or a session ended.
 *
 * @generated from enum signalgate.v1.Reason
 */
export enum Reason {
  /**
   * @generated from enum value: REASON_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * Nothing arrived from the peer for liveness_timeout, although the gateway probed it.
   *
   * @generated from enum value: REASON_LIVENESS_TIMEOUT = 1;
   */
  LIVENESS_TIMEOUT = 1,

  /**
   * The connection broke without a close handshake (EOF, reset, I/O error).
   *
   * @generated from enum value: REASON_CONNECTION_LOST = 2;
   */
  CONNECTION_LOST = 2,

  /**
   * The client closed its connection (WebSocket Close frame, a FIN on the WebTransport
   * control stream) without saying Bye: the session stays resumable.
   *
   * @generated from enum value: REASON_CLIENT_CLOSED = 3;
   */
  CLIENT_CLOSED = 3,

  /**
   * The peer sent Leave for the room.
   *
   * @generated from enum value: REASON_LEFT_ROOM = 4;
   */
  LEFT_ROOM = 4,

  /**
   * The peer was unreachable for the whole resume window.
   *
   * @generated from enum value: REASON_RESUME_WINDOW_EXPIRED = 5;
   */
  RESUME_WINDOW_EXPIRED = 5,

  /**
   * A newer connection of the same client took the session over.
   *
   * @generated from enum value: REASON_SUPERSEDED = 6;
   */
  SUPERSEDED = 6,

  /**
   * The peer read too slowly: its outbound queue overflowed.
   *
   * @generated from enum value: REASON_SLOW_CONSUMER = 7;
   */
  SLOW_CONSUMER = 7,

  /**
   * The peer broke the protocol (oversized frames, garbage on a WebTransport stream, ...).
   *
   * @generated from enum value: REASON_PROTOCOL_ERROR = 8;
   */
  PROTOCOL_ERROR = 8,

  /**
   * The gateway is shutting down.
   *
   * @generated from enum value: REASON_SERVER_SHUTDOWN = 9;
   */
  SERVER_SHUTDOWN = 9,

  /**
   * The peer reconnected and resumed its session.
   *
   * @generated from enum value: REASON_RESUMED = 10;
   */
  RESUMED = 10,

  /**
   * The client did not send Hello in time.
   *
   * @generated from enum value: REASON_HELLO_TIMEOUT = 11;
   */
  HELLO_TIMEOUT = 11,

  /**
   * The client said Bye: it left for good.
   *
   * @generated from enum value: REASON_BYE = 12;
   */
  BYE = 12,

  /**
   * The client said Suspend: its page is frozen or cached by its browser; it may resume.
   *
   * @generated from enum value: REASON_SUSPENDED = 13;
   */
  SUSPENDED = 13,

  /**
   * The client came back but the frames after its last_seq were no longer kept (it did not
   * Ack them in time): it had to start a new session.
   *
   * @generated from enum value: REASON_RESUME_GAP = 14;
   */
  RESUME_GAP = 14,

  /**
   * The session's token expired and was not refreshed in time (it may resume with a new one).
   *
   * @generated from enum value: REASON_TOKEN_EXPIRED = 15;
   */
  TOKEN_EXPIRED = 15,

  /**
   * The application's backend disconnected the session (or revoked its identity).
   *
   * @generated from enum value: REASON_DISCONNECTED = 16;
   */
  DISCONNECTED = 16,

  /**
   * The gateway holds as many sessions (or connections waiting for Hello) as it may.
   *
   * @generated from enum value: REASON_GATEWAY_FULL = 17;
   */
  GATEWAY_FULL = 17,

  /**
   * Cluster mode: the gateway that held the peer's session stopped answering the other
   * gateways (crashed, or cut off from the cluster). The peer may come back on another
   * gateway within the resume window.
   *
   * @generated from enum value: REASON_GATEWAY_LOST = 18;
   */
  GATEWAY_LOST = 18,
}

/**
 * Describes the enum signalgate.v1.Reason.
 */
export const ReasonSchema: GenEnum<Reason> = /*@__PURE__*/
  enumDesc(file_signalgate_v1_signalgate, 3);

/**
 * @generated from enum signalgate.v1.ErrorCode
 */
export enum ErrorCode {
  /**
   * @generated from enum value: ERROR_CODE_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * The bytes are not a ClientFrame (or a frame without a message).
   *
   * @generated from enum value: ERROR_CODE_MALFORMED_FRAME = 1;
   */
  MALFORMED_FRAME = 1,

  /**
   * The frame is larger than Welcome.max_frame_bytes.
   *
   * @generated from enum value: ERROR_CODE_FRAME_TOO_LARGE = 2;
   */
  FRAME_TOO_LARGE = 2,

  /**
   * A WebSocket text message, or a second WebTransport stream.
   *
   * @generated from enum value: ERROR_CODE_UNSUPPORTED_FRAME = 3;
   */
  UNSUPPORTED_FRAME = 3,

  /**
   * Anything but Hello before Welcome.
   *
   * @generated from enum value: ERROR_CODE_HELLO_REQUIRED = 4;
   */
  HELLO_REQUIRED = 4,

  /**
   * A second Hello on a connection that already has a session.
   *
   * @generated from enum value: ERROR_CODE_ALREADY_WELCOMED = 5;
   */
  ALREADY_WELCOMED = 5,

  /**
   * A field is missing or malformed (the message says which), or a numbered frame skipped a
   * seq.
   *
   * @generated from enum value: ERROR_CODE_INVALID_ARGUMENT = 6;
   */
  INVALID_ARGUMENT = 6,

  /**
   * Leave or Signal for a room that does not exist.
   *
   * @generated from enum value: ERROR_CODE_UNKNOWN_ROOM = 7;
   */
  UNKNOWN_ROOM = 7,

  /**
   * The sender has not joined the room.
   *
   * @generated from enum value: ERROR_CODE_NOT_JOINED = 8;
   */
  NOT_JOINED = 8,

  /**
   * The recipient is not (or no longer) in the room.
   *
   * @generated from enum value: ERROR_CODE_PEER_NOT_IN_ROOM = 9;
   */
  PEER_NOT_IN_ROOM = 9,

  /**
   * @generated from enum value: ERROR_CODE_ROOM_FULL = 10;
   */
  ROOM_FULL = 10,

  /**
   * @generated from enum value: ERROR_CODE_TOO_MANY_ROOMS = 11;
   */
  TOO_MANY_ROOMS = 11,

  /**
   * Too many frames per second; the frame was not processed.
   *
   * @generated from enum value: ERROR_CODE_RATE_LIMITED = 12;
   */
  RATE_LIMITED = 12,

  /**
   * The recipient is unreachable and the frames held for it reached the bound; this signal
   * was not accepted.
   *
   * @generated from enum value: ERROR_CODE_RECIPIENT_BUFFER_FULL = 13;
   */
  RECIPIENT_BUFFER_FULL = 13,

  /**
   * The resume token is unknown or its resume window ran out: start a new session.
   *
   * @generated from enum value: ERROR_CODE_RESUME_EXPIRED = 14;
   */
  RESUME_EXPIRED = 14,

  /**
   * The session cannot be resumed without loss (frames after last_seq are gone): start a
   * new session.
   *
   * @generated from enum value: ERROR_CODE_RESUME_GAP = 15;
   */
  RESUME_GAP = 15,

  /**
   * A newer connection attempt already holds this session (see Hello.attempt).
   *
   * @generated from enum value: ERROR_CODE_STALE_ATTEMPT = 16;
   */
  STALE_ATTEMPT = 16,

  /**
   * Joining a room the session is already in.
   *
   * @generated from enum value: ERROR_CODE_ALREADY_JOINED = 17;
   */
  ALREADY_JOINED = 17,

  /**
   * The gateway is shutting down and takes no new sessions.
   *
   * @generated from enum value: ERROR_CODE_SHUTTING_DOWN = 18;
   */
  SHUTTING_DOWN = 18,

  /**
   * The connection is being closed for the reason in the message.
   *
   * @generated from enum value: ERROR_CODE_CLOSING = 19;
   */
  CLOSING = 19,

  /**
   * Authentication is on and Hello (or Refresh) carries no token.
   *
   * @generated from enum value: ERROR_CODE_TOKEN_MISSING = 20;
   */
  TOKEN_MISSING = 20,

  /**
   * Not a JWT, or its claims are malformed or missing (`sub`, `exp`).
   *
   * @generated from enum value: ERROR_CODE_TOKEN_MALFORMED = 21;
   */
  TOKEN_MALFORMED = 21,

  /**
   * The signature does not verify, or no configured key matches (unknown `kid`, algorithm).
   *
   * @generated from enum value: ERROR_CODE_TOKEN_BAD_SIGNATURE = 22;
   */
  TOKEN_BAD_SIGNATURE = 22,

  /**
   * @generated from enum value: ERROR_CODE_TOKEN_EXPIRED = 23;
   */
  TOKEN_EXPIRED = 23,

  /**
   * @generated from enum value: ERROR_CODE_TOKEN_NOT_YET_VALID = 24;
   */
  TOKEN_NOT_YET_VALID = 24,

  /**
   * @generated from enum value: ERROR_CODE_TOKEN_WRONG_AUDIENCE = 25;
   */
  TOKEN_WRONG_AUDIENCE = 25,

  /**
   * @generated from enum value: ERROR_CODE_TOKEN_WRONG_ISSUER = 26;
   */
  TOKEN_WRONG_ISSUER = 26,

  /**
   * The identity was revoked by the application's backend after this token was issued.
   *
   * @generated from enum value: ERROR_CODE_TOKEN_REVOKED = 27;
   */
  TOKEN_REVOKED = 27,

  /**
   * The token does not grant this room.
   *
   * @generated from enum value: ERROR_CODE_ROOM_NOT_GRANTED = 28;
   */
  ROOM_NOT_GRANTED = 28,

  /**
   * The token does not allow sending signals.
   *
   * @generated from enum value: ERROR_CODE_SIGNAL_NOT_GRANTED = 29;
   */
  SIGNAL_NOT_GRANTED = 29,

  /**
   * A Refresh, or a resume token, for a session of another identity.
   *
   * @generated from enum value: ERROR_CODE_IDENTITY_MISMATCH = 30;
   */
  IDENTITY_MISMATCH = 30,

  /**
   * The gateway holds as many sessions as it may: try again later (or another gateway).
   *
   * @generated from enum value: ERROR_CODE_TOO_MANY_SESSIONS = 31;
   */
  TOO_MANY_SESSIONS = 31,

  /**
   * The application's backend disconnected this session; the message says why.
   *
   * @generated from enum value: ERROR_CODE_DISCONNECTED = 32;
   */
  DISCONNECTED = 32,

  /**
   * Cluster mode: the recipient's gateway was lost before it accepted the signal; it was not
   * delivered.
   *
   * @generated from enum value: ERROR_CODE_RECIPIENT_UNAVAILABLE = 33;
   */
  RECIPIENT_UNAVAILABLE = 33,

  /**
   * Cluster mode: this gateway is cut off from the cluster (or the gateway that must decide
   * did not answer); nothing was done. Reconnect, to another gateway if this one says GoAway.
   *
   * @generated from enum value: ERROR_CODE_CLUSTER_UNAVAILABLE = 34;
   */
  CLUSTER_UNAVAILABLE = 34,

  /**
   * Durable mode (cluster): the recipient's durable log could not store this signal in time
   * (JetStream unavailable); it was not accepted and will not be delivered. Send it again.
   *
   * @generated from enum value: ERROR_CODE_STORAGE_UNAVAILABLE = 35;
   */
  STORAGE_UNAVAILABLE = 35,
}

/**
 * Describes the enum signalgate.v1.ErrorCode.
 */
export const ErrorCodeSchema: GenEnum<ErrorCode> = /*@__PURE__*/
  enumDesc(file_signalgate_v1_signalgate, 4);

