// A real `outreach serve` for the browser tests: its own SQLite file (or a fresh PostgreSQL
// database when TEST_DATABASE_URL is set), an area tree, users and residents loaded with
// the command line, and headless Debian chromium driven by playwright-core.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { residentId, freePort, testDatabase, bin } from '../drill/lib.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const target = process.env.CARGO_TARGET_DIR ?? join(root, 'target');
export const screenshots = join(target, 'browser-screenshots');

export const COUNTY = '654025000000';
export const TOWNSHIP = '654025100000';
export const VILLAGE = '654025100201';
export const OTHER_VILLAGE = '654025100202';
export const OTHER_TOWNSHIP = '654025101000';
export const OTHER_TOWNSHIP_VILLAGE = '654025101201';
export const PASSWORD = 'Field-Work-2027';

// The debug binary `cargo test` built (CARGO_TARGET_DIR honoured), or TEST_OUTREACH_BIN.
export { residentId, freePort, bin };

/// Starts the service with a county, two villages and their residents; `residents` lists
/// `[name, village, phone]`. `settings` are more configuration, by environment name without
/// its prefix (e.g. `{ HTTP__PUBLIC_URL: '…' }`); `publicUrl: true` sets the public address to
/// the service's own.
export async function startApp(residents, { settings = {}, publicUrl = false } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'outreach-web-'));
  const db = testDatabase(dir, 'web');
  const port = await freePort();
  const env = {
    ...process.env,
    DATABASE_URL: db.url,
    OUTREACH_PRIVACY__KEY: randomBytes(32).toString('base64'),
    OUTREACH_BIND: `127.0.0.1:${port}`,
    OUTREACH_LOG__FILTER: 'warn',
    OUTREACH_SCHEDULER__ENABLED: 'false',
    ...(publicUrl ? { OUTREACH_HTTP__PUBLIC_URL: `http://127.0.0.1:${port}` } : {}),
    ...Object.fromEntries(Object.entries(settings).map(([k, v]) => [`OUTREACH_${k}`, v])),
  };
  const run = (args, input) =>
    execFileSync(bin, args, { env, cwd: dir, input, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
  writeFileSync(
    join(dir, 'areas.csv'),
    `区划代码,名称\n${COUNTY},新源县\n${TOWNSHIP},新源镇\n${VILLAGE},阿勒玛勒村\n${OTHER_VILLAGE},托格拉克村\n` +
      `${OTHER_TOWNSHIP},则克台镇\n${OTHER_TOWNSHIP_VILLAGE},阿克其村\n`,
  );
  run(['import', 'areas', 'areas.csv']);
  const users = [
    ['office.li', 'office', COUNTY],
    ['cadre.ma', 'cadre', VILLAGE],
    ['cadre.other', 'cadre', OTHER_VILLAGE],
    ['township.wang', 'township', TOWNSHIP],
    ['township.other', 'township', OTHER_TOWNSHIP],
    ['auditor.zhao', 'auditor', COUNTY],
  ];
  for (const [username, role, area] of users) {
    run(['user', 'add', '--username', username, '--role', role, '--area', area, '--password-stdin'], `${PASSWORD}\n`);
  }
  const ids = residents.map((_, i) => residentId(`19${50 + i}0101`, 10 + i));
  const rows = residents.map(([name, village, phone], i) => `${name},${ids[i]},${village},${phone ?? ''}`);
  writeFileSync(join(dir, 'residents.csv'), `姓名,身份证号,户籍地区划代码,联系电话\n${rows.join('\n')}\n`);
  run(['import', 'residents', 'residents.csv']);

  const serve = spawn(bin, ['serve'], { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  serve.stdout.on('data', (d) => (output += d));
  serve.stderr.on('data', (d) => (output += d));
  const base = `http://127.0.0.1:${port}`;
  const started = Date.now();
  for (;;) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) break;
    } catch {}
    if (Date.now() - started > 30000) throw new Error(`the service did not start:\n${output}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const app = {
    base,
    ids,
    output: () => output,
    async token(username) {
      const response = await fetch(`${base}/api/v1/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username, password: PASSWORD }),
      });
      return (await response.json()).token;
    },
    async api(method, path, token, body) {
      const response = await fetch(`${base}/api/v1${path}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await response.text();
      return { status: response.status, body: text ? JSON.parse(text) : null };
    },
    /// Runs the command line against the service's database (`['refusals', 'verify']`).
    run,
    /// Adds a clinic user for the institution with `code` (created beforehand).
    addClinicUser(username, code) {
      run(
        ['user', 'add', '--username', username, '--role', 'institution', '--area', COUNTY, '--institution', code, '--password-stdin'],
        `${PASSWORD}\n`,
      );
    },
    async stop() {
      serve.kill('SIGTERM');
      await new Promise((r) => serve.once('exit', r));
      db.drop();
    },
  };
  return app;
}

/// Headless Debian chromium with a phone-sized page.
export async function phone() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const context = await browser.newContext({
    viewport: { width: 360, height: 640 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
    locale: 'zh-CN',
  });
  const page = await context.newPage();
  return { browser, context, page };
}

/// Headless Debian chromium with a desktop-sized page, as the county office works.
export async function desktop() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'zh-CN' });
  const page = await context.newPage();
  return { browser, context, page };
}

export async function shot(page, name) {
  mkdirSync(screenshots, { recursive: true });
  await page.screenshot({ path: join(screenshots, `${name}.png`), fullPage: true });
}

/// Signs in on the form at `/` and waits for the start page.
export async function signIn(app, page, username = 'cadre.ma', password = PASSWORD) {
  await page.goto(`${app.base}/`);
  await page.getByTestId('login-username').fill(username);
  await page.getByTestId('login-password').fill(password);
  await Promise.all([page.waitForURL(/\/(m|app)\/|\/$/), page.getByTestId('login-submit').click()]);
}

/// Creates and opens this year's campaign, its exam window running into next year so that it
/// is open whatever the day the tests run; returns its id.
export async function openCampaign(app) {
  const office = await app.token('office.li');
  const year = new Date().getFullYear();
  const created = await app.api('POST', '/campaigns', office, {
    year,
    phases: {
      exams: { from: `${year}-01-01`, to: `${year + 1}-12-29` },
      catch_up: { from: `${year + 1}-12-30`, to: `${year + 1}-12-30` },
      acceptance: { from: `${year + 1}-12-31`, to: `${year + 1}-12-31` },
    },
  });
  if (created.status !== 201) throw new Error(JSON.stringify(created.body));
  const opened = await app.api('POST', `/campaigns/${created.body.id}/open`, office);
  if (opened.status !== 200) throw new Error(JSON.stringify(opened.body));
  return created.body.id;
}

/// Waits until the service worker controls the page, so it answers when the network is gone.
export async function controlled(page) {
  await page.evaluate(() => navigator.serviceWorker.ready);
  await page.reload();
  await page.waitForFunction(() => navigator.serviceWorker.controller !== null);
}

/// How many entries the banner says wait on the phone.
export const pending = (page) =>
  page.evaluate(() => {
    const banner = document.querySelector('[data-testid=sync-pending]');
    return banner.hidden ? 0 : Number(banner.querySelector('.count').textContent);
  });

/// A resident's id, found as the county office would.
export async function residentNamed(app, name) {
  const office = await app.token('office.li');
  const found = await app.api('GET', `/residents?q=${encodeURIComponent(name)}`, office);
  return found.body.residents[0].id;
}
