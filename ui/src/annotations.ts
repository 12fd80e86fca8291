// The annotations of one media item, loaded by windows of time around the playhead (a
// film's worth of boxes does not fit in a page), for one view: the visible runs under
// the filters, or one run previewed by its operation id.

import { postJson } from "./api";
import type { Annotation, Filters, SearchPage } from "./types";

/** One window's span: loads stay small and a seek loads at most two. */
export const WINDOW_MS = 60_000;
/** Pages of 1000 per window at most; past it the window shows what it has and says so. */
const MAX_PAGES = 20;

/** The search filter of a media item under the page's filters. */
export function filterOf(mediaId: string, f: Filters): Record<string, unknown> {
  const q: Record<string, unknown> = { media_id: mediaId };
  if (f.type) {
    const [type, version] = f.type.split("@");
    q.annotation_type = type;
    if (version !== undefined) q.annotation_type_version = Number(version);
  }
  if (f.label) q.label = f.label;
  if (f.minConfidence > 0) q.min_confidence = f.minConfidence;
  return q;
}

export class Windows {
  private readonly byId = new Map<string, Annotation>();
  private readonly loads = new Map<number, Promise<void>>();
  /** Set when a window held more than MAX_PAGES pages. */
  truncated = false;
  /** Called after each window lands, to redraw. */
  onLoad: () => void = () => {};
  onError: (e: unknown) => void = () => {};

  constructor(private readonly filter: Record<string, unknown>) {}

  all(): Iterable<Annotation> {
    return this.byId.values();
  }

  /** Loads the window holding `t` and the one after it; resolves when the first is in. */
  ensure(t: number): Promise<void> {
    const w = Math.max(0, Math.floor(t / WINDOW_MS));
    void this.load(w + 1);
    return this.load(w);
  }

  private load(w: number): Promise<void> {
    let p = this.loads.get(w);
    if (!p) {
      p = this.fetch(w).then(
        () => this.onLoad(),
        (e) => {
          // Forget the failed load so the next draw tries again.
          this.loads.delete(w);
          this.onError(e);
        },
      );
      this.loads.set(w, p);
    }
    return p;
  }

  private async fetch(w: number): Promise<void> {
    const range = { start_ms: w * WINDOW_MS, end_ms: (w + 1) * WINDOW_MS - 1 };
    let token: string | null | undefined;
    for (let page = 0; page < MAX_PAGES; page++) {
      const body: Record<string, unknown> = {
        ...this.filter,
        time_range: range,
        limit: 1000,
        omit_embeddings: true,
      };
      if (token) body.page_token = token;
      const res = await postJson<SearchPage>("/v1/annotations/search", body);
      for (const a of res.annotations) this.byId.set(a.id, a);
      token = res.next_page_token;
      if (!token) return;
    }
    this.truncated = true;
  }
}
