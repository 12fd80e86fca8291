// The runs of the media item: each key that wrote to it, with every run of the key
// (status, number, annotations, producer, times, which one is active). A STARTED run
// can be previewed beside the active ones.

import { getJson, segment } from "./api";
import type { MediaRuns, Operation } from "./types";

/** What changed between two listings matters to the rest of the page. */
export interface Change {
  /** The set of active runs changed: boxes and lanes must be reloaded. */
  active: boolean;
  /** Anything shown changed (counts, statuses): the table must be redrawn. */
  any: boolean;
}

export class Runs {
  private readonly root = document.getElementById("runs") as HTMLElement;
  private last: MediaRuns | null = null;
  /** The run previewed, if any. */
  previewing: string | null = null;
  onPreview: (op: Operation | null) => void = () => {};

  constructor() {
    this.root.addEventListener("click", (e) => {
      const b = (e.target as HTMLElement).closest<HTMLButtonElement>(".preview-toggle");
      if (!b) return;
      const id = b.dataset.operationId!;
      this.previewing = this.previewing === id ? null : id;
      this.render();
      this.onPreview(this.previewing ? this.find(this.previewing) : null);
    });
  }

  clear(): void {
    this.last = null;
    this.previewing = null;
    this.root.replaceChildren();
  }

  find(id: string): Operation | null {
    for (const k of this.last?.keys ?? []) for (const r of k.runs) if (r.id === id) return r;
    return null;
  }

  /** A run's metadata `duration_ms` (ingest records it), for a timeline without video. */
  durationMs(): number {
    let d = 0;
    for (const k of this.last?.keys ?? [])
      for (const r of k.runs) {
        const v = r.metadata?.duration_ms;
        if (typeof v === "number" && r.active) d = Math.max(d, v);
      }
    return d;
  }

  /** Fetches the runs again and says what changed. */
  async refresh(mediaId: string): Promise<Change> {
    const next = await getJson<MediaRuns>(`/v1/media/${segment(mediaId)}/runs`);
    const before = this.last;
    this.last = next;
    const active = signature(before, true) !== signature(next, true);
    const any = signature(before, false) !== signature(next, false);
    if (any) this.render();
    return { active, any };
  }

  private render(): void {
    const keys = this.last?.keys ?? [];
    if (keys.length === 0) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "No runs name this media item (by pivot id or metadata.media_id).";
      this.root.replaceChildren(p);
      return;
    }
    this.root.replaceChildren(
      ...keys.map((k) => {
        const section = document.createElement("section");
        section.className = "key";
        const h = document.createElement("h3");
        h.textContent = `${k.annotation_type} v${k.annotation_type_version}`;
        const pivot = document.createElement("div");
        pivot.className = "muted small pivot";
        pivot.textContent = `pivot ${k.pivot_id}`;
        pivot.title = k.pivot_id;
        const table = document.createElement("table");
        table.className = "runs-key";
        table.dataset.key = `${k.annotation_type}@${k.annotation_type_version}@${k.pivot_id}`;
        const head = table.createTHead().insertRow();
        for (const c of ["#", "status", "count", "producer", "started", "ended", ""]) {
          const th = document.createElement("th");
          th.textContent = c;
          head.append(th);
        }
        const body = table.createTBody();
        for (const r of k.runs) body.append(this.row(r));
        section.append(h, pivot, table);
        return section;
      }),
    );
  }

  private row(r: Operation): HTMLTableRowElement {
    const tr = document.createElement("tr");
    tr.className = `run${r.active ? " active" : ""}`;
    tr.dataset.operationId = r.id;
    tr.dataset.status = r.status;
    tr.dataset.number = String(r.operation_number);
    tr.dataset.active = String(r.active);
    tr.title = r.id;
    const cell = (text: string, cls = "") => {
      const td = tr.insertCell();
      td.textContent = text;
      if (cls) td.className = cls;
      return td;
    };
    cell(String(r.operation_number));
    const status = cell(r.status, `status ${r.status.toLowerCase()}`);
    if (r.active) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "active";
      badge.title = "the visible run of its key";
      status.append(" ", badge);
    }
    cell(r.annotation_count.toLocaleString(), "num");
    cell(r.producer ?? "-", "small");
    cell(when(r.created_at), "small").title = r.created_at;
    const ended = r.finished_at ?? (r.status === "STARTED" ? null : r.updated_at);
    cell(ended ? when(ended) : "-", "small").title = ended ?? "";
    const last = tr.insertCell();
    if (r.status === "STARTED") {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "preview-toggle";
      b.dataset.operationId = r.id;
      b.setAttribute("aria-pressed", String(this.previewing === r.id));
      b.textContent = this.previewing === r.id ? "Hide" : "Preview";
      b.title = "Draw this run's boxes beside the visible ones";
      last.append(b);
    }
    return tr;
  }
}

function signature(runs: MediaRuns | null, activeOnly: boolean): string {
  if (!runs) return "";
  const parts: string[] = [];
  for (const k of runs.keys)
    for (const r of k.runs) {
      if (activeOnly) {
        if (r.active) parts.push(r.id);
      } else parts.push(`${r.id}:${r.status}:${r.active}:${r.annotation_count}:${r.updated_at}`);
    }
  return parts.sort().join("|");
}

/** Today's times as hh:mm:ss, older ones with their date; the full time on hover. */
function when(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const today = d.toDateString() === new Date().toDateString();
  return today
    ? d.toLocaleTimeString(undefined, { hour12: false })
    : d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
}
