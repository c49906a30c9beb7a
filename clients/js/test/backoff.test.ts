import { describe, expect, it } from "vitest";
import { Backoff, spreadDelay } from "../src/core/backoff.js";

describe("Backoff (full jitter)", () => {
  it("defaults to 250 ms initial, doubling, capped at 10 s", () => {
    const b = new Backoff({}, () => 0.999999);
    const delays = Array.from({ length: 10 }, () => b.next());
    expect(delays).toEqual([250, 500, 1000, 2000, 4000, 8000, 10000, 10000, 10000, 10000]);
  });

  it("can be as short as 0 (full jitter, not equal jitter)", () => {
    const b = new Backoff({}, () => 0);
    expect([b.next(), b.next(), b.next()]).toEqual([0, 0, 0]);
  });

  it("stays within [0, ceiling] and spreads out with a real random source", () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000 });
    const ceilings = [100, 200, 400, 800, 1000, 1000];
    for (const ceiling of ceilings) {
      expect(b.ceiling()).toBe(ceiling);
      const d = b.next();
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThanOrEqual(ceiling);
    }
    // Many clients at the same step do not pick the same delay.
    const samples = new Set(Array.from({ length: 200 }, () => new Backoff({ initialMs: 1000 }).next()));
    expect(samples.size).toBeGreaterThan(50);
  });

  it("starts again from initialMs after reset()", () => {
    const b = new Backoff({ initialMs: 250 }, () => 0.999999);
    b.next();
    b.next();
    b.next();
    expect(b.attempts).toBe(3);
    b.reset();
    expect(b.next()).toBe(250);
  });

  it("rejects nonsensical settings", () => {
    expect(() => new Backoff({ initialMs: 500, maxMs: 100 })).toThrow(RangeError);
    expect(() => new Backoff({ multiplier: 0.5 })).toThrow(RangeError);
  });
});

describe("spreadDelay (GoAway)", () => {
  it("is uniform over [after, after + spread], both ends included", () => {
    expect(spreadDelay(2000, 4000, () => 0)).toBe(2000);
    expect(spreadDelay(2000, 4000, () => 0.999999)).toBe(6000);
    expect(spreadDelay(2000, 0, () => 0.7)).toBe(2000);
    const seen = new Set(Array.from({ length: 500 }, () => spreadDelay(0, 10, Math.random)));
    expect([...seen].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });
});
