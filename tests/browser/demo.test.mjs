// `outreach demo` from an empty directory, as a newcomer runs it: every page of the office,
// the clinic and the township is filled, and the API browser works for the office only.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { desktop, phone, shot, bin, freePort } from './harness.mjs';

const STAGES = ['target', 'notified', 'reached', 'appointed', 'examined', 'refused', 'exempt'];

let demo;
let base;
let logins;
let dir;

before(async () => {
  dir = join(mkdtempSync(join(tmpdir(), 'outreach-demo-')), 'demo');
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const env = { ...process.env, OUTREACH_LOG__FILTER: 'warn' };
  delete env.DATABASE_URL;
  demo = spawn(bin, ['demo', '--dir', dir, '--residents', '2000', '--bind', `127.0.0.1:${port}`], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  demo.stdout.on('data', (d) => (output += d));
  demo.stderr.on('data', (d) => (output += d));
  const started = Date.now();
  for (;;) {
    if (output.includes('demo listening on')) break;
    if (demo.exitCode !== null) throw new Error(`the demo stopped:\n${output}`);
    if (Date.now() - started > 240000) throw new Error(`the demo did not start:\n${output}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  // `role  username  password  area` per line of the logins file.
  logins = Object.fromEntries(
    readFileSync(join(dir, 'logins.txt'), 'utf8')
      .split('\n')
      .map((line) => line.trim().split(/\s+/))
      .filter((cols) => cols.length === 4 && /^\d{12}$/.test(cols[3]))
      .map(([role, username, password]) => [role, { username, password }]),
  );
  for (const role of ['office', 'township', 'cadre', 'institution', 'auditor']) {
    assert.ok(logins[role], `a ${role} login is printed`);
  }
});

after(async () => {
  if (demo && demo.exitCode === null) {
    demo.kill('SIGTERM');
    await new Promise((r) => demo.once('exit', r));
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function signInAs(page, role) {
  const { username, password } = logins[role];
  await page.goto(`${base}/`);
  await page.getByTestId('login-username').fill(username);
  await page.getByTestId('login-password').fill(password);
  await Promise.all([page.waitForURL(/\/(m|app)\//), page.getByTestId('login-submit').click()]);
}

test("the demo's dashboard shows every stage of the funnel filled", async () => {
  const { browser, page } = await desktop();
  try {
    await signInAs(page, 'office');
    const funnel = page.getByTestId('dashboard-funnel');
    await funnel.waitFor();
    for (const stage of STAGES) {
      const count = Number(await funnel.locator(`[data-stage="${stage}"]`).first().getAttribute('data-count'));
      assert.ok(count > 0, `${stage} is ${count}`);
    }
    assert.ok((await page.getByTestId('ranking-row').count()) >= 2, 'the townships are ranked');
    await shot(page, 'demo-dashboard');
  } finally {
    await browser.close();
  }
});

test("the demo fills the office's review queue, waves, institutions, users and audit log", async () => {
  const { browser, page } = await desktop();
  try {
    await signInAs(page, 'office');
    await page.goto(`${base}/app/refusals`);
    assert.ok((await page.getByTestId('review-item').count()) > 0, 'registrations wait for review');
    await shot(page, 'demo-refusals');
    await page.goto(`${base}/app/waves`);
    const waves = await page.getByTestId('wave-row').allInnerTexts();
    assert.ok(waves.length >= 5, `${waves.length} waves`);
    await shot(page, 'demo-waves');
    await page.goto(`${base}/app/campaigns`);
    assert.ok((await page.getByTestId('campaign-row').count()) >= 1);
    await page.goto(`${base}/app/institutions`);
    assert.ok((await page.getByTestId('institution-row').count()) >= 3);
    await shot(page, 'demo-institutions');
    await page.goto(`${base}/app/users`);
    assert.ok((await page.getByTestId('user-row').count()) >= 5);
    await page.goto(`${base}/app/audit`);
    assert.ok((await page.getByTestId('audit-row').count()) > 0);
    await shot(page, 'demo-audit');
  } finally {
    await browser.close();
  }
});

test("the demo's clinic has today's appointments and the township its own villages", async () => {
  const { browser, page } = await phone();
  try {
    await signInAs(page, 'institution');
    assert.ok((await page.getByTestId('clinic-appointment').count()) > 0, "today's appointments");
    await shot(page, 'demo-clinic-phone');
  } finally {
    await browser.close();
  }
  const second = await desktop();
  try {
    await signInAs(second.page, 'township');
    const rows = second.page.getByTestId('ranking-row');
    assert.ok((await rows.count()) > 0);
    for (const area of await rows.evaluateAll((els) => els.map((e) => e.dataset.area))) {
      assert.ok(area.startsWith('654025100'), `${area} lies in the township`);
    }
    await shot(second.page, 'demo-township');
  } finally {
    await second.browser.close();
  }
});

test('the API browser lists the operations for the office and is closed to others', async () => {
  const { browser, page } = await desktop();
  try {
    await signInAs(page, 'office');
    await page.goto(`${base}/api/docs`);
    await page.locator('.opblock-tag').first().waitFor({ timeout: 30000 });
    assert.ok((await page.locator('.opblock-tag').count()) >= 10, 'the tags of the API are listed');
    // A read tried from the browser goes out with the office's own session.
    await page.locator('.opblock-tag', { hasText: 'auth' }).first().click();
    await page.locator('.opblock-summary-path[data-path="/api/v1/me"]').first().click();
    await page.getByRole('button', { name: 'Try it out' }).click();
    await page.getByRole('button', { name: 'Execute' }).click();
    const body = page.locator('.live-responses-table .response-col_description pre').first();
    await body.waitFor();
    assert.match(await body.innerText(), new RegExp(logins.office.username));
    await shot(page, 'demo-api-docs');
  } finally {
    await browser.close();
  }
  const other = await desktop();
  try {
    await signInAs(other.page, 'auditor');
    const response = await other.page.goto(`${base}/api/docs`);
    assert.equal(response.status(), 403);
  } finally {
    await other.browser.close();
  }
});
