// The cadre's phone pages in a real browser: sign-in, the village's worklist, a resident's
// page, the scope of both, the session cookie and the anti-forgery checks.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startApp, phone, shot, signIn as signInAt, openCampaign, controlled, pending, residentNamed as named,
  VILLAGE, OTHER_VILLAGE,
} from './harness.mjs';

let app;
let campaign;

before(async () => {
  app = await startApp([
    ['张伟', VILLAGE, '13899001122'],
    ['玛依拉·胡安', VILLAGE, '13899001123'],
    ['阿依古丽', VILLAGE, ''],
    ['李娜', OTHER_VILLAGE, '13899001124'],
  ]);
  campaign = await openCampaign(app);
});

after(async () => {
  await app?.stop();
});

const signIn = (page, username, password) => signInAt(app, page, username, password);

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
    // The dashboard of the open campaign: its funnel over the county's four residents.
    assert.equal(await page.getByTestId('campaign-picker').inputValue(), String(campaign));
    const funnel = page.getByTestId('dashboard-funnel');
    assert.ok(await funnel.isVisible());
    assert.equal(await funnel.locator('[data-stage=target]').getAttribute('data-count'), '4');
    await shot(page, 'app-home');
  } finally {
    await browser.close();
  }
});

const residentNamed = (name) => named(app, name);

async function attemptsOf(resident) {
  const office = await app.token('office.li');
  const list = await app.api('GET', `/campaigns/${campaign}/residents/${resident}/attempts`, office);
  assert.equal(list.status, 200, JSON.stringify(list.body));
  return list.body.items;
}

test('an attempt made offline waits on the phone, survives a reload, and reaches the server once', async () => {
  const { browser, context, page } = await phone();
  try {
    await signIn(page);
    const zhang = await residentNamed('张伟');
    await page.goto(`${app.base}/m/residents/${zhang}`);
    await controlled(page);
    assert.equal((await attemptsOf(zhang)).length, 0);

    await context.setOffline(true);
    await page.getByTestId('attempt-channel').selectOption('phone_call');
    await page.getByTestId('attempt-outcome').selectOption('no_answer');
    await page.getByTestId('attempt-submit').click();
    await page.waitForFunction(() => !document.querySelector('[data-testid=sync-pending]').hidden);
    assert.equal(await pending(page), 1);
    assert.match(await page.getByTestId('sync-pending').innerText(), /没有网络/);
    await shot(page, 'attempt-queued-offline');

    // The phone reloads the page without a network: the page and the entry are still there.
    await page.reload();
    assert.ok(await page.getByTestId('attempt-submit').isVisible());
    await page.waitForFunction(() => !document.querySelector('[data-testid=sync-pending]').hidden);
    assert.equal(await pending(page), 1);
    const [queued] = await page.evaluate(
      () =>
        new Promise((resolve) => {
          const open = indexedDB.open('outreach-queue', 1);
          open.onsuccess = () => {
            const all = open.result.transaction('entries').objectStore('entries').getAll();
            all.onsuccess = () => resolve(all.result);
          };
        }),
    );
    assert.equal((await attemptsOf(zhang)).length, 0, 'nothing reached the server offline');

    await context.setOffline(false);
    await page.waitForFunction(() => document.querySelector('[data-testid=sync-pending]').hidden, null, {
      timeout: 20000,
    });
    const stored = await attemptsOf(zhang);
    assert.equal(stored.length, 1);
    assert.equal(stored[0].outcome, 'no_answer');
    assert.equal(stored[0].channel, 'phone_call');
    assert.equal(new Date(stored[0].attempted_at).toISOString(), queued.made_at, 'the time it was made');

    // The same entry uploaded again (an answer lost on the way) is the same attempt.
    const again = await page.evaluate(async (entry) => {
      const csrf = document.querySelector('meta[name=csrf-token]').content;
      const response = await fetch(entry.path, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
        body: JSON.stringify(entry.body),
      });
      return { status: response.status, body: await response.json() };
    }, queued);
    assert.ok(again.status < 300, JSON.stringify(again));
    assert.equal(again.body.id, stored[0].id);
    assert.equal((await attemptsOf(zhang)).length, 1);
    await page.reload();
    assert.match(await page.getByTestId('attempts').innerText(), /无人接听/);
    await shot(page, 'attempt-sent');
  } finally {
    await browser.close();
  }
});

test('a refusal is refused until the contact rule is met, then signed on the pad and registered', async () => {
  const { browser, page } = await phone();
  try {
    await signIn(page);
    const mayila = await residentNamed('玛依拉·胡安');
    const cadre = await app.token('cadre.ma');
    await page.goto(`${app.base}/m/residents/${mayila}/refusal`);
    assert.match(await page.getByTestId('refusal-needs').innerText(), /还需再联系 3 次/);
    assert.equal(await page.getByTestId('refusal-submit').count(), 0, 'no form before the rule is met');

    // Two calls yesterday, nobody answered: one more, and someone must be reached.
    const yesterday = new Date(Date.now() - 86400000).toISOString();
    for (const outcome of ['no_answer', 'no_answer']) {
      const logged = await app.api('POST', `/campaigns/${campaign}/residents/${mayila}/attempts`, cadre, {
        attempted_at: yesterday, channel: 'phone_call', contact: 'own_phone', outcome,
      });
      assert.equal(logged.status, 201, JSON.stringify(logged.body));
    }
    await page.reload();
    const needs = await page.getByTestId('refusal-needs').innerText();
    assert.match(needs, /还需再联系 1 次，在另外 1 个不同日期联系，至少一次联系到本人或亲属/);
    await shot(page, 'refusal-not-yet');

    // The third, today, logged on the resident's page: she is reached and refuses.
    await page.goto(`${app.base}/m/residents/${mayila}`);
    await page.getByTestId('attempt-channel').selectOption('home_visit');
    await page.getByTestId('attempt-contact').selectOption('in_person');
    await page.getByTestId('attempt-outcome').selectOption('reached_refused');
    await page.getByTestId('attempt-submit').click();
    await page.waitForFunction(() => document.querySelector('[data-testid=sync-pending]').hidden);
    await page.getByTestId('open-refusal').click();
    await page.waitForURL(/\/refusal$/);
    assert.equal(await page.getByTestId('refusal-needs').count(), 0);

    await page.getByTestId('refusal-reason').selectOption('unwilling');
    await page.getByTestId('refusal-relation').selectOption('self');
    // Submitting an empty pad is stopped on the phone.
    await page.getByTestId('refusal-submit').click();
    assert.match(await page.getByTestId('refusal-error').innerText(), /签字/);
    const pad = await page.getByTestId('signature-pad').boundingBox();
    const at = (fx, fy) => [pad.x + pad.width * fx, pad.y + pad.height * fy];
    await page.mouse.move(...at(0.1, 0.7));
    await page.mouse.down();
    for (const [fx, fy] of [[0.2, 0.2], [0.35, 0.8], [0.5, 0.25], [0.65, 0.75], [0.8, 0.3], [0.9, 0.6]]) {
      await page.mouse.move(...at(fx, fy), { steps: 8 });
    }
    await page.mouse.up();
    await shot(page, 'refusal-signed');
    await Promise.all([page.waitForURL(new RegExp(`/m/residents/${mayila}$`)), page.getByTestId('refusal-submit').click()]);

    const registrations = await app.api('GET', `/campaigns/${campaign}/residents/${mayila}/refusals`, cadre);
    assert.equal(registrations.status, 200);
    assert.equal(registrations.body.length, 1);
    assert.equal(registrations.body[0].status, 'pending');
    assert.equal(registrations.body[0].signer_name, '玛依拉·胡安');
    assert.equal(registrations.body[0].attempt_ids.length, 3);
    const png = await fetch(`${app.base}/api/v1/refusals/${registrations.body[0].id}/signature`, {
      headers: { authorization: `Bearer ${cadre}` },
    });
    assert.equal(png.status, 200);
    const bytes = Buffer.from(await png.arrayBuffer());
    assert.equal(bytes.subarray(1, 4).toString(), 'PNG');
    // The stored image has ink: the browser decodes it and counts the dark pixels.
    const dark = await page.evaluate(async (data) => {
      const image = new Image();
      image.src = `data:image/png;base64,${data}`;
      await image.decode();
      const canvas = document.createElement('canvas');
      canvas.width = image.naturalWidth;
      canvas.height = image.naturalHeight;
      const context = canvas.getContext('2d');
      context.fillStyle = '#fff';
      context.fillRect(0, 0, canvas.width, canvas.height);
      context.drawImage(image, 0, 0);
      const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
      let n = 0;
      for (let i = 0; i < pixels.length; i += 4) if (pixels[i] + pixels[i + 1] + pixels[i + 2] < 384) n++;
      return { n, total: pixels.length / 4 };
    }, bytes.toString('base64'));
    assert.ok(dark.n > 200, `ink: ${dark.n} dark pixels`);
    assert.ok(dark.n < dark.total / 4, `not a filled box: ${dark.n} of ${dark.total}`);
    await page.goto(`${app.base}/m/residents/${mayila}/refusal`);
    assert.match(await page.getByTestId('refusal-earlier').innerText(), /待审核/);
  } finally {
    await browser.close();
  }
});

test('a refusal signed without a network waits on the phone and is registered once online', async () => {
  const { browser, context, page } = await phone();
  try {
    await signIn(page);
    const zhang = await residentNamed('张伟');
    const cadre = await app.token('cadre.ma');
    // Enough documented contact: two days, the last call reaching him.
    const yesterday = new Date(Date.now() - 86400000).toISOString();
    for (const [at, outcome] of [[yesterday, 'no_answer'], [new Date().toISOString(), 'reached_refused']]) {
      const logged = await app.api('POST', `/campaigns/${campaign}/residents/${zhang}/attempts`, cadre, {
        attempted_at: at, channel: 'phone_call', contact: 'own_phone', outcome,
      });
      assert.equal(logged.status, 201, JSON.stringify(logged.body));
    }
    await page.goto(`${app.base}/m/residents/${zhang}`);
    await controlled(page);
    await page.goto(`${app.base}/m/residents/${zhang}/refusal`);
    await context.setOffline(true);
    await page.getByTestId('refusal-reason').selectOption('examined_elsewhere');
    await page.getByTestId('signature-pad').scrollIntoViewIfNeeded();
    const pad = await page.getByTestId('signature-pad').boundingBox();
    await page.mouse.move(pad.x + 20, pad.y + pad.height * 0.6);
    await page.mouse.down();
    for (const [fx, fy] of [[0.3, 0.2], [0.5, 0.8], [0.7, 0.3], [0.9, 0.7]]) {
      await page.mouse.move(pad.x + pad.width * fx, pad.y + pad.height * fy, { steps: 6 });
    }
    await page.mouse.up();
    await Promise.all([page.waitForURL(new RegExp(`/m/residents/${zhang}$`)), page.getByTestId('refusal-submit').click()]);
    await page.waitForFunction(() => !document.querySelector('[data-testid=sync-pending]').hidden);
    assert.equal(await pending(page), 1);
    await page.reload();
    await page.waitForFunction(() => !document.querySelector('[data-testid=sync-pending]').hidden);
    assert.equal(await pending(page), 1, 'still queued after a reload offline');
    await shot(page, 'refusal-queued-offline');
    const before = await app.api('GET', `/campaigns/${campaign}/residents/${zhang}/refusals`, cadre);
    assert.equal(before.body.length, 0);

    await context.setOffline(false);
    await page.waitForFunction(() => document.querySelector('[data-testid=sync-pending]').hidden, null, {
      timeout: 20000,
    });
    const after = await app.api('GET', `/campaigns/${campaign}/residents/${zhang}/refusals`, cadre);
    assert.equal(after.body.length, 1);
    assert.equal(after.body[0].reason, 'examined_elsewhere');
    assert.equal(after.body[0].status, 'pending');
  } finally {
    await browser.close();
  }
});

// Last: it closes the campaign.
test('an entry that can no longer apply is shown with the reason and can be dropped', async () => {
  const { browser, context, page } = await phone();
  try {
    await signIn(page);
    const aygul = await residentNamed('阿依古丽');
    await page.goto(`${app.base}/m/residents/${aygul}`);
    await controlled(page);
    await context.setOffline(true);
    await page.getByTestId('attempt-outcome').selectOption('reached_agreed');
    await page.getByTestId('attempt-submit').click();
    await page.waitForFunction(() => !document.querySelector('[data-testid=sync-pending]').hidden);

    const office = await app.token('office.li');
    const closed = await app.api('POST', `/campaigns/${campaign}/close`, office);
    assert.equal(closed.status, 200, JSON.stringify(closed.body));

    await context.setOffline(false);
    const failed = page.getByTestId('sync-failed');
    await failed.waitFor({ timeout: 20000 });
    assert.match(await failed.innerText(), /阿依古丽 的联系记录：.+/);
    assert.equal(await pending(page), 0);
    await shot(page, 'attempt-refused');
    await failed.getByRole('button', { name: '删除' }).click();
    await page.waitForFunction(() => document.querySelector('[data-testid=sync-pending]').hidden);
    assert.equal((await attemptsOf(aygul)).length, 0);
  } finally {
    await browser.close();
  }
});
