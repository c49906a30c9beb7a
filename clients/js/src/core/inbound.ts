/**
 * The gateway's ordered stream to the client (ServerFrame.seq): which frames were processed,
 * which are duplicates, and when to tell the gateway (Ack, coalesced).
 */
export class InboundStream {
  private last = 0n;
  private acked = 0n;
  private unacked = 0;
  private due: number | undefined;

  constructor(
    /** Ack at once after this many frames... */
    private readonly every: number,
    /** ...or this long after the first unacknowledged one. */
    private readonly delayMs: number,
  ) {}

  /** Highest seq processed. */
  get lastSeq(): bigint {
    return this.last;
  }

  /** When a delayed Ack is due (undefined: none pending). */
  get ackDue(): number | undefined {
    return this.due;
  }

  /** Enough frames for an Ack right now. */
  get ackNow(): boolean {
    return this.unacked >= this.every;
  }

  /** Frame `seq` arrived: true when it is new (to be processed), false for a duplicate. */
  accept(seq: bigint, now: number): boolean {
    if (seq <= this.last) return false;
    this.last = seq;
    this.unacked++;
    this.due ??= now + this.delayMs;
    return true;
  }

  /** The seq to put in an Ack now, if there is anything new to acknowledge. */
  takeAck(): bigint | undefined {
    this.unacked = 0;
    this.due = undefined;
    if (this.last <= this.acked) return undefined;
    this.acked = this.last;
    return this.last;
  }

  /** A resume Hello carries `last_seq`, which acknowledges everything up to it. */
  ackedByHello(): void {
    this.acked = this.last;
    this.unacked = 0;
    this.due = undefined;
  }

  /** The connection is gone: no Ack is due on it (the next Hello carries last_seq). */
  pause(): void {
    this.unacked = 0;
    this.due = undefined;
  }

  /** A new session numbers its frames from 1 again. */
  reset(): void {
    this.last = 0n;
    this.acked = 0n;
    this.pause();
  }
}
