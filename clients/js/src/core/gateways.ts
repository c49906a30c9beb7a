/**
 * The gateways a client may connect to, and which one the next connection round goes to.
 *
 * One gateway (the usual setup): always that one, exactly as without this module.
 * Several (cluster mode, where a session resumes on any gateway):
 *   - the first round goes to a gateway drawn at random, so a cluster's clients spread over it;
 *   - a lost connection reconnects to the same gateway first (the session lives there);
 *   - a round that fails on a gateway (every transport failed, or the gateway refused for a
 *     reason of its own: full, cut off from the cluster) goes on to another gateway, drawn at
 *     random among those that have not failed since the last Welcome (the clients of a dead
 *     gateway spread over the others instead of all landing on its neighbour). Once every
 *     gateway has failed (a whole "sweep"), the client backs off, then starts a new sweep
 *     with another gateway than the last one tried;
 *   - a gateway that sends the client away (GoAway, close 4009) starts a sweep without it:
 *     the next round goes to another gateway, drawn at random as well;
 *   - a new list (from `GET /endpoints`) replaces the old one; the gateway in use and those
 *     that failed in this sweep are recognised in it (by node name, else by URL).
 */
import type { GatewayEndpoint } from "../types.js";

/** The same gateway: same node name when both have one, else a URL in common. */
export function sameGateway(a: GatewayEndpoint, b: GatewayEndpoint): boolean {
  if (a.node && b.node) return a.node === b.node;
  return (!!a.webSocketUrl && a.webSocketUrl === b.webSocketUrl) || (!!a.webTransportUrl && a.webTransportUrl === b.webTransportUrl);
}

export class Gateways {
  private list: readonly GatewayEndpoint[];
  /** The gateway of the next round; undefined until one is drawn. */
  private index: number | undefined;
  /** Gateways that failed (or sent the client away) in this sweep. */
  private failed: GatewayEndpoint[] = [];

  constructor(
    list: readonly GatewayEndpoint[],
    private readonly random: () => number,
  ) {
    this.list = list;
  }

  get all(): readonly GatewayEndpoint[] {
    return this.list;
  }

  /** The gateway for the next round (drawn at random the first time); undefined: none known. */
  current(): GatewayEndpoint | undefined {
    if (this.list.length === 0) return undefined;
    this.index ??= this.draw((x) => !this.hasFailed(x)) ?? this.draw(() => true) ?? 0;
    return this.list[this.index];
  }

  /**
   * A round on `g` failed. Returns the gateway to go on to at once, or undefined when every
   * gateway has failed in this sweep: then back off (the next sweep starts with another one).
   */
  roundFailed(g: GatewayEndpoint): GatewayEndpoint | undefined {
    if (!this.hasFailed(g)) this.failed.push(g);
    const next = this.draw((x) => !this.hasFailed(x));
    if (next !== undefined) {
      this.index = next;
      return this.list[next];
    }
    this.failed = [];
    this.index = this.draw((x) => !sameGateway(x, g));
    return undefined;
  }

  /** `g` sent the client away (GoAway, close 4009): the next round goes elsewhere, if it can. */
  sentAway(g: GatewayEndpoint): void {
    this.failed = [g];
    const next = this.draw((x) => !this.hasFailed(x));
    if (next === undefined) this.failed = [];
    else this.index = next;
  }

  /** A Welcome: the sweep is over. */
  welcomed(): void {
    this.failed = [];
  }

  /** A new list replaces the old one. Returns false when it is the same. */
  replace(list: readonly GatewayEndpoint[]): boolean {
    if (list.length === 0) return false;
    const same = signature(list) === signature(this.list);
    const current = this.index === undefined ? undefined : this.list[this.index];
    this.list = list;
    this.failed = this.failed.filter((f) => list.some((g) => sameGateway(f, g)));
    if (current) {
      const i = this.position(current);
      this.index = i < 0 ? undefined : i;
    }
    return !same;
  }

  private position(g: GatewayEndpoint): number {
    return this.list.findIndex((x) => sameGateway(x, g));
  }

  private hasFailed(g: GatewayEndpoint): boolean {
    return this.failed.some((f) => sameGateway(f, g));
  }

  /**
   * The index of a gateway drawn at random among those `allowed`; undefined when none is. A
   * single candidate takes no random draw (so a single gateway behaves exactly as before).
   */
  private draw(allowed: (g: GatewayEndpoint) => boolean): number | undefined {
    const candidates = [...this.list.keys()].filter((i) => allowed(this.list[i]!));
    if (candidates.length <= 1) return candidates[0];
    return candidates[Math.min(candidates.length - 1, Math.floor(this.random() * candidates.length))];
  }
}

function signature(list: readonly GatewayEndpoint[]): string {
  return JSON.stringify(
    list.map((g) => [
      g.node ?? "",
      g.webTransportUrl ?? "",
      g.webSocketUrl ?? "",
      (g.serverCertificateHashes ?? []).map((h) => `${h.algorithm}:${hexOf(h.value)}`),
    ]),
  );
}

function hexOf(value: BufferSource): string {
  const bytes = ArrayBuffer.isView(value)
    ? new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
    : new Uint8Array(value);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
