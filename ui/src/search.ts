// The search box: text (full-text and fuzzy over labels and marked data fields) or
// meaning (text-to-image: the server encodes the text and finds the nearest
// embeddings), within the media item and the page's filters. A hit seeks to its time.

import { ApiError, postJson } from "./api";
import { colour } from "./boxes";
import type { SearchPage } from "./types";

export class Search {
  private readonly form = document.getElementById("search-form") as HTMLFormElement;
  private readonly input = document.getElementById("search-input") as HTMLInputElement;
  private readonly mode = document.getElementById("search-mode") as HTMLSelectElement;
  private readonly results = document.getElementById("search-results") as HTMLElement;
  private readonly error = document.getElementById("search-error") as HTMLElement;
  /** The current media item's filter; null before one is picked. */
  filter: Record<string, unknown> | null = null;
  onSeek: (seconds: number) => void = () => {};

  constructor() {
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      void this.run();
    });
    this.results.addEventListener("click", (e) => {
      const hit = (e.target as HTMLElement).closest<HTMLElement>(".hit");
      if (hit) this.onSeek(Number(hit.dataset.startMs) / 1000);
    });
  }

  clear(): void {
    this.results.replaceChildren();
    this.error.textContent = "";
  }

  private async run(): Promise<void> {
    const query = this.input.value.trim();
    this.clear();
    if (!this.filter) {
      this.error.textContent = "Pick a media item first.";
      return;
    }
    if (!query) return;
    const meaning = this.mode.value === "meaning";
    const body = meaning
      ? { ...this.filter, knn: { text: query, k: 20 }, limit: 20, omit_embeddings: true }
      : { ...this.filter, text: { query }, limit: 50, omit_embeddings: true };
    this.results.dataset.state = "searching";
    try {
      const page = await postJson<SearchPage>("/v1/annotations/search", body);
      this.show(page);
    } catch (e) {
      this.error.textContent =
        e instanceof ApiError && e.status === 422 && meaning && e.fields.some((f) => f.startsWith("knn.text"))
          ? "This server has no text encoder for meaning search ([search.text_encoder] in the README)."
          : e instanceof ApiError
            ? `${e.detail}${e.fields.length ? ` (${e.fields.join("; ")})` : ""}`
            : String(e);
    } finally {
      this.results.dataset.state = "done";
    }
  }

  private show(page: SearchPage): void {
    if (page.annotations.length === 0) {
      this.error.textContent = "No hits.";
      return;
    }
    this.results.replaceChildren(
      ...page.annotations.map((a, i) => {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "hit";
        b.dataset.startMs = String(a.start_ms);
        b.dataset.label = a.label ?? "";
        b.dataset.annotationId = a.id;
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.background = colour(a.label);
        const t = document.createElement("span");
        t.className = "time";
        t.textContent = `${(a.start_ms / 1000).toFixed(1)} s`;
        const label = document.createElement("span");
        label.textContent = a.label ?? "(no label)";
        const score = document.createElement("span");
        score.className = "muted";
        const s = page.scores?.[i];
        score.textContent = s != null ? `score ${s.toFixed(3)}` : a.confidence != null ? a.confidence.toFixed(2) : "";
        b.append(swatch, t, label, score);
        return b;
      }),
    );
  }
}
