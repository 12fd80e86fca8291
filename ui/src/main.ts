// The viewer: wires the picker, the player, the timeline, search and the runs panel
// around one media item, keeps the state in the location hash (#media=<id>&t=<s>), and
// polls the media's runs so that a run finishing elsewhere replaces the old one on screen.

import "./style.css";
import { ApiError, getJson, postJson, segment } from "./api";
import { askForKey, currentKey, forgetKey, restoreKey } from "./auth";
import { filterOf, Windows } from "./annotations";
import { Picker } from "./media";
import { Player } from "./player";
import { Runs } from "./runs";
import { Search } from "./search";
import { Timeline, type LaneMode } from "./timeline";
import type { Aggregates, Filters, Operation, UiConfig } from "./types";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const status = $("status");
const currentMedia = $("current-media");
const typeSelect = $<HTMLSelectElement>("filter-type");
const labelSelect = $<HTMLSelectElement>("filter-label");
const confidence = $<HTMLInputElement>("filter-confidence");
const confidenceValue = $("filter-confidence-value");
const laneMode = $<HTMLSelectElement>("lane-mode");
const preview = $("preview");
const previewTitle = $("preview-title");
const previewError = $("preview-error");
const noVideo = $("no-video");

const picker = new Picker();
const player = new Player();
const timeline = new Timeline();
const search = new Search();
const runs = new Runs();

let config: UiConfig | null = null;
let media: string | null = null;
let previewing: Operation | null = null;

function say(message: string, kind: "error" | "info" = "info"): void {
  status.textContent = message;
  status.dataset.kind = kind;
}

function fail(e: unknown): void {
  if (e instanceof ApiError) {
    const why = e.status === 403 ? " (this key's role may not do that)" : "";
    say(`${e.detail}${why}${e.fields.length ? `: ${e.fields.join("; ")}` : ""}`, "error");
  } else say(String(e), "error");
}

function filters(): Filters {
  return { type: typeSelect.value, label: labelSelect.value, minConfidence: Number(confidence.value) };
}

function durationMs(): number {
  const d = player.video.duration;
  if (Number.isFinite(d) && d > 0) return Math.round(d * 1000);
  return runs.durationMs() || 600_000;
}

function mediaUrl(id: string): string | null {
  if (config?.media_url_template) return config.media_url_template.replaceAll("{media_id}", encodeURIComponent(id));
  if (config?.media_files) return `/v1/media/${segment(id)}/file`;
  return null;
}

/** Boxes and lanes for the visible runs under the filters. */
function reloadVisible(): void {
  if (!media) return;
  const filter = filterOf(media, filters());
  const w = new Windows(filter);
  w.onError = fail;
  player.setMain(w);
  search.filter = filter;
  timeline.load(filter, laneMode.value as LaneMode, durationMs()).catch(fail);
}

function reloadPreview(): void {
  document.body.classList.toggle("previewing", previewing !== null);
  if (!media || !previewing) {
    preview.hidden = true;
    player.setPreview(null);
    return;
  }
  const f = filters();
  // The type filter would hide a run of another type: the preview keeps label and confidence.
  const w = new Windows({ ...filterOf(media, { ...f, type: "" }), operation_id: previewing.id });
  w.onError = (e) => {
    previewError.textContent = e instanceof ApiError ? e.detail : String(e);
  };
  previewError.textContent = "";
  previewTitle.textContent = `Run ${previewing.operation_number} of ${previewing.annotation_type} v${previewing.annotation_type_version} (${previewing.status}, ${previewing.annotation_count} annotations)`;
  preview.hidden = false;
  player.setPreview(w);
}

/** The labels and types of the media's visible annotations, as filter choices. */
async function loadChoices(): Promise<void> {
  if (!media) return;
  const agg = await postJson<Aggregates>("/v1/annotations/aggregate", {
    media_id: media,
    aggregations: { labels: 1000, types: true },
  });
  fill(typeSelect, "every type", (agg.types ?? []).map((t) => [`${t.annotation_type}@${t.annotation_type_version}`, `${t.annotation_type} v${t.annotation_type_version} (${t.count})`]));
  fill(labelSelect, "every label", (agg.labels ?? []).map((l) => [l.label, `${l.label} (${l.count})`]));
}

function fill(select: HTMLSelectElement, all: string, options: [string, string][]): void {
  const keep = select.value;
  const opts = [new Option(all, ""), ...options.map(([v, t]) => new Option(t, v))];
  // A chosen value no longer offered stays chosen (and shown) until changed.
  if (keep && !options.some(([v]) => v === keep)) opts.push(new Option(`${keep} (none now)`, keep));
  select.replaceChildren(...opts);
  select.value = keep;
}

function writeHash(seconds?: number): void {
  if (!media) return;
  const t = seconds ?? player.video.currentTime;
  const hash = `#media=${encodeURIComponent(media)}${t > 0 ? `&t=${t.toFixed(2)}` : ""}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
}

async function open(id: string, t = 0): Promise<void> {
  media = id;
  previewing = null;
  runs.clear();
  search.clear();
  currentMedia.textContent = id;
  picker.mark(id);
  document.title = `${id} · annostore`;
  typeSelect.value = "";
  labelSelect.value = "";
  timeline.clear("Loading the timeline...");
  say("");
  const url = mediaUrl(id);
  noVideo.hidden = url !== null;
  if (url) {
    player.video.src = url;
    player.video.load();
  } else {
    player.video.removeAttribute("src");
    player.video.load();
  }
  if (t > 0) player.seek(t);
  writeHash(t);
  reloadPreview();
  try {
    await runs.refresh(id);
  } catch (e) {
    fail(e);
  }
  reloadVisible();
  loadChoices().catch(fail);
  document.body.dataset.mediaLoaded = id;
}

async function poll(): Promise<void> {
  if (!media || document.hidden) return;
  const id = media;
  const change = await runs.refresh(id);
  if (id !== media) return;
  if (change.active) {
    say("A run finished or was replaced: showing the visible runs now.");
    reloadVisible();
    loadChoices().catch(fail);
    void picker.refresh();
  }
  if (change.any && !change.active) void picker.refresh();
  if (change.any && previewing) {
    const now = runs.find(previewing.id);
    if (now) {
      previewing = now;
      reloadPreview();
    }
  }
}

function readHash(): { media: string | null; t: number } {
  const p = new URLSearchParams(location.hash.slice(1));
  return { media: p.get("media"), t: Number(p.get("t") ?? 0) || 0 };
}

async function main(): Promise<void> {
  restoreKey();
  try {
    const res = await fetch("/ui/config.json");
    if (!res.ok) throw new Error(`the viewer's config answered ${res.status}`);
    config = (await res.json()) as UiConfig;
  } catch (e) {
    say(`Could not read the viewer's config: ${e}`, "error");
    return;
  }
  $("version").textContent = `v${config.version}`;
  if (config.auth === "keys" && !currentKey()) await askForKey("This server needs an API key.");
  // A stored key from an earlier visit may have been revoked: a request proves it.
  await getJson("/v1/types").catch(fail);
  await picker.refresh();
  const { media: m, t } = readHash();
  if (m) await open(m, t);
  const every = Math.max(1, config.poll_seconds) * 1000;
  const loop = async () => {
    await poll().catch(fail);
    window.setTimeout(loop, every);
  };
  window.setTimeout(loop, every);
}

picker.onPick = (id) => void open(id);
picker.onError = fail;
timeline.onSeek = (s) => player.seek(s);
search.onSeek = (s) => player.seek(s);
player.onTime = (s) => timeline.setTime(s);
runs.onPreview = (op) => {
  previewing = op;
  reloadPreview();
};
player.video.addEventListener("loadedmetadata", () => {
  if (media) timeline.load(filterOf(media, filters()), laneMode.value as LaneMode, durationMs()).catch(fail);
});
player.video.addEventListener("error", () => {
  const err = player.video.error;
  if (player.video.getAttribute("src"))
    say(`The media file could not be played (${err?.message || `error ${err?.code}`}). Is it under [ui] media_root?`, "error");
});
for (const e of ["seeked", "pause"]) player.video.addEventListener(e, () => writeHash());
for (const el of [typeSelect, labelSelect, laneMode]) el.addEventListener("change", reloadVisible);
confidence.addEventListener("input", () => {
  confidenceValue.textContent = Number(confidence.value).toFixed(2);
});
confidence.addEventListener("change", () => {
  reloadVisible();
  reloadPreview();
});
window.addEventListener("hashchange", () => {
  const { media: m, t } = readHash();
  if (m && m !== media) void open(m, t);
});
// Stepping through frames, as in a video editor: "," and "." a frame back and forward
// (at 30 fps: the page does not know the stream's rate), "k" to play or pause.
document.addEventListener("keydown", (e) => {
  const t = e.target as HTMLElement;
  if (!media || e.ctrlKey || e.metaKey || e.altKey || t.closest("input, select, textarea, dialog")) return;
  const v = player.video;
  if (e.key === "," || e.key === ".") {
    v.pause();
    player.seek(v.currentTime + (e.key === "." ? 1 : -1) / 30);
  } else if (e.key === "k") {
    // A pause before playback began rejects play() with AbortError: nothing went wrong.
    if (v.paused) v.play().catch((err) => err?.name === "AbortError" || fail(err));
    else v.pause();
  } else return;
  e.preventDefault();
});
$("forget-key").addEventListener("click", () => {
  forgetKey();
  say("Key forgotten: the next request asks for one.");
});

void main();
