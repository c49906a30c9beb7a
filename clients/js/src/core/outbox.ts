/**
 * The client's ordered stream to the gateway (ClientFrame.seq): Join, Leave and Signal frames
 * from the moment they are asked for until the gateway has acknowledged them.
 *
 * - A frame waits in `queue`, unnumbered, while there is no connection to write it to. It gets
 *   its seq when it is first written, so a queued frame can still be dropped (request timeout,
 *   too large) without leaving a hole in the numbering, which the gateway would refuse.
 * - Once numbered it stays in `log` until an Ack (or an Error about it) says the gateway
 *   processed it. After a resume, everything in the log above Welcome.last_client_seq is
 *   written again, with the same seq and id: the gateway skips what it already has, so each
 *   frame is processed exactly once.
 * - Both together are bounded by `max` (QUEUE_FULL beyond).
 */
import { encodeClientFrame, type NumberedMsg } from "./wire.js";

export interface OutEntry {
  /** ClientFrame.id: what the gateway's Errors and replies refer to. */
  readonly id: number;
  readonly msg: NumberedMsg;
  /** The app request that resolves when the Ack covers this frame (signals), if any. */
  readonly req: number | undefined;
  /** 0 while queued. */
  seq: number;
  /** The encoded frame, once numbered (resent as is). */
  bytes: Uint8Array | undefined;
}

export class Outbox {
  private queue: OutEntry[] = [];
  private log: OutEntry[] = [];
  private nextSeq = 1;
  private ackedSeq = 0;

  constructor(private readonly max: number) {}

  /** Frames kept: unacknowledged plus queued. */
  get size(): number {
    return this.queue.length + this.log.length;
  }

  /** Highest seq the gateway acknowledged in this session. */
  get acked(): number {
    return this.ackedSeq;
  }

  /** Queues a frame; false when the bound is reached. */
  add(entry: OutEntry): boolean {
    if (this.size >= this.max) return false;
    this.queue.push(entry);
    return true;
  }

  /** Queues frames before everything else (the re-joins of a fresh session), unbounded. */
  addFirst(entries: OutEntry[]): void {
    this.queue.unshift(...entries);
  }

  /**
   * Numbers the queued frames in order and returns them for writing. Frames larger than
   * `maxFrameBytes` (0 = unknown) are dropped unnumbered and returned in `tooLarge`.
   */
  number(maxFrameBytes: number): { send: OutEntry[]; tooLarge: OutEntry[] } {
    const send: OutEntry[] = [];
    const tooLarge: OutEntry[] = [];
    for (const entry of this.queue) {
      const bytes = encodeClientFrame(entry.id, this.nextSeq, entry.msg);
      if (maxFrameBytes > 0 && bytes.length > maxFrameBytes) {
        tooLarge.push(entry);
        continue;
      }
      entry.seq = this.nextSeq++;
      entry.bytes = bytes;
      this.log.push(entry);
      send.push(entry);
    }
    this.queue = [];
    return { send, tooLarge };
  }

  /** The numbered frames the gateway has not processed (seq > lastClientSeq), in order. */
  unprocessedAfter(lastClientSeq: number): OutEntry[] {
    return this.log.filter((e) => e.seq > lastClientSeq);
  }

  /** The gateway processed every frame up to `seq`: returns the frames that leaves. */
  ack(seq: number): OutEntry[] {
    if (seq <= this.ackedSeq) return [];
    this.ackedSeq = seq;
    const done = this.log.filter((e) => e.seq <= seq);
    this.log = this.log.filter((e) => e.seq > seq);
    return done;
  }

  /** The gateway refused frame `id` (an Error about it): it was processed, it leaves. */
  refuse(id: number): OutEntry | undefined {
    const i = this.log.findIndex((e) => e.id === id);
    if (i < 0) return undefined;
    return this.log.splice(i, 1)[0];
  }

  /** Drops a frame that was never written (no seq used yet). */
  dropQueued(id: number): OutEntry | undefined {
    const i = this.queue.findIndex((e) => e.id === id);
    if (i < 0) return undefined;
    return this.queue.splice(i, 1)[0];
  }

  /** Everything, numbered or not (the session is gone or the client closes); starts over at seq 1. */
  drain(): OutEntry[] {
    const all = [...this.log, ...this.queue];
    this.log = [];
    this.queue = [];
    this.nextSeq = 1;
    this.ackedSeq = 0;
    return all;
  }
}
