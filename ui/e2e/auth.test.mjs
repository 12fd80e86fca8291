// The viewer on a server with API keys: the page asks for a key, refuses a wrong one,
// and with a reader's key lists the media, plays its file (the key goes in the cookie
// `annostore_key`, as a <video> cannot send headers) and draws its boxes.

import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MEDIA_ID,
  Server,
  expectedBoxes,
  launchBrowser,
  seek,
  waitFor,
  waitForBoxes,
  withPage,
} from './harness.mjs';

let server;
let browser;
let admin;
let reader;

before(
  async () => {
    server = await Server.start({
      name: 'auth',
      keys: [
        { name: 'viewer', role: 'reader' },
        { name: 'ops', role: 'admin' },
      ],
    });
    admin = server.api.withKey(server.keys.ops);
    reader = server.api.withKey(server.keys.viewer);
    // One small run on the slideshow, so there is something to list and draw.
    const put = await admin.request('PUT', '/v1/types/objects/versions/1', {});
    assert.ok([200, 201].includes(put.status), put.text);
    const op = await admin.post(
      '/v1/operations',
      {
        annotation_type: 'objects',
        annotation_type_version: 1,
        pivot_id: 'e2e-auth-run',
        metadata: { media_id: MEDIA_ID },
      },
      201,
    );
    await admin.post(`/v1/operations/${op.id}/annotations`, {
      annotations: [
        {
          media_id: MEDIA_ID,
          start_ms: 12_000,
          end_ms: 16_000,
          label: 'auth-box',
          confidence: 0.8,
          bbox: { x: 0.2, y: 0.2, w: 0.5, h: 0.5 },
        },
      ],
    });
    await admin.request('POST', `/v1/operations/${op.id}/finish`, undefined, { expect: 200 });
    browser = await launchBrowser();
  },
  { timeout: 120_000 },
);

after(async () => {
  try {
    await browser?.close();
  } finally {
    await server?.stop();
  }
});

test('f-auth: the page asks for a key, refuses a wrong one, and plays the media with a right one', { timeout: 120_000 }, async () => {
  const file = `/v1/media/${encodeURIComponent(MEDIA_ID)}/file`;
  // Without a key the API and the media file are closed; the reader's key opens them.
  assert.equal((await server.api.request('GET', '/v1/media?limit=50')).status, 401);
  assert.equal((await server.api.request('GET', file, undefined, { headers: { range: 'bytes=0-99' } })).status, 401);
  const media = await reader.get('/v1/media?limit=50');
  assert.ok(media.media.some((m) => m.media_id === MEDIA_ID), JSON.stringify(media));

  try {
    await withPage(browser, 'f-auth', async (page, context) => {
      await page.goto(`${server.url}/ui/`);
      await waitFor(page, 'dialog#key-dialog is open', () => document.querySelector('dialog#key-dialog')?.open === true);

      await page.fill('#key-input', `ask_0123456789abcdef_${'x'.repeat(43)}`);
      await page.click('#key-submit');
      await waitFor(page, '#key-error says why', () => document.querySelector('#key-error')?.textContent.trim() !== '');
      assert.equal(await page.evaluate(() => document.querySelector('dialog#key-dialog').open), true, 'a wrong key closed the dialog');

      await page.fill('#key-input', server.keys.viewer);
      await page.click('#key-submit');
      await waitFor(page, 'the dialog closes', () => document.querySelector('dialog#key-dialog')?.open === false);
      const item = page.locator(`#media-list button.media-item[data-media-id="${MEDIA_ID}"]`);
      await item.waitFor({ state: 'visible' });

      const cookies = await context.cookies(`${server.url}${file}`);
      const cookie = cookies.find((c) => c.name === 'annostore_key');
      assert.ok(cookie, `no annostore_key cookie for the media file: ${JSON.stringify(cookies)}`);
      assert.equal(decodeURIComponent(cookie.value), server.keys.viewer);
      assert.equal(cookie.path, '/v1/media/');
      assert.equal(cookie.sameSite, 'Strict');

      const fileResponse = page.waitForResponse((r) => new URL(r.url()).pathname === file);
      await item.click();
      const res = await fileResponse;
      assert.ok([200, 206].includes(res.status()), `the media file answered ${res.status()}`);
      await waitFor(page, 'the video has its metadata', () => {
        const v = document.querySelector('video#player');
        return v.readyState >= 1 && Math.abs(v.duration - 24) < 0.5;
      });

      const t = await seek(page, 13.5);
      const want = await expectedBoxes(reader, t);
      assert.deepEqual(want.map((a) => a.label), ['auth-box']);
      await waitForBoxes(page, 'ul#boxes', want, 'the run at 13.5 s');
    });
    server.assertAlive();
  } catch (e) {
    e.message += `\n${server.logTail(3000)}`;
    throw e;
  }
});
