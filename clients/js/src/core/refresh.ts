/**
 * Refreshing the session's token in-band before it expires (sans-IO, like Liveness): it owns
 * no timer and reads no clock; the core feeds it `now` and performs what it asks for (call
 * `getToken`, write Refresh, report an error).
 *
 * Rules:
 * - When: `refreshDelay(expiresInMs)` after a Welcome or Refreshed that says the token is valid
 *   for `expiresInMs`: at 80 % of the remaining time, at the latest 10 s before expiry, but never
 *   before half of it has passed nor sooner than 1 s (and never after expiry). 1 h → after
 *   48 min; 60 s → after 48 s; 30 s → after 20 s; 12 s → after 6 s.
 * - How: `getToken({reason: 'refresh'})`, then Refresh{token} (not numbered), then Refreshed
 *   (reschedule from its `token_expires_in_ms`), or an Error about it (TOKEN_*,
 *   IDENTITY_MISMATCH; the current token stays in force).
 * - A failed attempt (getToken rejected or too slow, an Error, no reply in time) is retried
 *   after a short back-off (full jitter, 1 s doubling up to 8 s) while the token is still
 *   valid. Past expiry, retries wait for the gateway's warning.
 * - The warning (an unsolicited Error TOKEN_EXPIRED: the token expired, a grace follows before
 *   the gateway closes the connection with 4006) starts an attempt at once, unless one is
 *   under way; from then on, failed attempts are retried until the connection ends.
 */
import { Backoff } from "./backoff.js";

/** Refresh at this fraction of the remaining validity... */
export const REFRESH_AT_FRACTION = 0.8;
/** ...but at the latest this long before expiry... */
export const REFRESH_MARGIN_MS = 10_000;
/** ...and never sooner than this (nor before half the validity has passed). */
export const MIN_REFRESH_DELAY_MS = 1_000;

/** After a token valid for `expiresInMs` from now, how long to wait before refreshing it. */
export function refreshDelay(expiresInMs: number): number {
  const t = Math.max(0, expiresInMs);
  const delay = Math.max(Math.min(t * REFRESH_AT_FRACTION, t - REFRESH_MARGIN_MS), t / 2, MIN_REFRESH_DELAY_MS);
  return Math.floor(Math.min(t, delay));
}

type Step =
  /** The next attempt starts at `at`. */
  | { readonly kind: "waiting"; readonly at: number }
  /** `getToken` was called (`ticket`); it must answer by `deadline`. */
  | { readonly kind: "fetching"; readonly ticket: number; readonly deadline: number }
  /** Refresh (frame `id`) was written; Refreshed or an Error is due by `deadline`. */
  | { readonly kind: "sent"; readonly id: number; readonly deadline: number }
  /** No retry before expiry: the gateway's TOKEN_EXPIRED warning starts the next attempt. */
  | { readonly kind: "stopped" };

export type RefreshAction =
  | { kind: "none" }
  /** Call getToken now and report the ticket with `fetching`. */
  | { kind: "fetch" }
  /** The attempt took too long (getToken, or the gateway's reply); a retry is scheduled. */
  | { kind: "late"; what: "getToken" | "reply" };

export interface RefreshTimeouts {
  /** How long getToken may take. */
  getTokenMs: number;
  /** How long the gateway may take to answer a Refresh. */
  replyMs: number;
}

export class TokenRefresh {
  private step: Step = { kind: "stopped" };
  private expires = 0;
  /** The gateway said the token expired (a grace runs until it closes the connection). */
  private warned = false;
  private readonly retry: Backoff;

  constructor(
    now: number,
    expiresInMs: number,
    private readonly timeouts: RefreshTimeouts,
    random: () => number,
  ) {
    this.retry = new Backoff({ initialMs: 1000, maxMs: 8000, multiplier: 2 }, random);
    this.renewed(now, expiresInMs);
  }

  /** When the current token expires (the core's clock). */
  get expiresAt(): number {
    return this.expires;
  }

  /** When `handleTimeout` next has work. */
  pollTimeout(): number | undefined {
    switch (this.step.kind) {
      case "waiting":
        return this.step.at;
      case "fetching":
      case "sent":
        return this.step.deadline;
      case "stopped":
        return undefined;
    }
  }

  handleTimeout(now: number): RefreshAction {
    const s = this.step;
    switch (s.kind) {
      case "waiting":
        return now >= s.at ? { kind: "fetch" } : { kind: "none" };
      case "fetching":
        if (now < s.deadline) return { kind: "none" };
        this.failed(now);
        return { kind: "late", what: "getToken" };
      case "sent":
        if (now < s.deadline) return { kind: "none" };
        this.failed(now);
        return { kind: "late", what: "reply" };
      case "stopped":
        return { kind: "none" };
    }
  }

  /** getToken was called for this refresh. */
  fetching(now: number, ticket: number): void {
    this.step = { kind: "fetching", ticket, deadline: now + this.timeouts.getTokenMs };
  }

  /** The getToken call this refresh waits for. */
  isTicket(ticket: number): boolean {
    return this.step.kind === "fetching" && this.step.ticket === ticket;
  }

  /** Refresh was written as frame `id`. */
  sent(now: number, id: number): void {
    this.step = { kind: "sent", id, deadline: now + this.timeouts.replyMs };
  }

  /** `id` is the Refresh waiting for its reply (a Refreshed or an Error about another is stale). */
  isReply(id: number): boolean {
    return this.step.kind === "sent" && this.step.id === id;
  }

  /** Refreshed (or the Welcome): the token is valid for `expiresInMs`; the next refresh is scheduled. */
  renewed(now: number, expiresInMs: number): void {
    this.expires = now + expiresInMs;
    this.warned = false;
    this.retry.reset();
    // No expiry (0) would mean refreshing in a tight loop: nothing is scheduled then.
    this.step = expiresInMs > 0 ? { kind: "waiting", at: now + refreshDelay(expiresInMs) } : { kind: "stopped" };
  }

  /** The attempt failed: retry after a short back-off while the token is valid (or once warned). */
  failed(now: number): void {
    const at = now + this.retry.next();
    this.step = this.warned || at < this.expires ? { kind: "waiting", at } : { kind: "stopped" };
  }

  /** The gateway's warning: the token expired. True when an attempt should start now. */
  warn(now: number): boolean {
    this.warned = true;
    this.expires = Math.min(this.expires, now);
    this.retry.reset(); // the grace is short: retries start short again
    return this.step.kind === "waiting" || this.step.kind === "stopped";
  }
}
