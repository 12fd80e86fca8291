// Shared pieces of the viewer's end-to-end tests: the annostore server (a temp data dir
// and config, its stderr logged to the artefact dir), a small API client, the slideshow's
// ingest through the CLI, headless Chromium, and waits on the page's DOM.
//
// Run by scripts/test-ui, which sets ANNOSTORE_BIN, ANNOSTORE_SHARED and
// ANNOSTORE_UI_ARTEFACTS. Nothing here skips: a missing binary, model or browser fails.

import { spawn, execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '../..');
// Where cargo builds, as scripts/target-dir resolves it (only asked when a path below needs it).
const target = () => execFileSync(path.join(REPO, 'scripts/target-dir')).toString().trim();

export const BIN = process.env.ANNOSTORE_BIN || path.join(target(), 'debug', 'annostore');
export const SHARED = process.env.ANNOSTORE_SHARED || findShared();
export const ARTEFACTS = process.env.ANNOSTORE_UI_ARTEFACTS || path.join(target(), 'ui-e2e');
export const MEDIA_ID = 'slideshow_720p.mp4';
export const CHROMIUM = '/usr/bin/chromium';
// Headless, and nothing that reaches for the network (this machine's is closed).
// Playwright adds a fresh temporary --user-data-dir of its own to every launch (and
// refuses one in args), so each run starts from an empty profile.
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];
// Longest wait for the page to reach a state (polls, media loading, searches).
export const WAIT_MS = 20_000;

fs.mkdirSync(ARTEFACTS, { recursive: true });

/** A `shared/` beside the repository or above it (as ingest's testkit), else /work/shared. */
function findShared() {
  for (let dir = REPO; ; dir = path.dirname(dir)) {
    const s = path.join(dir, 'shared');
    if (fs.existsSync(path.join(s, 'models', 'centernet.onnx'))) return s;
    if (path.dirname(dir) === dir) return '/work/shared';
  }
}

/** `rel` inside the shared folder; fails when it is missing. */
export function shared(rel) {
  const p = path.join(SHARED, rel);
  assert.ok(
    fs.existsSync(p),
    `${p} is missing: the e2e tests need the shared media and models (set ANNOSTORE_SHARED)`,
  );
  return p;
}

/**
 * The binary's environment: ours minus the ANNOSTORE_* variables (read as configuration),
 * but for ANNOSTORE_UI_DIST (serve a page built into ui/dist from disk, to test a page
 * without rebuilding the binary) and ANNOSTORE_LOG.
 */
const PASSED = new Set(['ANNOSTORE_UI_DIST', 'ANNOSTORE_LOG']);
function cleanEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('ANNOSTORE_') || PASSED.has(k)) env[k] = v;
  }
  return env;
}

/** The start and the end of a long text (an error's cause comes before its backtrace). */
function tail(text, n = 4000) {
  if (text.length <= n) return text;
  const head = Math.floor(n / 3);
  return `${text.slice(0, head)}\n[...]\n${text.slice(text.length - (n - head))}`;
}

/** Runs the annostore CLI; resolves with {code, stdout, stderr}. */
export function cli(args, { cwd, timeoutMs = 300_000 } = {}) {
  assert.ok(fs.existsSync(BIN), `${BIN} is missing: cargo build --workspace --all-targets`);
  return new Promise((resolve, reject) => {
    execFile(
      BIN,
      args,
      { cwd, env: cleanEnv(), timeout: timeoutMs, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') {
          reject(new Error(`annostore ${args.join(' ')}: ${err.message}\n${tail(stderr)}`));
        } else {
          resolve({ code: err ? err.code : 0, stdout, stderr });
        }
      },
    );
  });
}

/** TOML for a string (a basic string, escaped as JSON is). */
const tomlString = (s) => JSON.stringify(s);

/**
 * A running `annostore serve` on a temp data dir and config. `keys` are created with
 * `annostore keys create` before it starts: `server.keys[name]` is the whole key.
 */
export class Server {
  static async start({ name, textEncoder = false, keys = [] }) {
    assert.ok(fs.existsSync(BIN), `${BIN} is missing: cargo build --workspace --all-targets`);
    const root = fs.mkdtempSync(path.join(os.tmpdir(), `annostore-e2e-${name}-`));
    try {
      return await Server.startIn(root, name, textEncoder, keys);
    } catch (e) {
      fs.rmSync(root, { recursive: true, force: true });
      throw e;
    }
  }

  static async startIn(root, name, textEncoder, keys) {
    const dataDir = path.join(root, 'data');
    const config = path.join(root, 'annostore.toml');
    const lines = [
      `listen = "127.0.0.1:0"`,
      `data_dir = ${tomlString(dataDir)}`,
      '',
      '[ui]',
      `media_root = ${tomlString(shared('media'))}`,
      'poll_seconds = 1',
    ];
    if (textEncoder) {
      lines.push(
        '',
        '[search.text_encoder]',
        'kind = "onnx"',
        `model = ${tomlString(shared('models/minilm_l6_v2_int8.onnx'))}`,
        `tokenizer = ${tomlString(shared('models/minilm_tokenizer.json'))}`,
      );
    }
    fs.writeFileSync(config, lines.join('\n') + '\n');
    const common = ['--config', config, '--data-dir', dataDir];
    const created = {};
    for (const k of keys) {
      const out = await cli(
        ['keys', 'create', '--name', k.name, '--role', k.role, '--json', ...common],
        { cwd: root },
      );
      assert.equal(out.code, 0, `keys create ${k.name}: ${tail(out.stderr, 2000)}`);
      created[k.name] = JSON.parse(out.stdout).key;
    }
    const logPath = path.join(ARTEFACTS, `server-${name}.log`);
    const log = fs.openSync(logPath, 'w');
    const child = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', ...common], {
      cwd: root,
      env: cleanEnv(),
      stdio: ['ignore', 'pipe', log],
    });
    fs.closeSync(log);
    const server = new Server(name, child, root, logPath, created);
    server.url = await new Promise((resolve, reject) => {
      child.once('error', (e) => reject(new Error(`starting annostore serve: ${e.message}`)));
      const timer = setTimeout(
        () => reject(new Error(`annostore serve did not report its address in 60 s\n${server.logTail()}`)),
        60_000,
      );
      // Keeps reading stdout after the address, so the server never blocks on it.
      readline.createInterface({ input: child.stdout }).on('line', (line) => {
        const m = line.trim().match(/^annostore listening on (http\S+)$/);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`annostore serve exited at start (${code ?? signal})\n${server.logTail()}`));
      });
    }).catch((e) => {
      child.kill('SIGKILL');
      throw e;
    });
    server.api = new Api(server.url);
    return server;
  }

  constructor(name, child, root, logPath, keys) {
    this.name = name;
    this.child = child;
    this.root = root;
    this.logPath = logPath;
    this.keys = keys;
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  logTail(n = 4000) {
    try {
      // eslint-disable-next-line no-control-regex
      const log = fs.readFileSync(this.logPath, 'utf8').replace(/\x1b\[[0-9;]*m/g, '');
      return `--- ${this.logPath} (start and end) ---\n${tail(log, n)}`;
    } catch {
      return `(no log at ${this.logPath})`;
    }
  }

  /** Throws (with the log's tail) when the server is no longer running. */
  assertAlive() {
    const { exitCode, signalCode } = this.child;
    assert.ok(
      exitCode === null && signalCode === null,
      `annostore serve (${this.name}) died: exit ${exitCode ?? signalCode}\n${this.logTail()}`,
    );
  }

  /** Checks it is still up and never panicked, then stops it (SIGTERM, SIGKILL after 10 s). */
  async stop() {
    let alive;
    try {
      this.assertAlive();
      alive = true;
    } catch (e) {
      alive = e;
    }
    if (alive === true) {
      this.child.kill('SIGTERM');
      const done = await Promise.race([
        this.exited,
        new Promise((r) => setTimeout(() => r(null), 10_000)),
      ]);
      if (done === null) {
        this.child.kill('SIGKILL');
        await this.exited;
      }
    }
    fs.rmSync(this.root, { recursive: true, force: true });
    if (alive !== true) throw alive;
    const log = fs.readFileSync(this.logPath, 'utf8');
    assert.ok(!log.includes('panicked at'), `annostore serve (${this.name}) panicked\n${this.logTail()}`);
  }
}

/** A client of the API (with a key, when given). Any 5xx fails the test. */
export class Api {
  constructor(base, key) {
    this.base = base;
    this.key = key;
  }

  withKey(key) {
    return new Api(this.base, key);
  }

  async request(method, p, body, { expect, headers = {} } = {}) {
    const h = { ...headers };
    if (this.key) h.authorization = `Bearer ${this.key}`;
    if (body !== undefined) h['content-type'] = 'application/json';
    const res = await fetch(this.base + p, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    assert.ok(res.status < 500, `${method} ${p} answered ${res.status}: ${text.slice(0, 2000)}`);
    if (expect !== undefined) {
      assert.equal(res.status, expect, `${method} ${p} ${JSON.stringify(body)}: ${text.slice(0, 2000)}`);
    }
    return { status: res.status, headers: res.headers, json, text };
  }

  async get(p, expect = 200) {
    return (await this.request('GET', p, undefined, { expect })).json;
  }

  async post(p, body, expect = 200) {
    return (await this.request('POST', p, body, { expect })).json;
  }

  async put(p, body, expect = 200) {
    return (await this.request('PUT', p, body, { expect })).json;
  }

  /** Every annotation a search finds, following page tokens. */
  async searchAll(filter) {
    const out = [];
    let token = null;
    for (;;) {
      const body = { ...filter, limit: 1000 };
      if (token) body.page_token = token;
      const page = await this.post('/v1/annotations/search', body);
      out.push(...page.annotations);
      token = page.next_page_token;
      if (!token) return out;
    }
  }

  async aggregate(filter, aggregations) {
    return this.post('/v1/annotations/aggregate', { ...filter, aggregations });
  }
}

/**
 * The annotations the page should draw at `t` ms: visible (or of `operation_id`),
 * and `start_ms <= t < end_ms` (the page's rule), sorted by id.
 */
export async function expectedBoxes(api, t, extra = {}) {
  const found = await api.searchAll({
    media_id: MEDIA_ID,
    time_range: { start_ms: t, end_ms: t },
    ...extra,
  });
  return found.filter((a) => a.start_ms <= t && t < a.end_ms).sort((a, b) => cmp(a.id, b.id));
}

const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

/** `annostore ingest` of the shared slideshow into `server`, with the text bridge: its report. */
export async function ingestSlideshow(server) {
  const out = await cli([
    'ingest',
    shared(`media/${MEDIA_ID}`),
    '--server',
    server.url,
    '--detector',
    shared('models/centernet.onnx'),
    '--embedder',
    shared('models/mobilenetv2_imagenet.onnx'),
    '--text-encoder',
    shared('models/minilm_l6_v2_int8.onnx'),
    '--tokenizer',
    shared('models/minilm_tokenizer.json'),
  ]);
  fs.writeFileSync(path.join(ARTEFACTS, 'ingest.log'), out.stderr);
  assert.equal(out.code, 0, `ingest failed:\n${tail(out.stderr)}\n${server.logTail()}`);
  const reports = out.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(reports.length, 1, out.stdout);
  assert.equal(reports[0].status, 'FINISHED', out.stdout);
  assert.equal(reports[0].media_id, MEDIA_ID, out.stdout);
  return reports[0];
}

/** Debian's chromium, headless; fails (never skips) when it is not installed. */
export async function launchBrowser() {
  assert.ok(
    fs.existsSync(CHROMIUM),
    `${CHROMIUM} is missing: install Debian's chromium (scripts/setup-system)`,
  );
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 60_000 });
}

/**
 * Runs `fn(page)` in a fresh browser context (1440x900). Fails the test on an uncaught
 * error in the page or a 5xx it received; keeps the console in `<name>.console.log` and,
 * on failure, a screenshot `<name>.failed.png` in the artefact dir.
 */
export async function withPage(browser, name, fn, { viewport = { width: 1440, height: 900 } } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const logs = [];
  const errors = [];
  page.on('console', (m) => logs.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => errors.push(`uncaught in the page: ${e.stack || e.message}`));
  page.on('response', (r) => {
    if (r.status() >= 500) errors.push(`the page got ${r.status()} from ${r.url()}`);
    if (r.status() >= 400) logs.push(`[http ${r.status()}] ${r.request().method()} ${r.url()}`);
  });
  page.on('requestfailed', (r) => {
    // The player aborts range requests as it seeks: not worth a line.
    const why = r.failure()?.errorText;
    if (why !== 'net::ERR_ABORTED') logs.push(`[failed] ${r.method()} ${r.url()}: ${why}`);
  });
  try {
    await fn(page, context);
    // An error the page itself reported (a failed API call) in #status.
    const status = await page.$eval('#status', (el) => ({ kind: el.dataset.kind, text: el.textContent }));
    if (status.kind === 'error') errors.push(`#status shows an error: ${status.text}`);
    assert.deepEqual(errors, [], 'the page had errors');
  } catch (e) {
    await page
      .screenshot({ path: path.join(ARTEFACTS, `${name}.failed.png`), fullPage: true })
      .catch(() => {});
    if (errors.length) e.message += `\npage errors:\n${errors.join('\n')}`;
    e.message += `\nconsole (tail):\n${logs.slice(-20).join('\n')}`;
    throw e;
  } finally {
    fs.writeFileSync(path.join(ARTEFACTS, `${name}.console.log`), logs.join('\n') + '\n');
    await context.close();
  }
}

/** Waits until `fn(arg)` is truthy in the page; the error names `what`. */
export async function waitFor(page, what, fn, arg, timeout = WAIT_MS) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (e) {
    throw new Error(`timed out after ${timeout} ms waiting until ${what}: ${e.message.split('\n')[0]}`);
  }
}

/** Opens /ui/, picks the slideshow from the media list, waits for its video's metadata. */
export async function openSlideshow(page, base) {
  await page.goto(`${base}/ui/`);
  const item = page.locator(`#media-list button.media-item[data-media-id="${MEDIA_ID}"]`);
  await item.waitFor({ state: 'visible' });
  await item.click();
  await waitFor(
    page,
    'the video has its metadata',
    () => {
      const v = document.querySelector('video#player');
      return v && v.readyState >= 1 && Number.isFinite(v.duration) && v.duration > 0;
    },
  );
}

/** Pauses the video and seeks to `seconds`; waits until `#boxes` shows that time. */
export async function seek(page, seconds) {
  await page.evaluate((s) => {
    const v = document.querySelector('video#player');
    v.pause();
    v.currentTime = s;
  }, seconds);
  await waitFor(
    page,
    `#boxes[data-time-ms] is about ${seconds * 1000}`,
    (ms) => {
      const v = document.querySelector('video#player');
      const b = document.querySelector('ul#boxes');
      return v && !v.seeking && b && Math.abs(Number(b.dataset.timeMs) - ms) <= 50;
    },
    seconds * 1000,
  );
  return Number(await page.getAttribute('ul#boxes', 'data-time-ms'));
}

/** The `li.box` items of a list (`#boxes` or `#preview-boxes`), sorted by annotation id. */
export async function listedBoxes(page, list = 'ul#boxes') {
  const boxes = await page.$$eval(`${list} > li.box`, (lis) =>
    lis.map((li) => ({
      id: li.dataset.annotationId,
      label: li.dataset.label,
      confidence: Number(li.dataset.confidence),
      x: Number(li.dataset.x),
      y: Number(li.dataset.y),
      w: Number(li.dataset.w),
      h: Number(li.dataset.h),
    })),
  );
  return boxes.sort((a, b) => cmp(a.id, b.id));
}

/** `[{id, label}]` of annotations or listed boxes, for comparing the two. */
export const idsAndLabels = (xs) => xs.map((x) => ({ id: x.id, label: x.label }));

/**
 * Waits until `list` (`ul#boxes` or `ul#preview-boxes`) shows exactly the annotations
 * `want` (the API's answer for the list's time) and returns what it lists. On a timeout
 * the error shows both.
 */
export async function waitForBoxes(page, list, want, what) {
  const ids = want.map((a) => a.id).sort(cmp);
  try {
    await page.waitForFunction(
      ({ list, ids }) => {
        const got = [...document.querySelectorAll(`${list} > li.box`)].map((li) => li.dataset.annotationId).sort();
        return got.length === ids.length && got.every((id, i) => id === ids[i]);
      },
      { list, ids },
      { timeout: WAIT_MS, polling: 100 },
    );
  } catch (e) {
    const got = await listedBoxes(page, list).catch(() => []);
    assert.deepEqual(
      idsAndLabels(got),
      idsAndLabels([...want].sort((a, b) => cmp(a.id, b.id))),
      `${list} did not come to show ${what} within ${WAIT_MS} ms (${e.message.split('\n')[0]})`,
    );
  }
  return listedBoxes(page, list);
}

/** The lanes of `#timeline` once it is ready: `[{lane, segments: [{start, end, count}]}]`. */
export async function lanes(page) {
  await page.locator('#timeline[data-ready="true"]').waitFor({ state: 'attached' });
  return page.$$eval('#timeline .lane[data-lane]', (rows) =>
    rows.map((row) => ({
      lane: row.dataset.lane,
      segments: [...row.querySelectorAll('.segment')].map((s) => ({
        start: Number(s.dataset.startMs),
        end: Number(s.dataset.endMs),
        count: Number(s.dataset.count),
      })),
    })),
  );
}

/** Saves a screenshot into the artefact dir; returns its path. */
export async function screenshot(page, file) {
  const p = path.join(ARTEFACTS, file);
  await page.screenshot({ path: p });
  assert.ok(fs.statSync(p).size > 1000, `${p} is empty`);
  return p;
}
