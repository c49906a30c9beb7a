/**
 * Client-side liveness of the gateway, as a small sans-IO state machine: it owns no timer and
 * reads no clock. The caller feeds it `now` (milliseconds on a monotonic clock) and calls
 * `handleTimeout(now)` at or after `pollTimeout()`.
 *
 * Rules:
 * - Anything arriving from the gateway (any frame, Pong or not) proves it alive: `onInbound`.
 * - Every `pingIntervalMs` the client sends an app-level Ping, so a healthy gateway always has
 *   something to answer.
 * - Nothing at all for `livenessTimeoutMs` → the gateway (or the path to it) is dead.
 * - Timer drift: a throttled or frozen tab runs its timers late. If the check runs more than
 *   `pingIntervalMs` after it was due, the silence may be our own (JS was asleep, the network
 *   may be fine and its frames simply not dispatched yet), so that tick never declares the
 *   gateway dead: the deadline restarts from now and a Ping goes out at once.
 */

export interface LivenessConfig {
  livenessTimeoutMs: number;
  pingIntervalMs: number;
}

export type LivenessAction =
  /** Nothing to do yet (e.g. something arrived since the timer was armed). */
  | { kind: "none" }
  /** Send a Ping now. */
  | { kind: "ping" }
  /** The timer ran late by `lateByMs`: deadline reset; send a Ping now. */
  | { kind: "drift"; lateByMs: number }
  /** Nothing arrived for `silentForMs` (>= livenessTimeoutMs): close and reconnect. */
  | { kind: "dead"; silentForMs: number };

export class Liveness {
  readonly livenessTimeoutMs: number;
  readonly pingIntervalMs: number;
  private lastInbound: number;
  private nextPing: number;

  constructor(now: number, config: LivenessConfig) {
    this.livenessTimeoutMs = Math.max(1, config.livenessTimeoutMs);
    this.pingIntervalMs = Math.max(1, Math.min(config.pingIntervalMs, this.livenessTimeoutMs));
    this.lastInbound = now;
    this.nextPing = now + this.pingIntervalMs;
  }

  /** Something arrived from the gateway. */
  onInbound(now: number): void {
    if (now > this.lastInbound) this.lastInbound = now;
  }

  /** Milliseconds since anything arrived. */
  silentFor(now: number): number {
    return Math.max(0, now - this.lastInbound);
  }

  /** When `handleTimeout` next has work: the earlier of the next Ping and the deadline. */
  pollTimeout(): number {
    return Math.min(this.nextPing, this.lastInbound + this.livenessTimeoutMs);
  }

  /** Called at or after `pollTimeout()`; earlier calls return `none`. */
  handleTimeout(now: number): LivenessAction {
    const due = this.pollTimeout();
    if (now < due) return { kind: "none" };
    const lateBy = now - due;
    if (lateBy > this.pingIntervalMs) {
      this.lastInbound = now;
      this.nextPing = now + this.pingIntervalMs;
      return { kind: "drift", lateByMs: lateBy };
    }
    const silent = now - this.lastInbound;
    if (silent >= this.livenessTimeoutMs) {
      return { kind: "dead", silentForMs: silent };
    }
    if (now >= this.nextPing) {
      this.nextPing = now + this.pingIntervalMs;
      return { kind: "ping" };
    }
    return { kind: "none" };
  }
}
