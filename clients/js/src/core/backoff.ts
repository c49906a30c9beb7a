/**
 * Reconnect delays: exponential back-off with "full jitter" (a uniformly random delay between
 * 0 and min(maxMs, initialMs * multiplier^n)), so that many clients cut off by the same event
 * do not come back in lock-step.
 */

export interface BackoffOptions {
  /** Upper bound of the first delay. Default 250 ms. */
  initialMs?: number;
  /** No delay is ever longer than this. Default 10 000 ms. */
  maxMs?: number;
  /** Growth of the upper bound per failed attempt. Default 2. */
  multiplier?: number;
}

export class Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly multiplier: number;
  private n = 0;

  constructor(
    options: BackoffOptions = {},
    private readonly random: () => number = Math.random,
  ) {
    this.initialMs = options.initialMs ?? 250;
    this.maxMs = options.maxMs ?? 10_000;
    this.multiplier = options.multiplier ?? 2;
    if (!(this.initialMs >= 0) || !(this.maxMs >= this.initialMs) || !(this.multiplier >= 1)) {
      throw new RangeError("backoff needs 0 <= initialMs <= maxMs and multiplier >= 1");
    }
  }

  /** How many delays were handed out since the last reset. */
  get attempts(): number {
    return this.n;
  }

  /** The upper bound of the next delay. */
  ceiling(): number {
    return Math.min(this.maxMs, this.initialMs * Math.pow(this.multiplier, this.n));
  }

  /** The next delay in milliseconds (integer, 0 <= delay <= ceiling()). */
  next(): number {
    const ceiling = this.ceiling();
    this.n++;
    // random() is in [0, 1), so this is uniform over the integers 0..ceiling.
    return Math.min(ceiling, Math.floor(this.random() * (Math.floor(ceiling) + 1)));
  }

  /** After a successful connection: the next failure starts from initialMs again. */
  reset(): void {
    this.n = 0;
  }
}

/**
 * A GoAway's reconnect moment: uniformly random in [afterMs, afterMs + spreadMs], so that all
 * clients of a gateway that shuts down do not come back at the same instant.
 */
export function spreadDelay(afterMs: number, spreadMs: number, random: () => number): number {
  const spread = Math.max(0, Math.floor(spreadMs));
  return Math.max(0, afterMs) + Math.min(spread, Math.floor(random() * (spread + 1)));
}
