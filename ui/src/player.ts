// The video and what is drawn over it: the visible runs' boxes on `#overlay` (listed in
// `#boxes`), and, when a STARTED run is previewed, the same frame with that run's boxes
// on `#preview-canvas` (listed in `#preview-boxes`). Drawing follows the video's frames
// (requestVideoFrameCallback where the browser has it) and every seek.

import * as boxes from "./boxes";
import type { Windows } from "./annotations";

export interface Layer {
  windows: Windows;
}

export class Player {
  readonly video = document.getElementById("player") as HTMLVideoElement;
  private readonly overlay = document.getElementById("overlay") as HTMLCanvasElement;
  private readonly list = document.getElementById("boxes") as HTMLElement;
  private readonly previewCanvas = document.getElementById("preview-canvas") as HTMLCanvasElement;
  private readonly previewList = document.getElementById("preview-boxes") as HTMLElement;
  private readonly clock = document.getElementById("clock") as HTMLElement;
  private main: Windows | null = null;
  private preview: Windows | null = null;
  private scheduled = false;
  /** Called with the time in seconds after each draw (the location hash keeps it). */
  onTime: (seconds: number) => void = () => {};

  constructor() {
    const redraw = () => this.request();
    for (const e of ["seeked", "loadeddata", "pause", "play", "timeupdate", "emptied"]) {
      this.video.addEventListener(e, redraw);
    }
    this.video.addEventListener("loadedmetadata", () => {
      // The stage takes the video's shape, so the overlay and the frame coincide.
      const { videoWidth: w, videoHeight: h } = this.video;
      if (w && h) this.video.parentElement!.style.aspectRatio = `${w} / ${h}`;
      redraw();
    });
    new ResizeObserver(redraw).observe(this.overlay);
    this.followFrames();
  }

  /** The playhead in whole milliseconds (what the boxes are chosen for). */
  nowMs(): number {
    return Math.round(this.video.currentTime * 1000);
  }

  setMain(w: Windows | null): void {
    this.main = w;
    if (w) w.onLoad = () => this.request();
    this.request();
  }

  setPreview(w: Windows | null): void {
    this.preview = w;
    if (w) w.onLoad = () => this.request();
    this.request();
  }

  seek(seconds: number): void {
    this.video.currentTime = Math.max(0, seconds);
    this.request();
  }

  /** Redraws on the next animation frame (many events may ask within one). */
  request(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.draw();
    });
  }

  private followFrames(): void {
    const v = this.video as HTMLVideoElement & {
      requestVideoFrameCallback?: (cb: () => void) => number;
    };
    if (typeof v.requestVideoFrameCallback === "function") {
      const each = () => {
        this.draw();
        v.requestVideoFrameCallback!(each);
      };
      v.requestVideoFrameCallback(each);
    } else {
      const each = () => {
        if (!this.video.paused) this.draw();
        requestAnimationFrame(each);
      };
      requestAnimationFrame(each);
    }
  }

  private draw(): void {
    const t = this.nowMs();
    this.clock.textContent = clockText(t, this.video.duration);
    this.paint(this.overlay, this.list, this.main, t, false);
    if (this.preview) this.paint(this.previewCanvas, this.previewList, this.preview, t, true);
    this.onTime(t / 1000);
  }

  private paint(
    canvas: HTMLCanvasElement,
    ul: HTMLElement,
    windows: Windows | null,
    t: number,
    withFrame: boolean,
  ): void {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.round(canvas.clientWidth * dpr);
    const h = Math.round(canvas.clientHeight * dpr);
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    ctx.clearRect(0, 0, w, h);
    const frame = boxes.fit(w, h, this.video.videoWidth, this.video.videoHeight);
    canvas.dataset.frame = [frame.x, frame.y, frame.w, frame.h].map((n) => n.toFixed(1)).join(",");
    if (withFrame && this.video.readyState >= 2) {
      // The preview shows the frame itself beside the player.
      ctx.drawImage(this.video, frame.x, frame.y, frame.w, frame.h);
    }
    if (!windows) {
      boxes.list(ul, [], t);
      return;
    }
    void windows.ensure(t);
    const shown = boxes.at(windows.all(), t);
    boxes.draw(ctx, frame, shown, dpr);
    boxes.list(ul, shown, t);
  }
}

function clockText(ms: number, duration: number): string {
  const fmt = (s: number) => {
    const m = Math.floor(s / 60);
    return `${m}:${(s - m * 60).toFixed(3).padStart(6, "0")}`;
  };
  return Number.isFinite(duration) ? `${fmt(ms / 1000)} / ${fmt(duration)}` : fmt(ms / 1000);
}
