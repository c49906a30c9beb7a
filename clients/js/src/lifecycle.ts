/**
 * The page's lifecycle as the client needs it: is the page hidden, and when does that change
 * (`visibilitychange`), when is it frozen and resumed (Page Lifecycle API `freeze` / `resume`,
 * fired on `document`), and when is it being unloaded or put into the back/forward cache, or
 * shown again (`pagehide` / `pageshow`, fired on `window`). Injectable, so tests drive it
 * without a DOM.
 */

export type LifecycleEvent = "visibilitychange" | "freeze" | "resume" | "pagehide" | "pageshow";

export interface PageLifecycle {
  /** True while the page is hidden (a background tab, a minimised window, a locked screen). */
  hidden(): boolean;
  /** Calls `listener` on every lifecycle event; returns a function that stops it. */
  subscribe(listener: (event: LifecycleEvent) => void): () => void;
}

type Target = Pick<EventTarget, "addEventListener" | "removeEventListener">;

const DOCUMENT_EVENTS: readonly LifecycleEvent[] = ["visibilitychange", "freeze", "resume"];
const WINDOW_EVENTS: readonly LifecycleEvent[] = ["pagehide", "pageshow"];

/**
 * The lifecycle of `doc` and `win` (default: this page's `document` and `window`). Where
 * there is no document (workers, Node), the page counts as always visible and nothing ever
 * changes.
 */
export function documentLifecycle(
  doc: (Target & Pick<Document, "visibilityState">) | undefined = typeof document === "undefined" ? undefined : document,
  win: Target | undefined = typeof window === "undefined" ? undefined : window,
): PageLifecycle {
  if (!doc) {
    return { hidden: () => false, subscribe: () => () => undefined };
  }
  return {
    hidden: () => doc.visibilityState === "hidden",
    subscribe(listener) {
      const added: [Target, LifecycleEvent, () => void][] = [];
      const listen = (target: Target | undefined, types: readonly LifecycleEvent[]) => {
        if (!target) return;
        for (const type of types) {
          const handler = () => listener(type);
          target.addEventListener(type, handler);
          added.push([target, type, handler]);
        }
      };
      listen(doc, DOCUMENT_EVENTS);
      listen(win, WINDOW_EVENTS);
      return () => {
        for (const [target, type, handler] of added) target.removeEventListener(type, handler);
      };
    },
  };
}
