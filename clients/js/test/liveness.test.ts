import { describe, expect, it } from "vitest";
import { Liveness } from "../src/core/liveness.js";

const cfg = { livenessTimeoutMs: 10_000, pingIntervalMs: 4_000 };

/** Drives the machine like the core does: exactly when it is due. */
function fireOnTime(l: Liveness) {
  const at = l.pollTimeout();
  return { at, action: l.handleTimeout(at) };
}

describe("Liveness", () => {
  it("pings every ping interval while frames keep arriving", () => {
    const l = new Liveness(0, cfg);
    const actions: string[] = [];
    for (let i = 0; i < 5; i++) {
      const { at, action } = fireOnTime(l);
      actions.push(`${at}:${action.kind}`);
      l.onInbound(at + 50); // the Pong
    }
    expect(actions).toEqual(["4000:ping", "8000:ping", "12000:ping", "16000:ping", "20000:ping"]);
  });

  it("declares the gateway dead when nothing arrived for liveness_timeout", () => {
    const l = new Liveness(0, cfg);
    expect(fireOnTime(l)).toEqual({ at: 4000, action: { kind: "ping" } });
    expect(fireOnTime(l)).toEqual({ at: 8000, action: { kind: "ping" } });
    expect(fireOnTime(l)).toEqual({ at: 10_000, action: { kind: "dead", silentForMs: 10_000 } });
  });

  it("counts any inbound frame, not only Pongs", () => {
    const l = new Liveness(0, cfg);
    expect(fireOnTime(l).action.kind).toBe("ping"); // 4 000
    expect(fireOnTime(l).action.kind).toBe("ping"); // 8 000
    const armed = l.pollTimeout(); // the 10 000 deadline
    l.onInbound(9_000); // e.g. a PeerState
    expect(l.handleTimeout(armed)).toEqual({ kind: "none" });
    expect(l.pollTimeout()).toBe(12_000); // next ping; the deadline is now 19 000
    l.handleTimeout(12_000);
    l.handleTimeout(16_000);
    expect(l.handleTimeout(19_000)).toEqual({ kind: "dead", silentForMs: 10_000 });
  });

  it("does not declare death on a tick that ran late by more than the ping interval (frozen tab)", () => {
    const l = new Liveness(0, cfg);
    // Armed for 4 000, but the tab was frozen until 60 000.
    const action = l.handleTimeout(60_000);
    expect(action).toEqual({ kind: "drift", lateByMs: 56_000 });
    // The deadline restarted from the late tick: the gateway has a full timeout to answer.
    expect(l.silentFor(60_000)).toBe(0);
    expect(l.handleTimeout(64_000).kind).toBe("ping");
    l.onInbound(64_100);
    expect(l.handleTimeout(68_000).kind).toBe("ping");
  });

  it("still declares death after a drift tick when the gateway stays silent", () => {
    const l = new Liveness(0, cfg);
    expect(l.handleTimeout(60_000).kind).toBe("drift");
    expect(l.handleTimeout(64_000).kind).toBe("ping");
    expect(l.handleTimeout(68_000).kind).toBe("ping");
    expect(l.handleTimeout(70_000)).toEqual({ kind: "dead", silentForMs: 10_000 });
  });

  it("treats small lateness (<= ping interval) as normal: a dead gateway is still detected", () => {
    const l = new Liveness(0, cfg);
    l.handleTimeout(4_000);
    l.handleTimeout(8_000);
    // Deadline armed for 10 000 fires 3.9 s late: not drift, the gateway is dead.
    expect(l.handleTimeout(13_900)).toEqual({ kind: "dead", silentForMs: 13_900 });
  });

  it("returns none when the timer fires but an inbound frame moved the deadline", () => {
    const l = new Liveness(0, { livenessTimeoutMs: 1000, pingIntervalMs: 5000 });
    const armed = l.pollTimeout(); // 1000 (ping interval is clamped to the timeout)
    l.onInbound(900);
    expect(l.handleTimeout(armed).kind).not.toBe("dead");
  });
});

describe("Liveness: called early", () => {
  it("does nothing before pollTimeout()", () => {
    const l = new Liveness(0, cfg);
    expect(l.handleTimeout(3_999)).toEqual({ kind: "none" });
    expect(l.pollTimeout()).toBe(4_000);
  });
});
