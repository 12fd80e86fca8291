// Which annotations a frame shows, and how their boxes are drawn on a canvas. Pure
// functions of the annotations and the time, so the player and the preview share them.

import type { Annotation } from "./types";

/**
 * The annotations shown at `t` ms: those with `start_ms <= t < end_ms` (an annotation
 * of one instant, `start_ms == end_ms`, at that instant). The end is exclusive so that
 * one sample's boxes give way to the next sample's instead of doubling at the seam.
 */
export function at(annotations: Iterable<Annotation>, t: number): Annotation[] {
  const shown: Annotation[] = [];
  for (const a of annotations) {
    if (a.start_ms === a.end_ms ? t === a.start_ms : a.start_ms <= t && t < a.end_ms) shown.push(a);
  }
  shown.sort((a, b) => (b.confidence ?? 0) - (a.confidence ?? 0) || a.id.localeCompare(b.id));
  return shown;
}

/** A stable colour per label, so a label keeps its colour across frames and lanes. */
export function colour(label: string | null | undefined): string {
  let h = 0;
  for (const c of label ?? "") h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return `hsl(${h % 360} 85% 55%)`;
}

/** Where the frame lies on the canvas, in canvas pixels (letterboxed to keep its shape). */
export interface Frame {
  x: number;
  y: number;
  w: number;
  h: number;
}

export function fit(canvasW: number, canvasH: number, videoW: number, videoH: number): Frame {
  if (!videoW || !videoH) return { x: 0, y: 0, w: canvasW, h: canvasH };
  const scale = Math.min(canvasW / videoW, canvasH / videoH);
  const w = videoW * scale;
  const h = videoH * scale;
  return { x: (canvasW - w) / 2, y: (canvasH - h) / 2, w, h };
}

/** Draws each box (normalised to the frame) with its label and confidence. */
export function draw(ctx: CanvasRenderingContext2D, frame: Frame, shown: Annotation[], dpr: number): void {
  const line = Math.max(2, Math.round(2 * dpr));
  ctx.lineWidth = line;
  ctx.font = `${Math.round(12 * dpr)}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  for (const a of shown) {
    if (!a.bbox) continue;
    const x = frame.x + a.bbox.x * frame.w;
    const y = frame.y + a.bbox.y * frame.h;
    const w = a.bbox.w * frame.w;
    const h = a.bbox.h * frame.h;
    const c = colour(a.label);
    ctx.strokeStyle = c;
    ctx.strokeRect(x, y, w, h);
    const text = `${a.label ?? "?"}${a.confidence != null ? ` ${a.confidence.toFixed(2)}` : ""}`;
    const tw = ctx.measureText(text).width + 6 * dpr;
    const th = 16 * dpr;
    const ty = y - th >= frame.y ? y - th : y;
    ctx.fillStyle = c;
    ctx.fillRect(x - line / 2, ty, tw, th);
    ctx.fillStyle = "#000";
    ctx.fillText(text, x + 3 * dpr - line / 2, ty + 2 * dpr);
  }
}

/** Rewrites a list of boxes (`#boxes`, `#preview-boxes`) when what it shows changed. */
export function list(ul: HTMLElement, shown: Annotation[], t: number): void {
  ul.dataset.timeMs = String(t);
  const ids = shown.map((a) => a.id).join(",");
  if (ul.dataset.ids === ids) return;
  ul.dataset.ids = ids;
  ul.replaceChildren(
    ...shown.map((a) => {
      const li = document.createElement("li");
      li.className = a.bbox ? "box" : "box no-bbox";
      li.dataset.annotationId = a.id;
      li.dataset.operationId = a.operation_id;
      li.dataset.label = a.label ?? "";
      if (a.confidence != null) li.dataset.confidence = String(a.confidence);
      if (a.bbox) {
        li.dataset.x = String(a.bbox.x);
        li.dataset.y = String(a.bbox.y);
        li.dataset.w = String(a.bbox.w);
        li.dataset.h = String(a.bbox.h);
      }
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colour(a.label);
      const name = document.createElement("span");
      name.textContent = a.label ?? "(no label)";
      const conf = document.createElement("span");
      conf.className = "muted";
      conf.textContent = a.confidence != null ? a.confidence.toFixed(2) : "";
      const type = document.createElement("span");
      type.className = "muted small";
      type.textContent = `${a.annotation_type} v${a.annotation_type_version}${a.bbox ? "" : " (no box)"}`;
      li.append(swatch, name, conf, type);
      return li;
    }),
  );
}
