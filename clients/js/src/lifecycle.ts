/**
 * The page lifecycle as the client needs it: when the page is about to be frozen (Page
 * Lifecycle API `freeze`, on `document`) or runs again (`resume`), and when it is being
 * unloaded or put into the back/forward cache (`pagehide`, on `window`) or shown again
 * (`pageshow`). `persisted` is the event's own field: on `pagehide` it says whether the page
 * goes into the back/forward cache (true) or is unloaded for good (false); on `pageshow`,
 * whether it comes back from that cache. Injectable, so tests drive it without a DOM.
 *
 * Visibility is not reported: nothing in the SDK depends on it any more. A hidden page that
 * the browser freezes gets `freeze` first, and a frozen page's connections are closed by the
 * browser whatever their transport, so `freeze` is the moment that matters.
 */

export type LifecycleEvent =
  | { type: "freeze" }
  | { type: "resume" }
  | { type: "pagehide"; persisted: boolean }
  | { type: "pageshow"; persisted: boolean };

export interface PageLifecycle {
  /**
   * Calls `listener` on every lifecycle event, synchronously inside the browser's event
   * handler (what the SDK writes in `pagehide` must be written there); returns a function
   * that stops it.
   */
  subscribe(listener: (event: LifecycleEvent) => void): () => void;
}

type Target = Pick<EventTarget, "addEventListener" | "removeEventListener">;

/**
 * The lifecycle of `doc` and `win` (default: this page's `document` and `window`). Where there
 * is no document (workers, Node), nothing ever happens.
 */
export function documentLifecycle(
  doc: Target | undefined = typeof document === "undefined" ? undefined : document,
  win: Target | undefined = typeof window === "undefined" ? undefined : window,
): PageLifecycle {
  return {
    subscribe(listener) {
      const added: [Target, string, (ev: Event) => void][] = [];
      const listen = (target: Target | undefined, type: string, handler: (ev: Event) => void) => {
        if (!target) return;
        target.addEventListener(type, handler);
        added.push([target, type, handler]);
      };
      const persisted = (ev: Event) => (ev as Partial<PageTransitionEvent>).persisted === true;
      listen(doc, "freeze", () => listener({ type: "freeze" }));
      listen(doc, "resume", () => listener({ type: "resume" }));
      listen(win, "pagehide", (ev) => listener({ type: "pagehide", persisted: persisted(ev) }));
      listen(win, "pageshow", (ev) => listener({ type: "pageshow", persisted: persisted(ev) }));
      return () => {
        for (const [target, type, handler] of added) target.removeEventListener(type, handler);
      };
    },
  };
}
