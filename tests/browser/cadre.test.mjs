// The cadre's phone pages in a real browser: sign-in, the village's worklist, a resident's
// page, the scope of both, the session cookie and the anti-forgery checks.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startApp, phone, shot, VILLAGE, OTHER_VILLAGE, PASSWORD } from './harness.mjs';

let app;
let campaign;

before(async () => {
  app = await startApp([
    ['张伟', VILLAGE, '13899001122'],
    ['玛依拉·胡安', VILLAGE, '13899001123'],
    ['阿依古丽', VILLAGE, ''],
    ['李娜', OTHER_VILLAGE, '13899001124'],
  ]);
  const office = await app.token('office.li');
  const created = await app.api('POST', '/campaigns', office, { year: 2027 });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  campaign = created.body.id;
  const opened = await app.api('POST', `/campaigns/${campaign}/open`, office);
  assert.equal(opened.status, 200, JSON.stringify(opened.body));
});

after(async () => {
  await app?.stop();
});

async function signIn(page, username = 'cadre.ma', password = PASSWORD) {
  await page.goto(`${app.base}/`);
  await page.getByTestId('login-username').fill(username);
  await page.getByTestId('login-password').fill(password);
  await Promise.all([page.waitForURL(/\/(m|app)\/|\/$/), page.getByTestId('login-submit').click()]);
}

test('a cadre signs in on a phone and sees her own village only', async () => {
  const { browser, page } = await phone();
  try {
    await page.goto(`${app.base}/`);
    await shot(page, 'sign-in');
    await signIn(page);
    assert.equal(new URL(page.url()).pathname, '/m/');
    const items = page.getByTestId('worklist-item');
    assert.equal(await items.count(), 3);
    const names = await items.locator('.name').allTextContents();
    assert.deepEqual(names.sort(), ['张伟', '玛依拉·胡安', '阿依古丽'].sort());
    const tab = await page.getByTestId('worklist-tab-not_appointed').textContent();
    assert.match(tab, /未预约\s*3/);
    // Masked numbers only.
    const html = await page.content();
    for (const id of app.ids) assert.ok(!html.includes(id), 'a full ID number is on the page');
    assert.ok(!html.includes('13899001122'), 'a full phone number is on the page');
    await shot(page, 'worklist');

    await page.getByTestId('worklist-item').filter({ hasText: '张伟' }).locator('a').click();
    await page.waitForURL(/\/m\/residents\/\d+$/);
    assert.equal(await page.locator('h1').first().innerText().then((t) => t.startsWith('张伟')), true);
    assert.equal(await page.getByTestId('resident-stage').textContent(), '待通知');
    const detail = await page.content();
    assert.ok(detail.includes('138****1122'));
    assert.ok(!detail.includes('13899001122'));
    await shot(page, 'resident');

    // Another village's resident is not reachable by its URL.
    const office = await app.token('office.li');
    const others = await app.api('GET', `/residents?q=${encodeURIComponent('李娜')}`, office);
    const other = others.body.residents[0].id;
    const response = await page.goto(`${app.base}/m/residents/${other}`);
    assert.ok([403, 404].includes(response.status()), `status ${response.status()}`);
    assert.ok(!(await page.content()).includes('李娜'));
  } finally {
    await browser.close();
  }
});

test('a wrong password is answered on the form, and the name search finds a resident', async () => {
  const { browser, page } = await phone();
  try {
    await signIn(page, 'cadre.ma', 'not-the-password-1');
    assert.equal(new URL(page.url()).pathname, '/');
    assert.match(await page.getByTestId('login-error').textContent(), /用户名或密码/);
    await signIn(page);
    await page.getByTestId('search-q').fill('玛依拉');
    await Promise.all([page.waitForURL(/q=/), page.getByTestId('search-q').press('Enter')]);
    const names = await page.getByTestId('worklist-item').locator('.name').allTextContents();
    assert.deepEqual(names, ['玛依拉·胡安']);
  } finally {
    await browser.close();
  }
});

test('the session cookie is HttpOnly and SameSite=Strict, and logout ends it for the API too', async () => {
  const { browser, context, page } = await phone();
  try {
    await signIn(page);
    const [cookie] = (await context.cookies()).filter((c) => c.name === 'outreach_session');
    assert.ok(cookie, 'a session cookie');
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Strict');
    assert.equal(cookie.secure, false, 'not Secure over plain http');
    const headers = { cookie: `outreach_session=${cookie.value}` };
    // The API takes the cookie for reading…
    const me = await fetch(`${app.base}/api/v1/me`, { headers });
    assert.equal(me.status, 200);
    // …but not for a change without the page's anti-forgery token, as a forged form would.
    const forged = await fetch(`${app.base}/api/v1/auth/logout`, { method: 'POST', headers });
    assert.equal(forged.status, 403);
    const crossSite = await fetch(`${app.base}/logout`, {
      method: 'POST',
      headers: { ...headers, origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded' },
      body: `_csrf=${await page.locator('meta[name=csrf-token]').getAttribute('content')}`,
    });
    assert.equal(crossSite.status, 403);
    assert.equal((await fetch(`${app.base}/api/v1/me`, { headers })).status, 200, 'still signed in');

    await page.getByTestId('logout').click();
    await page.waitForURL(`${app.base}/`);
    assert.equal((await context.cookies()).filter((c) => c.name === 'outreach_session').length, 0);
    assert.equal((await fetch(`${app.base}/api/v1/me`, { headers })).status, 401, 'the token is revoked');
    await page.goto(`${app.base}/m/`);
    assert.equal(new URL(page.url()).pathname, '/', 'sent to sign in');
  } finally {
    await browser.close();
  }
});

test('an office user lands on /app/ with the campaigns', async () => {
  const { browser, page } = await phone();
  try {
    await signIn(page, 'office.li');
    assert.equal(new URL(page.url()).pathname, '/app/');
    assert.ok(await page.getByTestId(`campaign-${campaign}`).isVisible());
    await shot(page, 'app-home');
  } finally {
    await browser.close();
  }
});
