/**
 * Join and Leave frames waiting for their reply (Joined / Left, or an Error), and the app
 * requests waiting on each. The frames themselves live in the Outbox; this is only who waits
 * for what, and until when.
 */

export interface Waiter {
  req: number;
  deadline: number;
}

export interface PendingRequest {
  /** ClientFrame.id, echoed by the reply. */
  readonly id: number;
  readonly kind: "join" | "leave";
  readonly room: string;
  /** An automatic re-join after a fresh session (nobody asked; no deadline). */
  readonly rejoin: boolean;
  waiters: Waiter[];
}

export class Requests {
  private readonly byId = new Map<number, PendingRequest>();

  add(request: PendingRequest): void {
    this.byId.set(request.id, request);
  }

  /** A join of `room` still waiting for its reply: a second join shares it. */
  joinInFlight(room: string): PendingRequest | undefined {
    for (const r of this.byId.values()) if (r.kind === "join" && r.room === room) return r;
    return undefined;
  }

  /** The reply (or Error) to frame `id` arrived. */
  take(id: number): PendingRequest | undefined {
    const r = this.byId.get(id);
    if (r) this.byId.delete(id);
    return r;
  }

  /** Waiters whose deadline passed. A request nobody waits for any more is forgotten. */
  expire(now: number): { request: PendingRequest; waiter: Waiter }[] {
    const out: { request: PendingRequest; waiter: Waiter }[] = [];
    for (const r of [...this.byId.values()]) {
      const late = r.waiters.filter((w) => w.deadline <= now);
      if (late.length === 0) continue;
      r.waiters = r.waiters.filter((w) => w.deadline > now);
      for (const waiter of late) out.push({ request: r, waiter });
      if (r.waiters.length === 0 && !r.rejoin) this.byId.delete(r.id);
    }
    return out;
  }

  nextDeadline(): number | undefined {
    let next: number | undefined;
    for (const r of this.byId.values()) {
      for (const w of r.waiters) if (next === undefined || w.deadline < next) next = w.deadline;
    }
    return next;
  }

  /** Rooms with a Leave on its way (not to be re-joined), and automatic re-joins not yet answered. */
  pendingRooms(): { leaving: Set<string>; rejoining: Set<string> } {
    const leaving = new Set<string>();
    const rejoining = new Set<string>();
    for (const r of this.byId.values()) {
      if (r.kind === "leave") leaving.add(r.room);
      else if (r.rejoin) rejoining.add(r.room);
    }
    return { leaving, rejoining };
  }

  /** Every request (the session is gone, or the client closes). */
  drain(): PendingRequest[] {
    const all = [...this.byId.values()];
    this.byId.clear();
    return all;
  }
}
