// Browser half of TestLivePageInBrowser (browser_test.go): opens the on-air live results page
// in Debian's chromium, reports what it shows, and checks that it follows the stream without
// reloading. Talks to the Go test over stdio, one line per step:
//   out: READY <state>     page rendered and its stream is live
//   in:  VOTED <votes>     the test cast votes; <votes> maps candidate id → expected count
//   out: UPDATED <state>   the page shows exactly those counts (screenshot live-results.png)
//   in:  CLOSED            the test closed the election
//   out: DONE              the page shows it closed (screenshot live-results-closed.png)
// Any failure prints "FAIL <reason>" and exits non-zero.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const pageURL = process.env.PAGE_URL;
const outDir = process.env.OUT_DIR;
const candidates = Number(process.env.CANDIDATES);
const stepTimeout = 15000;

const fail = (why) => { throw new Error(why); };
// Bound the whole run, whatever hangs.
setTimeout(() => { console.log('FAIL timed out after 120 s'); process.exit(1); }, 120000).unref();

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function expectLine(prefix) {
  const { value, done } = await lines.next();
  if (done || !value.startsWith(prefix)) fail(`expected ${prefix} from the test, got ${done ? 'EOF' : value}`);
  return value.slice(prefix.length).trim();
}

// What the page shows, read from the DOM.
const readState = (page) => page.evaluate(() => ({
  url: location.href,
  title: document.getElementById('title').textContent,
  status: document.body.dataset.status,
  conn: document.body.dataset.conn,
  total: Number(document.getElementById('total').dataset.votes),
  marker: window.__sameDocument || null,
  rows: [...document.querySelectorAll('#rows .row')].map((li) => ({
    id: li.dataset.candidateId,
    name: li.querySelector('.name').textContent,
    votes: Number(li.dataset.votes),
    pct: Number(li.dataset.pct),
    width: li.querySelector('.bar').style.width,
    text: li.querySelector('.pct').textContent,
  })),
}));

const userDataDir = mkdtempSync(join(tmpdir(), 'results-e2e-chromium-'));
let context;
try {
  mkdirSync(outDir, { recursive: true });
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
    viewport: { width: 1920, height: 1080 },
  });
  const page = context.pages()[0] || await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('console', (m) => { if (m.type() === 'error') problems.push('console error: ' + m.text()); });

  await page.goto(pageURL, { waitUntil: 'load', timeout: stepTimeout });
  await page.waitForFunction((n) => document.body.dataset.conn === 'live' &&
    document.querySelectorAll('#rows .row').length === n &&
    document.getElementById('title').textContent !== 'Loading…', candidates, { timeout: stepTimeout });
  // Set a marker in this document: if the page reloaded, it would be gone.
  await page.evaluate(() => { window.__sameDocument = 'yes'; });
  const before = await readState(page);
  if (before.url.includes('token=')) fail('the token stayed in the address bar: ' + before.url);
  console.log('READY ' + JSON.stringify(before));

  const expected = JSON.parse(await expectLine('VOTED'));
  const t0 = Date.now();
  await page.waitForFunction((want) => Object.entries(want).every(([id, votes]) => {
    const li = document.querySelector(`#rows .row[data-candidate-id="${id}"]`);
    return li && Number(li.dataset.votes) === votes;
  }), expected, { timeout: stepTimeout }).catch(async () => fail('counts never reached ' + JSON.stringify(expected) +
    '; page shows ' + JSON.stringify(await readState(page))));
  const seenMs = Date.now() - t0;
  await page.waitForTimeout(800); // let the bar transition (0.7 s) finish before the screenshot
  const after = await readState(page);
  if (after.marker !== 'yes') fail('the page reloaded');
  for (const r of after.rows) {
    if (!r.width.endsWith('%') || Math.abs(parseFloat(r.width) - r.pct) > 0.01) fail(`bar of ${r.name} is ${r.width}, its share ${r.pct}%`);
  }
  await page.screenshot({ path: join(outDir, 'live-results.png') });
  console.log('UPDATED ' + JSON.stringify({ ...after, ms: seenMs }));

  await expectLine('CLOSED');
  await page.waitForFunction(() => document.body.dataset.status === 'CLOSED' &&
    document.getElementById('status').textContent === 'Voting closed', null, { timeout: stepTimeout })
    .catch(async () => fail('close never shown; page shows ' + JSON.stringify(await readState(page))));
  const closed = await readState(page);
  if (closed.marker !== 'yes') fail('the page reloaded');
  await page.screenshot({ path: join(outDir, 'live-results-closed.png') });
  if (problems.length) fail(problems.join('; '));
  console.log('DONE ' + JSON.stringify(closed));
} catch (e) {
  console.log('FAIL ' + String(e && e.message ? e.message : e).replace(/\n/g, ' | '));
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
process.exit();
