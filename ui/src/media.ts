// The media picker: recent media (newest run first) narrowed as one types, and any id
// typed in full opens directly (Enter), whether or not the list shows it.

import { getJson } from "./api";
import type { MediaItem } from "./types";

export class Picker {
  private readonly input = document.getElementById("media-search") as HTMLInputElement;
  private readonly form = document.getElementById("media-form") as HTMLFormElement;
  private readonly list = document.getElementById("media-list") as HTMLElement;
  private timer = 0;
  private generation = 0;
  current: string | null = null;
  onPick: (mediaId: string) => void = () => {};
  onError: (e: unknown) => void = () => {};

  constructor() {
    this.input.addEventListener("input", () => {
      clearTimeout(this.timer);
      this.timer = window.setTimeout(() => void this.refresh(), 200);
    });
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      const id = this.input.value.trim();
      if (id) this.onPick(id);
    });
    this.list.addEventListener("click", (e) => {
      const b = (e.target as HTMLElement).closest<HTMLElement>(".media-item");
      if (b?.dataset.mediaId) this.onPick(b.dataset.mediaId);
    });
  }

  async refresh(): Promise<void> {
    const generation = ++this.generation;
    const q = this.input.value.trim();
    try {
      const res = await getJson<{ media: MediaItem[] }>(`/v1/media?limit=50${q ? `&q=${encodeURIComponent(q)}` : ""}`);
      if (generation !== this.generation) return;
      this.render(res.media);
    } catch (e) {
      this.onError(e);
    }
  }

  mark(mediaId: string | null): void {
    this.current = mediaId;
    for (const b of this.list.querySelectorAll<HTMLElement>(".media-item")) {
      b.classList.toggle("selected", b.dataset.mediaId === mediaId);
      b.setAttribute("aria-current", String(b.dataset.mediaId === mediaId));
    }
  }

  private render(items: MediaItem[]): void {
    this.list.dataset.ready = "true";
    if (items.length === 0) {
      const p = document.createElement("li");
      p.className = "muted";
      p.textContent = this.input.value.trim() ? "No media match. Enter opens the id as typed." : "No runs yet.";
      this.list.replaceChildren(p);
      return;
    }
    this.list.replaceChildren(
      ...items.map((m) => {
        const li = document.createElement("li");
        const b = document.createElement("button");
        b.type = "button";
        b.className = "media-item";
        b.dataset.mediaId = m.media_id;
        const name = document.createElement("span");
        name.className = "name";
        name.textContent = m.media_id;
        const info = document.createElement("span");
        info.className = "muted small";
        const parts: string[] = [];
        if (m.runs != null) parts.push(`${m.runs} run${m.runs === 1 ? "" : "s"}`);
        if (m.last_run_at) parts.push(new Date(m.last_run_at).toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" }));
        info.textContent = parts.join(" · ");
        b.append(name, info);
        li.append(b);
        return li;
      }),
    );
    this.mark(this.current);
  }
}
