// The viewer end to end: a server with the text encoder, the shared slideshow ingested
// through the CLI (cup 8-12 s, motorcycle 12-16 s, person 16-20 s), and the page driven in
// headless Chromium. Every expectation about what the page shows comes from the API.
// The tests run in order: the last one replaces the ingested run with a second run.

import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  MEDIA_ID,
  REPO,
  Server,
  expectedBoxes,
  idsAndLabels,
  ingestSlideshow,
  lanes,
  launchBrowser,
  openSlideshow,
  screenshot,
  seek,
  waitFor,
  waitForBoxes,
  withPage,
} from './harness.mjs';

let server;
let api;
let browser;
let first; // the ingested run (operation)

before(
  async () => {
    server = await Server.start({ name: 'viewer', textEncoder: true });
    api = server.api;
    const report = await ingestSlideshow(server);
    first = await api.get(`/v1/operations/${report.operation_id}`);
    browser = await launchBrowser();
  },
  { timeout: 300_000 },
);

after(async () => {
  try {
    await browser?.close();
  } finally {
    await server?.stop();
  }
});

/** A test with its own page; a failure also shows the tail of the server's log. */
function scenario(name, fn) {
  test(name, { timeout: 120_000 }, async () => {
    try {
      await withPage(browser, name.split(':')[0], fn);
      server.assertAlive();
    } catch (e) {
      e.message += `\n${server.logTail(3000)}`;
      throw e;
    }
  });
}

/** Edge and background pixels of `canvas#overlay` for boxes (normalised to the frame). */
function readOverlay(page, boxes) {
  return page.evaluate((boxes) => {
    const c = document.querySelector('canvas#overlay');
    const v = document.querySelector('video#player');
    const ctx = c.getContext('2d');
    const W = c.width;
    const H = c.height;
    // The frame inside the canvas, letterboxed to the video's shape.
    const s = Math.min(W / v.videoWidth, H / v.videoHeight);
    const fw = v.videoWidth * s;
    const fh = v.videoHeight * s;
    const fx = (W - fw) / 2;
    const fy = (H - fh) / 2;
    const maxAlpha = (x, y, r) => {
      const d = ctx.getImageData(Math.round(x) - r, Math.round(y) - r, 2 * r + 1, 2 * r + 1).data;
      let m = 0;
      for (let i = 3; i < d.length; i += 4) m = Math.max(m, d[i]);
      return m;
    };
    const rects = boxes.map((b) => ({ x: fx + b.x * fw, y: fy + b.y * fh, w: b.w * fw, h: b.h * fh }));
    // The middle of each box's left edge (its label sits at the top).
    const edges = rects.map((r) => ({ at: [r.x, r.y + r.h / 2], alpha: maxAlpha(r.x, r.y + r.h / 2, 2) }));
    // A point of the frame at least 60 px from every box and its label (drawn above it).
    const margin = 60;
    const far = (x, y) =>
      rects.every((r) => {
        const dx = Math.max(r.x - x, 0, x - (r.x + Math.max(r.w, 200)));
        const dy = Math.max(r.y - 24 - y, 0, y - (r.y + r.h));
        return Math.hypot(dx, dy) >= margin;
      });
    let background = null;
    for (let gy = 0.05; gy < 1 && !background; gy += 0.05) {
      for (let gx = 0.02; gx < 1 && !background; gx += 0.02) {
        const x = fx + gx * fw;
        const y = fy + gy * fh;
        if (far(x, y)) background = { at: [x, y], alpha: maxAlpha(x, y, 3) };
      }
    }
    return { size: [W, H], video: [v.videoWidth, v.videoHeight], edges, background };
  }, boxes);
}

/** A 32x18 grey thumbnail of the frame the player shows (to tell stills apart). */
function frameThumb(page) {
  return page.evaluate(() => {
    const c = document.createElement('canvas');
    c.width = 32;
    c.height = 18;
    const ctx = c.getContext('2d');
    ctx.drawImage(document.querySelector('video#player'), 0, 0, 32, 18);
    const d = ctx.getImageData(0, 0, 32, 18).data;
    const grey = [];
    for (let i = 0; i < d.length; i += 4) grey.push((d[i] + d[i + 1] + d[i + 2]) / 3);
    return grey;
  });
}

const meanDiff = (a, b) => a.reduce((s, x, i) => s + Math.abs(x - b[i]), 0) / a.length;

/** Checks `#boxes` at `seconds` against the API, and the overlay against the boxes. */
async function checkBoxesAt(page, seconds) {
  const t = await seek(page, seconds);
  const want = await expectedBoxes(api, t);
  const got = await waitForBoxes(page, 'ul#boxes', want, `the visible boxes at ${t} ms`);
  for (const [g, w] of got.map((g) => [g, want.find((a) => a.id === g.id)])) {
    assert.equal(g.label, w.label, `label of ${g.id}`);
    assert.ok(Math.abs(g.confidence - w.confidence) < 1e-6, `confidence of ${g.id}: ${g.confidence} vs ${w.confidence}`);
    for (const k of ['x', 'y', 'w', 'h']) {
      assert.ok(Math.abs(g[k] - w.bbox[k]) < 1e-6, `bbox.${k} of ${g.id}: ${g[k]} vs ${w.bbox[k]}`);
    }
  }
  const withBox = got.filter((b) => Number.isFinite(b.x));
  assert.ok(withBox.length > 0, `no box to draw at ${t} ms`);
  const px = await readOverlay(page, withBox);
  for (const e of px.edges) {
    assert.ok(e.alpha > 0, `nothing drawn on a box's edge at ${e.at} of #overlay: ${JSON.stringify(px)}`);
  }
  assert.ok(px.background, `no pixel of the frame is far from every box: ${JSON.stringify(px)}`);
  assert.equal(px.background.alpha, 0, `#overlay is not transparent away from the boxes: ${JSON.stringify(px)}`);
  return got.map((b) => b.label);
}

scenario('a-pick: the media list offers the slideshow and picking it loads its video', async (page) => {
  const listed = await api.get('/v1/media?limit=50');
  assert.ok(
    listed.media.some((m) => m.media_id === MEDIA_ID),
    `GET /v1/media does not list ${MEDIA_ID}: ${JSON.stringify(listed)}`,
  );
  // The player seeks by range requests.
  const file = `/v1/media/${encodeURIComponent(MEDIA_ID)}/file`;
  const part = await api.request('GET', file, undefined, { headers: { range: 'bytes=0-99' } });
  assert.equal(part.status, 206, `a range of the media file: ${part.status}`);
  assert.match(part.headers.get('content-range') ?? '', /^bytes 0-99\/\d+$/);
  assert.equal(part.headers.get('content-length'), '100');
  await openSlideshow(page, server.url);
  const v = await page.evaluate(() => {
    const v = document.querySelector('video#player');
    return { duration: v.duration, readyState: v.readyState, src: v.currentSrc, w: v.videoWidth, h: v.videoHeight };
  });
  assert.ok(Math.abs(v.duration - 24) < 0.5, `duration ${v.duration} s, not about 24 s: ${JSON.stringify(v)}`);
  assert.deepEqual([v.w, v.h], [1280, 720], JSON.stringify(v));
  assert.equal((await page.textContent('#current-media')).trim(), MEDIA_ID);
  const hash = new URLSearchParams((await page.evaluate(() => location.hash)).slice(1));
  assert.equal(hash.get('media'), MEDIA_ID, 'the location hash names the media');
});

scenario('b-boxes: the boxes of the frame are the API annotations at that time, drawn on the overlay', async (page) => {
  await openSlideshow(page, server.url);
  const at13 = await checkBoxesAt(page, 13.5);
  assert.ok(at13.includes('motorcycle'), `no motorcycle at 13.5 s: ${at13}`);
  const frame13 = await frameThumb(page);
  const at9 = await checkBoxesAt(page, 9.5);
  assert.ok(at9.includes('cup'), `no cup at 9.5 s: ${at9}`);
  assert.ok(!at9.includes('motorcycle'), `a motorcycle at 9.5 s: ${at9}`);
  // The player really moved: another still is on screen (seeking needs range requests).
  const frame9 = await frameThumb(page);
  assert.ok(meanDiff(frame13, frame9) > 10, `the frame at 9.5 s looks like the one at 13.5 s (${meanDiff(frame13, frame9)})`);
  // The README's picture: back at 13.5 s, with the timeline drawn.
  await checkBoxesAt(page, 13.5);
  await lanes(page);
  const shot = await screenshot(page, 'viewer.png');
  if (process.env.ANNOSTORE_UI_README_SHOT === '1') {
    // The README's picture: a JPEG, a fifth of the PNG artefact's bytes.
    fs.mkdirSync(path.join(REPO, 'docs'), { recursive: true });
    await page.screenshot({ path: path.join(REPO, 'docs', 'viewer.jpg'), type: 'jpeg', quality: 80 });
  }
});

scenario('b2-keys: "." and "," step one frame forward and back, "k" plays', async (page) => {
  await openSlideshow(page, server.url);
  await seek(page, 13.5);
  await page.click('#current-media'); // focus leaves the inputs: the keys go to the page
  const time = () => page.evaluate(() => document.querySelector('video#player').currentTime);
  await page.keyboard.press('.');
  await page.keyboard.press('.');
  const ahead = await time();
  assert.ok(Math.abs(ahead - (13.5 + 2 / 30)) < 0.005, `two frames on from 13.5 s: ${ahead}`);
  await page.keyboard.press(',');
  const back = await time();
  assert.ok(Math.abs(back - (13.5 + 1 / 30)) < 0.005, `one frame back: ${back}`);
  await page.keyboard.press('k');
  await waitFor(page, 'the video plays after "k"', () => !document.querySelector('video#player').paused);
  await page.keyboard.press('k');
  await waitFor(page, 'the video pauses after a second "k"', () => document.querySelector('video#player').paused);
});

scenario('c-timeline: one lane per label where the histogram says, and a segment seeks', async (page) => {
  await openSlideshow(page, server.url);
  const got = await lanes(page);
  const agg = await api.aggregate({ media_id: MEDIA_ID }, { labels: 1000 });
  assert.deepEqual(
    got.map((l) => l.lane).sort(),
    agg.labels.map((l) => l.label).sort(),
    'the lanes are not the labels of the media',
  );
  // Every segment is one bucket of the page's width; the API's histogram at that width
  // has exactly these buckets, with these counts, for each label.
  const widths = new Set(got.flatMap((l) => l.segments.map((s) => s.end - s.start + 1)));
  assert.equal(widths.size, 1, `segments of several widths: ${[...widths]}`);
  const [interval] = widths;
  const hist = (
    await api.aggregate({ media_id: MEDIA_ID }, { histogram: { interval_ms: interval, by_label: true } })
  ).histogram;
  for (const l of got) {
    const want = hist
      .filter((b) => b.labels?.[l.lane])
      .map((b) => ({ start: b.start_ms, end: b.start_ms + interval - 1, count: b.labels[l.lane] }));
    assert.deepEqual(l.segments, want, `lane ${l.lane}`);
  }
  // Clicking the motorcycle lane's first segment seeks into it.
  const seg = page.locator('#timeline .lane[data-lane="motorcycle"] .segment').first();
  const start = Number(await seg.getAttribute('data-start-ms'));
  const end = Number(await seg.getAttribute('data-end-ms'));
  assert.ok(start >= 11_000 && start < 16_000, `motorcycle's first segment at ${start} ms`);
  await seg.click();
  await waitFor(
    page,
    `the player is inside the segment [${start}, ${end}] ms`,
    ([start, end]) => {
      const ms = document.querySelector('video#player').currentTime * 1000;
      return ms >= start - 1 && ms <= end + 1;
    },
    [start, end],
  );
});

/** Waits until the timeline is ready with exactly the lanes `want` (in any order). */
async function waitForLanes(page, want, what) {
  try {
    await page.waitForFunction(
      (want) => {
        const tl = document.querySelector('#timeline');
        const got = [...tl.querySelectorAll('.lane[data-lane]')].map((l) => l.dataset.lane).sort();
        return tl.dataset.ready === 'true' && got.length === want.length && got.every((l, i) => l === want[i]);
      },
      [...want].sort(),
      { timeout: 20_000, polling: 100 },
    );
  } catch {
    const got = (await lanes(page)).map((l) => l.lane).sort();
    assert.deepEqual(got, [...want].sort(), `the timeline did not come to show ${what}`);
  }
}

/** Sets the minimum confidence slider as a person would (input, then change). */
function setMinConfidence(page, value) {
  return page.evaluate((value) => {
    const c = document.querySelector('#filter-confidence');
    c.value = String(value);
    c.dispatchEvent(new Event('input', { bubbles: true }));
    c.dispatchEvent(new Event('change', { bubbles: true }));
  }, value);
}

scenario('c2-filters: label and confidence filters narrow boxes and lanes as the API does; lanes per type', async (page) => {
  await openSlideshow(page, server.url);
  const t = await seek(page, 9.5);
  const all = await expectedBoxes(api, t);

  await page.locator('#filter-label option[value="cup"]').waitFor({ state: 'attached' });
  await page.selectOption('#filter-label', 'cup');
  const cups = await expectedBoxes(api, t, { label: 'cup' });
  assert.ok(cups.length > 0 && cups.length < all.length, `the label filter changes nothing at ${t} ms`);
  await waitForBoxes(page, 'ul#boxes', cups, `only cups at ${t} ms`);
  await waitForLanes(page, ['cup'], 'the cup lane alone');

  await page.selectOption('#filter-label', '');
  const min = 0.4;
  const confident = await expectedBoxes(api, t, { min_confidence: min });
  assert.ok(confident.length > 0 && confident.length < all.length, `confidence ${min} changes nothing at ${t} ms`);
  await setMinConfidence(page, min);
  await waitForBoxes(page, 'ul#boxes', confident, `the boxes of confidence >= ${min} at ${t} ms`);
  const labels = (await api.aggregate({ media_id: MEDIA_ID, min_confidence: min }, { labels: 1000 })).labels;
  await waitForLanes(page, labels.map((l) => l.label), `the labels of confidence >= ${min}`);

  await setMinConfidence(page, 0);
  await waitForBoxes(page, 'ul#boxes', all, `every box at ${t} ms again`);
  await page.selectOption('#lane-mode', 'type');
  const types = (await api.aggregate({ media_id: MEDIA_ID }, { types: true })).types;
  await waitFor(
    page,
    `one lane per type version (${types.map((x) => x.annotation_type)})`,
    (types) => {
      const tl = document.querySelector('#timeline');
      const got = [...tl.querySelectorAll('.lane[data-lane]')].map((l) => l.dataset.lane);
      return tl.dataset.ready === 'true' && got.length === types.length && types.every((ty, i) => got[i].includes(ty));
    },
    types.map((x) => x.annotation_type),
  );
});

/** Submits a search from the page; waits until its hits are `want` (the API's page). */
async function searchFromPage(page, mode, query, want) {
  await page.selectOption('#search-mode', mode);
  await page.fill('#search-input', query);
  await page.click('#search-submit');
  const expected = want.map((a) => ({ start: a.start_ms, label: a.label }));
  const read = () =>
    page.$$eval('#search-results button.hit', (hits) =>
      hits.map((h) => ({ start: Number(h.dataset.startMs), label: h.dataset.label })),
    );
  try {
    await page.waitForFunction(
      (expected) => {
        const hits = [...document.querySelectorAll('#search-results button.hit')];
        return (
          hits.length === expected.length &&
          hits.every((h, i) => Number(h.dataset.startMs) === expected[i].start && h.dataset.label === expected[i].label)
        );
      },
      expected,
      { timeout: 20_000, polling: 100 },
    );
  } catch {
    const error = await page.textContent('#search-error');
    assert.deepEqual(await read(), expected, `${mode} search "${query}": the hits are not the API's (#search-error: ${error})`);
  }
  return read();
}

scenario('d-search: text and meaning search list the API hits, and a hit seeks', async (page) => {
  await openSlideshow(page, server.url);
  const text = await api.post('/v1/annotations/search', {
    media_id: MEDIA_ID,
    text: { query: 'motorcycle' },
    limit: 50,
  });
  assert.ok(text.annotations.length > 0, 'the API finds no motorcycle');
  const hits = await searchFromPage(page, 'text', 'motorcycle', text.annotations);
  assert.ok(hits.every((h) => h.label === 'motorcycle'), JSON.stringify(hits));
  // The last hit, so that the seek moves the player (it starts at 0).
  const last = hits.length - 1;
  await page.locator('#search-results button.hit').nth(last).click();
  await waitFor(
    page,
    `the player is at the hit's ${hits[last].start} ms`,
    (ms) => Math.abs(document.querySelector('video#player').currentTime * 1000 - ms) <= 1,
    hits[last].start,
  );

  const query = 'a photo of a motorbike';
  const meaning = await api.post('/v1/annotations/search', {
    media_id: MEDIA_ID,
    knn: { text: query, k: 20 },
    limit: 20,
  });
  const found = await searchFromPage(page, 'meaning', query, meaning.annotations);
  assert.ok(
    found.slice(0, 3).some((h) => h.start >= 12_000 && h.start < 16_000),
    `no hit in the motorcycle's still (12-16 s) among the first three: ${JSON.stringify(found)}`,
  );
});

scenario('e-runs: a STARTED run previews beside the active one, and replaces it once finished', async (page) => {
  await openSlideshow(page, server.url);
  const row = (id) => `#runs tr.run[data-operation-id="${id}"]`;
  await page.locator(`${row(first.id)}[data-status="FINISHED"][data-active="true"]`).waitFor({ state: 'attached' });
  const t = await seek(page, 13.5);
  const firstBoxes = await expectedBoxes(api, t);
  await waitForBoxes(page, 'ul#boxes', firstBoxes, 'the first run at 13.5 s');

  // A second run of the same key, with boxes over the whole slideshow.
  const second = await api.post(
    '/v1/operations',
    {
      annotation_type: first.annotation_type,
      annotation_type_version: first.annotation_type_version,
      pivot_id: first.pivot_id,
      metadata: { media_id: MEDIA_ID },
    },
    201,
  );
  const annotations = [];
  for (let i = 0; i < 6; i++) {
    for (const x of [0.05, 0.55]) {
      annotations.push({
        media_id: MEDIA_ID,
        start_ms: i * 4000,
        end_ms: (i + 1) * 4000,
        label: 'second-run-box',
        confidence: 0.9,
        bbox: { x, y: 0.1 + 0.05 * i, w: 0.35, h: 0.4 },
        data: { class_id: 0 },
      });
    }
  }
  const up = await api.post(`/v1/operations/${second.id}/annotations`, { annotations });
  assert.equal(up.upserted, annotations.length, JSON.stringify(up));

  // The page finds it by polling, STARTED, and previews it on request.
  const secondRow = page.locator(`${row(second.id)}[data-status="STARTED"]`);
  await secondRow.waitFor({ state: 'attached' });
  assert.equal(await page.getAttribute(row(second.id), 'data-active'), 'false');
  await secondRow.locator('button.preview-toggle').click();
  await page.locator('#preview').waitFor({ state: 'visible' });
  const previewWant = await expectedBoxes(api, t, { operation_id: second.id });
  assert.equal(previewWant.length, 2, `the API's preview at ${t} ms: ${JSON.stringify(previewWant)}`);
  await waitFor(
    page,
    `#preview-boxes is at ${t} ms`,
    (t) => Number(document.querySelector('ul#preview-boxes')?.dataset.timeMs) === t,
    t,
  );
  await waitForBoxes(page, 'ul#preview-boxes', previewWant, "the second run's boxes (preview)");
  const still = await waitForBoxes(page, 'ul#boxes', firstBoxes, 'the first run while the second is STARTED');
  assert.ok(!still.some((b) => b.label === 'second-run-box'), 'the STARTED run leaked into #boxes');
  await screenshot(page, 'viewer-preview.png');

  // Finished: without a reload (the mark set here would be gone), the page shows the
  // second run instead of the first.
  await page.evaluate(() => {
    window.e2eNotReloaded = true;
  });
  await api.request('POST', `/v1/operations/${second.id}/finish`, undefined, { expect: 200 });
  await page
    .locator(`${row(second.id)}[data-status="FINISHED"][data-active="true"]`)
    .waitFor({ state: 'attached' });
  await page.locator(`${row(first.id)}[data-active="false"]`).waitFor({ state: 'attached' });
  const now = await expectedBoxes(api, t);
  assert.deepEqual(
    idsAndLabels(now),
    idsAndLabels(previewWant),
    'the API does not show the second run after finishing it',
  );
  const shown = await waitForBoxes(page, 'ul#boxes', now, 'the second run once finished');
  assert.ok(shown.every((b) => b.label === 'second-run-box'), JSON.stringify(shown));
  const agg = await api.aggregate({ media_id: MEDIA_ID }, { labels: 1000 });
  assert.deepEqual(agg.labels.map((l) => l.label), ['second-run-box']);
  await waitFor(
    page,
    'the timeline has only the second run\'s lane',
    () => {
      const tl = document.querySelector('#timeline');
      const lanes = [...tl.querySelectorAll('.lane[data-lane]')].map((l) => l.dataset.lane);
      return tl.dataset.ready === 'true' && lanes.length === 1 && lanes[0] === 'second-run-box';
    },
  );
  assert.equal(await page.evaluate(() => window.e2eNotReloaded), true, 'the page was reloaded');
});
