// The timeline under the video: one lane per label (or per type version) of the visible
// annotations, from the aggregation API's histogram, each non-empty bucket a segment
// whose shade is its density. Clicking a segment seeks to its start.

import { postJson } from "./api";
import { colour } from "./boxes";
import type { Aggregates, Bucket } from "./types";

export type LaneMode = "label" | "type";

/** Most lanes drawn; the rest are named in a note. */
const MAX_LANES = 40;
/** Bucket widths the timeline picks from: at most ~200 buckets over the media. */
const INTERVALS = [100, 200, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000];

export function intervalFor(durationMs: number): number {
  const want = durationMs / 200;
  return INTERVALS.find((i) => i >= want) ?? INTERVALS[INTERVALS.length - 1];
}

interface Lane {
  name: string;
  buckets: { start_ms: number; count: number }[];
}

export class Timeline {
  private readonly root = document.getElementById("timeline") as HTMLElement;
  private readonly note = document.getElementById("timeline-note") as HTMLElement;
  private readonly cursor = document.createElement("div");
  private generation = 0;
  private durationMs = 0;
  onSeek: (seconds: number) => void = () => {};

  constructor() {
    this.cursor.className = "cursor";
    this.root.addEventListener("click", (e) => {
      const seg = (e.target as HTMLElement).closest<HTMLElement>(".segment");
      if (seg) this.onSeek(Number(seg.dataset.startMs) / 1000);
    });
  }

  /** Where the playhead is, as a line across the lanes. */
  setTime(seconds: number): void {
    if (!this.durationMs) return;
    this.cursor.style.left = `calc(var(--lane-label) + (100% - var(--lane-label)) * ${Math.min(1, (seconds * 1000) / this.durationMs)})`;
  }

  clear(text: string): void {
    this.generation++;
    this.root.dataset.ready = "false";
    this.root.replaceChildren();
    this.note.textContent = text;
  }

  /** Loads and draws the lanes for `filter` (a search filter naming one media item). */
  async load(filter: Record<string, unknown>, mode: LaneMode, durationMs: number): Promise<void> {
    const generation = ++this.generation;
    this.root.dataset.ready = "false";
    const interval = intervalFor(durationMs);
    let lanes: Lane[];
    let more = 0;
    if (mode === "label") {
      const agg = await postJson<Aggregates>("/v1/annotations/aggregate", {
        ...filter,
        aggregations: { labels: 1000, histogram: { interval_ms: interval, by_label: true } },
      });
      const names = (agg.labels ?? []).map((l) => l.label);
      more = Math.max(0, names.length - MAX_LANES);
      lanes = names.slice(0, MAX_LANES).map((name) => ({ name, buckets: perLabel(agg.histogram ?? [], name) }));
    } else {
      const agg = await postJson<Aggregates>("/v1/annotations/aggregate", { ...filter, aggregations: { types: true } });
      const types = agg.types ?? [];
      more = Math.max(0, types.length - MAX_LANES);
      lanes = await Promise.all(
        types.slice(0, MAX_LANES).map(async (t) => {
          const h = await postJson<Aggregates>("/v1/annotations/aggregate", {
            ...filter,
            annotation_type: t.annotation_type,
            annotation_type_version: t.annotation_type_version,
            aggregations: { histogram: { interval_ms: interval } },
          });
          return { name: `${t.annotation_type} v${t.annotation_type_version}`, buckets: h.histogram ?? [] };
        }),
      );
    }
    if (generation !== this.generation) return; // a newer load replaced this one
    // The media may run past what the player knows (no video): stretch to the last bucket.
    const last = Math.max(0, ...lanes.flatMap((l) => l.buckets.map((b) => b.start_ms + interval)));
    this.durationMs = Math.max(durationMs, last, 1);
    this.draw(lanes, interval);
    this.note.textContent =
      lanes.length === 0
        ? "No visible annotations under these filters."
        : `${lanes.length} lane${lanes.length === 1 ? "" : "s"}, buckets of ${interval} ms${more ? `; ${more} more not drawn (filter by type or label)` : ""}.`;
    this.root.dataset.ready = "true";
  }

  private draw(lanes: Lane[], interval: number): void {
    const rows = lanes.map((lane) => {
      const row = document.createElement("div");
      row.className = "lane";
      row.dataset.lane = lane.name;
      const name = document.createElement("div");
      name.className = "lane-label";
      name.textContent = lane.name;
      name.title = lane.name;
      const track = document.createElement("div");
      track.className = "track";
      const max = Math.max(1, ...lane.buckets.map((b) => b.count));
      const hue = colour(lane.name);
      for (const b of lane.buckets) {
        const seg = document.createElement("div");
        seg.className = "segment";
        seg.dataset.startMs = String(b.start_ms);
        seg.dataset.endMs = String(b.start_ms + interval - 1);
        seg.dataset.count = String(b.count);
        seg.style.left = `${(100 * b.start_ms) / this.durationMs}%`;
        seg.style.width = `${(100 * interval) / this.durationMs}%`;
        seg.style.background = hue;
        seg.style.opacity = String(0.25 + (0.75 * b.count) / max);
        seg.title = `${lane.name}: ${b.count} at ${(b.start_ms / 1000).toFixed(1)} s`;
        track.append(seg);
      }
      row.append(name, track);
      return row;
    });
    this.root.replaceChildren(...rows, this.cursor);
  }
}

function perLabel(histogram: Bucket[], label: string): { start_ms: number; count: number }[] {
  const out: { start_ms: number; count: number }[] = [];
  for (const b of histogram) {
    const n = b.labels?.[label];
    if (n) out.push({ start_ms: b.start_ms, count: n });
  }
  return out;
}
