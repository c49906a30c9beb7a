/**
 * The page's lifecycle as the client needs it: is the page hidden, and when does that change
 * (`visibilitychange`), or when is it frozen and resumed (Page Lifecycle API `freeze` /
 * `resume`, fired on `document`). Injectable, so tests drive it without a DOM.
 */

export type LifecycleEvent = "visibilitychange" | "freeze" | "resume";

export interface PageLifecycle {
  /** True while the page is hidden (a background tab, a minimised window, a locked screen). */
  hidden(): boolean;
  /** Calls `listener` on every lifecycle event; returns a function that stops it. */
  subscribe(listener: (event: LifecycleEvent) => void): () => void;
}

const EVENTS: readonly LifecycleEvent[] = ["visibilitychange", "freeze", "resume"];

/**
 * The lifecycle of `doc` (default: this page's `document`). Where there is no document
 * (workers, Node), the page counts as always visible and nothing ever changes.
 */
export function documentLifecycle(
  doc: Pick<Document, "visibilityState" | "addEventListener" | "removeEventListener"> | undefined = typeof document ===
  "undefined"
    ? undefined
    : document,
): PageLifecycle {
  if (!doc) {
    return { hidden: () => false, subscribe: () => () => undefined };
  }
  return {
    hidden: () => doc.visibilityState === "hidden",
    subscribe(listener) {
      const handlers = EVENTS.map((type) => {
        const handler = () => listener(type);
        doc.addEventListener(type, handler);
        return [type, handler] as const;
      });
      return () => {
        for (const [type, handler] of handlers) doc.removeEventListener(type, handler);
      };
    },
  };
}
